"""What this host gives localsb, and which driver each feature uses (``localsb doctor``)."""
from __future__ import annotations

import os


def _ns_available() -> dict:
    out = {}
    for ns in ("pid", "mnt", "net", "uts", "ipc", "cgroup", "user", "time"):
        out[ns] = os.path.exists(f"/proc/self/ns/{ns}")
    return out


def _userns() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces") as fh:
            return int(fh.read()) > 0
    except (OSError, ValueError):
        return False


def report(engine) -> dict:
    from localsb.linux import security
    d = {"stateDir": engine.state_dir, "root": os.geteuid() == 0}
    d["namespaces"] = _ns_available()
    d["userNamespaces"] = _userns()
    d["userNamespaceUsed"] = False
    try:
        caps = engine.cgroups.capabilities()
    except Exception as e:  # noqa: BLE001
        caps = {"error": str(e)}
    d["cgroups"] = caps
    try:
        pool = engine.pool
        d["storage"] = {"driver": pool.name, "pool": pool.root,
                        "cost": "snapshots in milliseconds (copy-on-write)" if pool.name == "btrfs"
                        else "snapshots copy every file (seconds per GB); no disk quota"}
    except Exception as e:  # noqa: BLE001
        d["storage"] = {"driver": None, "error": str(e)}
    d["seccomp"] = security.seccomp_available()
    d["seccompFilter"] = security.seccomp_info()
    d["isolation"] = ("root with a reduced capability bounding set, no_new_privs, seccomp deny list "
                      "and the devices cgroup (no user namespace: the base runtime shares the host's /usr)")
    try:
        from localsb.linux import netns
        nft = netns.nft_available()
    except Exception:  # noqa: BLE001
        nft = False
    d["network"] = ("default: loopback only; --network: veth + nftables redirect to a host-side relay "
                    "(host forwarding stays off)" if nft else "default: loopback only; --network needs "
                    "nftables (libnftables), which this host lacks")
    d["ports"] = "local HTTP gateway routing <name>-<id>.localhost:<port> to the sandbox's port"
    return d
