"""Sandbox networking: `--network` egress, `--port` URLs, and the engine's hooks for both (and SSH).

Default (as hosted): a sandbox's network namespace has loopback only.

`--network` gives it a link to the host and outbound TCP and DNS through the host, while the
host keeps IP forwarding off (``ip_forward=0``: a shared machine; never touched):

- a veth pair: ``lsb<8 hex>`` on the host, ``eth0`` in the sandbox, each end with one address of
  a /30 taken from 169.254.64.0/18 (link-local: it cannot clash with a routed network; a host-wide
  lock and a look at every address on the host keep two sandboxes, or another state directory,
  from taking the same /30). IPv6 is disabled on both ends. The sandbox's default route is the
  host end.
- an nftables table ``localsb_<8 hex>`` whose prerouting chain *redirects* (a NAT to a local
  address, so no forwarding is involved) every TCP connection coming in on that veth to a
  transparent relay on the host end, and every DNS query to a small forwarder there; its input
  chain drops anything else from the veth that is not for the host end itself. The relay reads
  the original destination (SO_ORIGINAL_DST) and connects there from the host, refusing loopback,
  link-local (other sandboxes, the metadata address) and the host's own addresses.
- the relay and the DNS forwarder (``Egress``) are threads of the process that owns the sandbox:
  its supervisor, or the CLI process of a one-shot ``run``. They end with it.

Other sandboxes are unreachable: each veth is its own /30, forwarding is off, and the relay refuses
169.254.0.0/16. Everything added to the host (veth, nft table, the sandbox's run/<id>.net.json)
is removed by ``release`` from ``Engine._teardown``, which repair also reaches after a SIGKILL.

`--port N` URLs are served by the HTTP gateway (gateway.py); SSH by the SSH gateway (sshgw.py).
Both are per-state-directory daemons started here on demand and stopped with the last sandbox
that needs them.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import threading
import time

from localsb.api import errors as E

LINK_BASE = (169 << 24) | (254 << 16) | (64 << 8)   # 169.254.64.0
LINK_SLOTS = 4096                                    # /30s in 169.254.64.0/18
HOST_LOCK = "/run/lock/localsb-net.lock"             # host-wide: address allocation is host-wide
LIVE = ("creating", "idle", "running", "paused", "suspended")
REFUSED_NETS = "0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3"  # this-net, loopback, link-local, multicast+
_local_egress: dict = {}                             # sandbox id -> Egress in this process


def link_names(engine, sandbox_id: str) -> tuple[str, str]:
    """(host veth name, nft table name): derived from the state dir and the id, so that teardown
    finds them even without the state file."""
    h = hashlib.sha256((engine.tag + sandbox_id).encode()).hexdigest()[:8]
    return "lsb" + h, "localsb_" + h


def _state_path(engine, sandbox_id: str) -> str:
    return os.path.join(engine.state_dir, "run", sandbox_id + ".net.json")


def read_state(engine, sandbox_id: str) -> dict | None:
    try:
        with open(_state_path(engine, sandbox_id)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _ip(n: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", n))


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    plen = min(alen, blen)
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
    return (a & mask) == (b & mask)


class _HostLock:
    """flock(2) on a host-wide file: serialises /30 allocation between every localsb on the host."""

    def __enter__(self):
        path = HOST_LOCK if os.path.isdir(os.path.dirname(HOST_LOCK)) else "/tmp/localsb-net.lock"
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# attach / detach ---------------------------------------------------------------------------------
def attach(engine, sandbox_id: str, netns_fd: int, root: str) -> dict:
    """Give the network namespace ``netns_fd`` its link, routes, egress relay and resolver.

    Undone by ``detach``; on failure everything made so far is removed and HostError raised."""
    from localsb.linux import netns as N
    ifname, table = link_names(engine, sandbox_id)
    try:
        with N.RtNetlink() as nl:
            with _HostLock():
                taken = nl.ipv4_networks()
                import random
                start = random.randrange(LINK_SLOTS)
                for i in range(LINK_SLOTS):
                    base = LINK_BASE + 4 * ((start + i) % LINK_SLOTS)
                    if not any(_overlaps(base, 30, net, plen) for net, plen in taken):
                        break
                else:
                    raise E.HostError("No free link-local /30 left in 169.254.64.0/18 for --network")
                host_ip, sb_ip = _ip(base + 1), _ip(base + 2)
                nl.veth_add(ifname, "eth0", netns_fd)
                # before the link is up: no fe80:: address, no IPv6 at all on our side
                N.sysctl_write(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")
                index = nl.link_index(ifname)
                nl.addr_add(index, host_ip, 30)
            nl.link_up(index)
        N.run_in_netns(netns_fd, _inside, sb_ip, host_ip)
        egress = Egress(host_ip)
        _local_egress[sandbox_id] = egress
        N.nft(_ruleset(table, ifname, host_ip, egress))
        _write_resolv_conf(root, host_ip)
        state = {"ifname": ifname, "table": table, "hostIp": host_ip, "sandboxIp": sb_ip,
                 "tcpPort": egress.tcp_port, "dnsPort": egress.dns_port, "pid": os.getpid()}
        tmp = _state_path(engine, sandbox_id) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh)
        os.rename(tmp, _state_path(engine, sandbox_id))
        return state
    except BaseException as exc:
        detach(engine, sandbox_id)
        if isinstance(exc, E.LocalsbError):
            raise
        raise E.HostError(f"Cannot give sandbox {sandbox_id} a network: {exc}") from exc


def _inside(sb_ip: str, host_ip: str) -> None:
    """Runs on a thread inside the sandbox's netns: address, link up, default route, no IPv6."""
    from localsb.linux import netns as N
    N.sysctl_write("net/ipv6/conf/eth0/disable_ipv6", "1")
    with N.RtNetlink() as nl:
        index = nl.link_index("eth0")
        nl.addr_add(index, sb_ip, 30)
        nl.link_up(index)
        nl.route_add_default(host_ip, index)


def _ruleset(table: str, ifname: str, host_ip: str, egress: "Egress") -> str:
    # prerouting: DNS (to whatever server the sandbox names) goes to the forwarder; TCP to the host
    # end itself stays direct (services the user binds there); TCP to refused destinations (the
    # host's own addresses, loopback, link-local: other sandboxes) goes to a port bound but never
    # listened on, so the sandbox's connect() is refused at once rather than hanging; all other
    # TCP goes to the transparent relay. input: only redirected flows and traffic for the host end
    # pass; the rest of the host is closed to the sandbox.
    return f"""table ip {table} {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{ifname}" udp dport 53 redirect to :{egress.dns_port}
        iifname "{ifname}" ip daddr {host_ip} tcp dport 53 redirect to :{egress.tcp_port}
        iifname "{ifname}" ip daddr {host_ip} return
        iifname "{ifname}" ip daddr {{ {REFUSED_NETS} }} meta l4proto tcp redirect to :{egress.refuse_port}
        iifname "{ifname}" fib daddr type local meta l4proto tcp redirect to :{egress.refuse_port}
        iifname "{ifname}" meta l4proto tcp redirect to :{egress.tcp_port}
    }}
    chain in {{
        type filter hook input priority filter; policy accept;
        iifname "{ifname}" ct status dnat accept
        iifname "{ifname}" ip daddr {host_ip} accept
        iifname "{ifname}" drop
    }}
}}
"""


def _write_resolv_conf(root: str, host_ip: str) -> None:
    """The sandbox's /etc/resolv.conf names the host end (its queries are redirected to the
    forwarder). Written through RootedFS: the root may hold symlinks planted by a snapshot."""
    from localsb.linux.rootfs_access import RootedFS
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    with RootedFS(root) as fs:
        try:
            fd = fs.open_file("/etc/resolv.conf", flags, 0o644)
        except E.LocalsbError:
            # a dangling symlink (to a systemd-resolved stub, say): replace it by a file of our own
            fs.unlink("/etc/resolv.conf")
            fd = fs.open_file("/etc/resolv.conf", flags, 0o644)
        try:
            os.write(fd, f"# localsb --network: DNS through the host\nnameserver {host_ip}\n"
                         f"options timeout:2 attempts:3\n".encode())
        finally:
            os.close(fd)


def detach(engine, sandbox_id: str) -> None:
    """Remove what ``attach`` added to the host: relay threads of this process, nft table, veth,
    state file. Idempotent, from any process."""
    from localsb.linux import netns as N
    egress = _local_egress.pop(sandbox_id, None)
    if egress is not None:
        egress.stop()
    ifname, table = link_names(engine, sandbox_id)
    try:
        N.nft(f"delete table ip {table}")
    except OSError as e:
        if "No such file" not in str(e):
            _log(f"{sandbox_id}: cannot delete nft table {table}: {e}")
    try:
        with N.RtNetlink() as nl:
            nl.link_del(ifname)
    except OSError as e:
        _log(f"{sandbox_id}: cannot delete link {ifname}: {e}")
    try:
        os.unlink(_state_path(engine, sandbox_id))
    except FileNotFoundError:
        pass


def link_egress_bytes(ifname: str) -> int:
    """Bytes the sandbox has sent on its link: the host end's received bytes (frames, headers
    included: everything the sandbox sends leaves through this link). 0 without a link."""
    try:
        with open(f"/sys/class/net/{ifname}/statistics/rx_bytes") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 0


def bank_egress(engine, sandbox_id: str) -> None:
    """Before the sandbox's processes are killed (teardown, restore): add what it sent on its link
    to its row. The link goes with the last process of its network namespace, counters and all."""
    sent = link_egress_bytes(link_names(engine, sandbox_id)[0])
    if sent:
        engine.store.run("UPDATE sandboxes SET network_egress_bytes=network_egress_bytes+? WHERE id=?",
                         sent, sandbox_id)


def egress_bytes(engine, row) -> int:
    """networkEgressBytes of a sandbox: its removed links' bytes plus its live link's."""
    total = row["network_egress_bytes"] or 0
    if row["status"] not in ("terminated", "failed", "deleted"):
        total += link_egress_bytes(link_names(engine, row["id"])[0])
    return total


def attach_pid(engine, sandbox_id: str, init_pid: int, root: str) -> dict:
    """attach() to the network namespace of a running init (the supervisor, after PID 1 starts)."""
    from localsb.linux import netns as N
    fd = N.netns_fd_of(init_pid)
    try:
        return attach(engine, sandbox_id, fd, root)
    finally:
        os.close(fd)


def reattach(engine, sandbox_id: str, init_pid: int, root: str) -> dict:
    """After a checkpoint restore started a new init (a new netns): drop the old link, attach anew."""
    detach(engine, sandbox_id)
    return attach_pid(engine, sandbox_id, init_pid, root)


def prepare_run(engine, sandbox_id: str, root: str, userns_fd: int | None = None) -> int:
    """For a one-shot run: a new network namespace (owned by the sandbox's user namespace when it
    has one), attached before the command starts (so its first connect already has a route).
    Returns the netns descriptor for spawn.RootSpec."""
    from localsb.linux import netns as N
    if userns_fd is not None:
        from localsb.linux.userns import new_netns_in
        fd = new_netns_in(userns_fd)
    else:
        fd = N.new_netns()
    try:
        attach(engine, sandbox_id, fd, root)
    except BaseException:
        os.close(fd)
        raise
    return fd


# engine hooks --------------------------------------------------------------------------------------
def on_create(engine, sandbox_id: str, spec) -> None:
    """Before the sandbox starts: the HTTP gateway for --port; the SSH gateway when keys exist."""
    if spec.port:
        from .gateway import http_gateway
        http_gateway(engine.state_dir).ensure()
    if spec.mode != "oneshot":
        from .sshgw import keys_registered, ssh_gateway
        if keys_registered(engine.state_dir):
            ssh_gateway(engine.state_dir).ensure()


def release(engine, row) -> None:
    """From Engine._teardown, once the sandbox's processes are gone: its network, and the gateways
    if it was the last sandbox that needed them."""
    from .store import loads
    spec = loads(row["spec"], {})
    sandbox_id = row["id"]
    if spec.get("network") or spec.get("port") or os.path.exists(_state_path(engine, sandbox_id)):
        detach(engine, sandbox_id)
    run = os.path.join(engine.state_dir, "run")
    if spec.get("port") and os.path.exists(os.path.join(run, "gateway.json")):
        from .gateway import http_gateway
        http_gateway(engine.state_dir).stop_if_unneeded(exclude=sandbox_id)
    if os.path.exists(os.path.join(run, "sshgw.json")):
        from .sshgw import ssh_gateway
        ssh_gateway(engine.state_dir).stop_if_unneeded(exclude=sandbox_id)


def url_label(row) -> str:
    """The first DNS label of a sandbox's URL: ``<name>-<identifier>`` as hosted (name made
    DNS-safe), or the identifier alone."""
    ident = row["id"].split("_", 1)[-1].lower()
    name = "".join(c if c.isalnum() and c.isascii() else "-" for c in (row["name"] or "").lower()).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    name = name[:62 - len(ident)].rstrip("-")
    return f"{name}-{ident}" if name else ident


class NetworkMixin:
    """Engine methods of this area: URLs, `cloud ssh`, SSH keys."""

    def sandbox_url(self, row) -> str | None:
        """``http://<name>-<identifier>.localhost:<gateway port>`` for a sandbox with --port."""
        from .store import loads
        if isinstance(row, str):
            row = self.store.one("SELECT * FROM sandboxes WHERE id=?", row)
        if row is None or not loads(row["spec"], {}).get("port"):
            return None
        from .gateway import http_gateway
        gw = http_gateway(self.state_dir)
        port = gw.port()
        if port is None and row["status"] in LIVE:
            port = gw.ensure()  # it died (SIGKILL?): a live sandbox with a port needs it
        if port is None:
            port = gw.configured_port() or gw.default_port
        return f"http://{url_label(row)}.localhost:{port}"

    def ssh_command(self, sandbox_id: str, command: str | None = None, *, org_id=None) -> list[str]:
        """The argv of ``cloud ssh``: a direct attach (a PTY shell, or ``command`` with its exit
        code) through localsb.engine.sshgw, which needs no key and no ssh client. Plain ssh, scp
        and sftp go through the SSH gateway instead (``ssh -p <port> <id>@localhost``)."""
        import sys
        row = self._live_row(sandbox_id, org_id)
        argv = [sys.executable, "-m", "localsb.engine.sshgw", "attach", self.state_dir, row["id"]]
        if command is not None:
            argv += ["--", command]
        return argv

    def ssh_key_add(self, text: str) -> dict:
        from .sshgw import key_add, keys_registered, ssh_gateway
        first = not keys_registered(self.state_dir)
        info = key_add(self.state_dir, text)
        if first and self.store.one("SELECT 1 FROM sandboxes WHERE status IN ('idle','running','paused',"
                                    "'suspended') AND mode != 'oneshot' LIMIT 1"):
            ssh_gateway(self.state_dir).ensure()
        return info

    def ssh_key_list(self) -> dict:
        from .sshgw import key_list, ssh_gateway
        gw = ssh_gateway(self.state_dir)
        return {"keys": key_list(self.state_dir), "port": gw.port() or gw.configured_port() or gw.default_port}

    def ssh_key_remove(self, fingerprint: str) -> dict:
        from .sshgw import key_remove, keys_registered, ssh_gateway
        info = key_remove(self.state_dir, fingerprint)
        if not keys_registered(self.state_dir):
            ssh_gateway(self.state_dir).stop_if_unneeded()
        return info


# egress: transparent TCP relay and DNS forwarder ------------------------------------------------
def _host_nameservers() -> list:
    """Where the DNS forwarder sends queries: $LOCALSB_DNS_SERVERS (comma-separated; tests point it
    at a server of their own), else the host's /etc/resolv.conf."""
    if os.environ.get("LOCALSB_DNS_SERVERS"):
        return [x.strip() for x in os.environ["LOCALSB_DNS_SERVERS"].split(",") if x.strip()]
    servers = []
    try:
        with open("/etc/resolv.conf") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and "." in parts[1]:
                    servers.append(parts[1])
    except OSError:
        pass
    return servers or ["127.0.0.53"]


def _refused_destination(ip: str) -> bool:
    """Loopback, this-network, link-local (other sandboxes' links, the cloud metadata address),
    multicast and reserved; and any address of the host itself (bind(2) to it succeeds)."""
    n = struct.unpack("!I", socket.inet_aton(ip))[0]
    first = n >> 24
    if first in (0, 127) or first >= 224 or (n >> 16) == (169 << 8 | 254):
        return True
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Egress:
    """A sandbox's way out: a transparent TCP relay and a DNS forwarder on the host end of its link.

    The nft redirect sends the sandbox's TCP connections to ``tcp_port`` and its DNS datagrams to
    ``dns_port``; both listen on the host end's address only, on ports the kernel picks.
    """

    CONNECT_TIMEOUT = 20.0

    def __init__(self, host_ip: str):
        self.host_ip = host_ip
        self.nameservers = _host_nameservers()
        self.stopped = False
        self.conns: set = set()
        self.lock = threading.Lock()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.tcp.bind((host_ip, 0))
        self.tcp.listen(128)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.udp.bind((host_ip, 0))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # bound, never listening: the kernel answers SYNs to it with RST (see _ruleset); binding
        # also keeps any other socket off that port on this address
        self.refuse = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.refuse.bind((host_ip, 0))
        self.refuse_port = self.refuse.getsockname()[1]
        self.tcp_port = self.tcp.getsockname()[1]
        self.dns_port = self.udp.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="localsb-egress-tcp", daemon=True).start()
        threading.Thread(target=self._dns_loop, name="localsb-egress-dns", daemon=True).start()

    def stop(self) -> None:
        self.stopped = True
        for s in (self.tcp, self.udp):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes accept()/recvfrom() in the loops
            except OSError:
                pass
        _close_sock(self.refuse)
        with self.lock:
            conns, self.conns = list(self.conns), set()
        for c in conns:
            _close_sock(c)

    # TCP -------------------------------------------------------------------------------------------
    def _accept_loop(self):
        try:
            while not self.stopped:
                try:
                    conn, _ = self.tcp.accept()
                except OSError:
                    if self.stopped:
                        break
                    time.sleep(0.01)
                    continue
                threading.Thread(target=self._serve, args=(conn,), name="localsb-egress-conn",
                                 daemon=True).start()
        finally:
            _close_sock(self.tcp)

    def _serve(self, conn):
        try:
            dst = _original_dst(conn)
            if dst[0] == self.host_ip and dst[1] == 53:
                dst = (self.nameservers[0], 53)   # DNS over TCP, to the host's resolver
            elif dst[0] == self.host_ip or _refused_destination(dst[0]):
                _reset(conn)
                return
            up = socket.create_connection(dst, timeout=self.CONNECT_TIMEOUT)
            up.settimeout(None)
            for s in (conn, up):  # relay each write as it comes: no Nagle delay added by the hop
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            _reset(conn)
            return
        with self.lock:
            if self.stopped:
                _close_sock(conn)
                _close_sock(up)
                return
            self.conns.update((conn, up))
        t = threading.Thread(target=_pump, args=(up, conn), name="localsb-egress-down", daemon=True)
        t.start()
        _pump(conn, up)
        t.join()
        with self.lock:
            self.conns.discard(conn)
            self.conns.discard(up)
        _close_sock(conn)
        _close_sock(up)

    # DNS -------------------------------------------------------------------------------------------
    def _dns_loop(self):
        pending = {}   # our query id -> (client address, client's id, time)
        tries = {}     # (client address, client's id) -> how many times asked: rotates servers
        poller = select.poll()     # not select(): the relay's descriptors can go past 1024
        by_fd = {self.udp.fileno(): self.udp, self.upstream.fileno(): self.upstream}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        try:
            while not self.stopped:
                try:
                    ready = [by_fd[fd] for fd, _ in poller.poll(1000) if fd in by_fd]
                except (OSError, ValueError):
                    break
                now = time.monotonic()
                if self.udp in ready:
                    try:
                        data, client = self.udp.recvfrom(65535)
                    except OSError:
                        break
                    if self.stopped:
                        break
                    if len(data) >= 12:
                        key = (client, data[:2])
                        n = tries.get(key, 0)
                        tries[key] = n + 1
                        qid = os.urandom(2)
                        while qid in pending:
                            qid = os.urandom(2)
                        pending[qid] = (client, data[:2], now)
                        server = self.nameservers[n % len(self.nameservers)]
                        try:
                            self.upstream.sendto(qid + data[2:], (server, 53))
                        except OSError:
                            pending.pop(qid, None)
                if self.upstream in ready:
                    try:
                        data, _ = self.upstream.recvfrom(65535)
                    except OSError:
                        data = b""
                    entry = pending.pop(data[:2], None) if len(data) >= 12 else None
                    if entry is not None:
                        tries.pop((entry[0], entry[1]), None)
                        try:
                            self.udp.sendto(entry[1] + data[2:], entry[0])
                        except OSError:
                            pass
                for qid in [q for q, e in pending.items() if now - e[2] > 10.0]:
                    entry = pending.pop(qid)
                    tries.pop((entry[0], entry[1]), None)
        finally:
            _close_sock(self.udp)
            _close_sock(self.upstream)


def _original_dst(conn):
    from localsb.linux.netns import original_dst
    return original_dst(conn)


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _reset(conn):
    """Close with RST (SO_LINGER 0): the sandbox's connect/read fails at once, not after a timeout.
    shutdown first: a forked child of this process may hold a copy, and close alone would not end it."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    _close_sock(conn)


def _close_sock(s):
    try:
        s.close()
    except OSError:
        pass


def _log(msg: str) -> None:
    import sys
    print(f"localsb: {msg}", file=sys.stderr)


__all__ = ["attach", "attach_pid", "reattach", "prepare_run", "detach", "release", "on_create",
           "NetworkMixin", "Egress", "link_names", "url_label", "read_state", "errno"]
