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


def _mount_options(path: str) -> str | None:
    """The mount options of the mount at ``path`` (from /proc/self/mountinfo), e.g. 'rw,nosuid,nodev'."""
    real = os.path.realpath(path)
    found = None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                parts = line.split()
                if parts[4] == real:
                    found = parts[5]      # the last one listed is the one on top
    except OSError:
        pass
    return found


def report(ctx) -> dict:
    from localsb.linux import security
    d = {"stateDir": ctx.state_dir, "root": os.geteuid() == 0}
    d["namespaces"] = _ns_available()
    d["userNamespaces"] = _userns()
    from localsb.linux import spawn, userns
    probe = userns.probe()
    disabled = userns.userns_disabled()
    d["userNamespaceUsed"] = probe["userns"] and not disabled
    d["userNamespace"] = {
        "used": probe["userns"] and not disabled,
        "idRanges": f"{userns.RANGE_SLOTS} ranges of {userns.RANGE_SIZE} host ids from {userns.RANGE_START}, "
                    f"reserved machine-wide by flock in {userns.LOCK_DIR}",
        "idmappedMounts": probe["idmap"],
        "problem": probe["reason"],
        "optOut": f"{userns.NO_USERNS_ENV}=1" + (" (SET: sandboxes run as host root)" if disabled else " (not set)"),
    }
    d["procMasked"] = ["/proc/" + p for p in spawn.PROC_MASKED]
    d["procReadOnly"] = ["/proc/" + p for p in spawn.PROC_READONLY]
    d["stateDirMode"] = oct(os.stat(ctx.state_dir).st_mode & 0o7777)
    try:
        caps = ctx.cgroups.capabilities()
    except Exception as e:  # noqa: BLE001
        caps = {"error": str(e)}
    d["cgroups"] = caps
    try:
        pool = ctx.pool
        d["storage"] = {"driver": pool.name, "pool": pool.root,
                        "cost": "snapshots in milliseconds (copy-on-write)" if pool.name == "btrfs"
                        else "snapshots copy every file (seconds per GB); no disk quota",
                        "mountOptions": _mount_options(pool.root)}
    except Exception as e:  # noqa: BLE001
        d["storage"] = {"driver": None, "error": str(e)}
    d["seccomp"] = security.seccomp_available()
    d["seccompFilter"] = security.seccomp_info()
    from .common import default_limits
    d["defaultLimits"] = default_limits()
    d["isolation"] = ("a user namespace per sandbox (root inside is an unprivileged host id range), "
                      "idmapped read-only lowers under an overlay root, the OCI masked /proc paths, a "
                      "reduced capability set, no_new_privs, seccomp and the devices cgroup"
                      if d["userNamespaceUsed"] else
                      "NO user namespace: root inside is host root (reduced capabilities, no_new_privs, "
                      "seccomp and the devices cgroup only)")
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
