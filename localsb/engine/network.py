# long: one mechanism end to end (link, nftables policy, relay, DNS forwarder) that security review reads whole
"""Sandbox networking: `--network` egress, `--port` URLs, and the engine's hooks for both (and SSH).

Default (as hosted): a sandbox's network namespace has loopback only.

`--network` gives it a link to the host and outbound TCP and DNS through the host, while the
host keeps IP forwarding off (``ip_forward=0``: a shared machine; never touched):

- a veth pair: ``lsb<8 hex>`` on the host, ``eth0`` in the sandbox, each end with one address of
  a /30 taken from 169.254.64.0/18 (link-local: it cannot clash with a routed network; a host-wide
  lock and a look at every address on the host keep two sandboxes, or another state directory,
  from taking the same /30). IPv6 is disabled on both ends. The sandbox's default route is the
  host end.
- an nftables table ``localsb_<8 hex>``. Its raw prerouting chain drops every packet from the veth
  whose source is not the sandbox's own address (no spoofed source: the DNS forwarder's answers
  and the relay's SYN-ACKs can only go back to the sandbox). Its nat prerouting chain *redirects*
  (a NAT to a local address, so no forwarding is involved) every DNS query (UDP 53, whatever
  server it names) to a small forwarder on the host end, and every TCP connection either to a
  transparent relay there, or, when its destination is refused, to a port bound but never
  listened on (the sandbox's connect() is refused at once). Its input chain lets in from the veth
  only those redirected flows: the host end is not a way into the host.
- refused destinations (``REFUSED_NETS`` and more): loopback, this-network, multicast and
  reserved, the sandboxes' own links (169.254.64.0/18), any address of the host itself (nft's
  ``fib daddr type local``); and, unless ``$LOCALSB_NETWORK_ALLOW`` names them, the private,
  shared and link-local ranges (``PRIVATE_NETS``: 10/8, 172.16/12, 192.168/16, 100.64/10; and
  169.254/16) and the networks of the host's own addresses (its LAN, whatever its range). The
  relay checks the original destination again (SO_ORIGINAL_DST) before it connects, against the
  host's addresses as they are then. IPv6 does not leave at all (disabled on both ends, so
  fc00::/7 and the rest are out of reach by construction).
- ``$LOCALSB_NETWORK_ALLOW`` (``EgressPolicy``): the one, explicit opt-in. A comma-separated list
  of IPv4 networks (``10.1.0.0/16``; a bare address is a /32), ``private`` (10/8, 172.16/12,
  192.168/16, 100.64/10) and ``host`` (the host end answers: services on the host listening on
  its 169.254.x.y address or on all addresses are reachable from the sandbox, as Docker's bridge
  gateway is). Loopback, this-network, multicast, the sandboxes' links and the host's other
  addresses stay refused whatever it says. It is read when a sandbox's link is made, by the
  process that makes it.
- the relay and the DNS forwarder (``Egress``) are threads of the process that owns the sandbox:
  its supervisor, or the CLI process of a one-shot ``run``. They end with it. The forwarder sends
  only DNS queries, only to the host's resolvers (``$LOCALSB_DNS_SERVERS`` or /etc/resolv.conf),
  and answers only the sandbox's address, with answers only from the resolver it asked.

Other sandboxes are unreachable: each veth is its own /30, forwarding is off, and 169.254.64.0/18
is refused whatever the policy. Everything added to the host (veth, nft table, the sandbox's
run/<id>.net.json) is removed by ``release`` from ``Engine._teardown``, which repair also reaches
after a SIGKILL.

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
# never reachable, whatever $LOCALSB_NETWORK_ALLOW says: this-network, loopback, the sandboxes'
# links (other sandboxes), multicast and reserved (224.0.0.0/3 ends with 255.255.255.255)
REFUSED_NETS = "0.0.0.0/8, 127.0.0.0/8, 169.254.64.0/18, 224.0.0.0/3"
# refused unless allowed: private (RFC 1918) and shared (RFC 6598, carrier NAT): what `private`
# allows; link-local (the cloud metadata address), allowed only by name; and the networks of the
# host's own addresses, which join them at attach time
PRIVATE_NETS = "10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16"
LINK_LOCAL_NET = "169.254.0.0/16"
ALLOW_ENV = "LOCALSB_NETWORK_ALLOW"
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


def _parse_net(text: str) -> tuple[int, int]:
    """'a.b.c.d/n' (or a bare address: /32) -> (network as int, prefix length); host bits cleared.
    ValueError or OSError when it is not one."""
    addr, slash, plen = text.partition("/")
    n = struct.unpack("!I", socket.inet_pton(socket.AF_INET, addr))[0]   # dotted quads only
    if slash and not (plen.isdigit() and int(plen) <= 32):
        raise ValueError(f"bad prefix length in {text!r}")
    p = int(plen) if slash else 32
    return n & ((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF), p


def _nets(text: str) -> list:
    return [_parse_net(x.strip()) for x in text.split(",")]


def _in_nets(n: int, nets) -> bool:
    return any(_overlaps(n, 32, net, plen) for net, plen in nets)


def _collapse(nets) -> list:
    """Drop the networks inside another of the list (nft refuses overlapping set elements)."""
    kept = []
    for net, plen in sorted(set(nets), key=lambda x: (x[1], x[0])):
        if not any(_overlaps(net, plen, k, kp) and kp <= plen for k, kp in kept):
            kept.append((net, plen))
    return sorted(kept)


def _cidrs(nets) -> str:
    return ", ".join(f"{_ip(n)}/{p}" for n, p in nets)


_NEVER = _nets(REFUSED_NETS)
_PRIVATE = _nets(PRIVATE_NETS)
_CLOSED = _PRIVATE + _nets(LINK_LOCAL_NET)   # refused unless allowed


class EgressPolicy:
    """What a --network sandbox may reach beyond the public internet: ``$LOCALSB_NETWORK_ALLOW``,
    a comma-separated list of IPv4 networks (a bare address is a /32), ``private`` (10/8,
    172.16/12, 192.168/16, 100.64/10; not link-local) and ``host`` (the host end of the link
    answers, as Docker's bridge gateway does). Empty: the public internet only."""

    def __init__(self, nets=(), host: bool = False):
        self.nets = _collapse(nets)
        self.host = host

    @classmethod
    def from_env(cls, env=None) -> "EgressPolicy":
        text = (os.environ if env is None else env).get(ALLOW_ENV, "")
        nets, host = [], False
        for item in text.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item == "host":
                host = True
            elif item == "private":
                nets += _PRIVATE
            else:
                try:
                    nets.append(_parse_net(item))
                except (OSError, ValueError):
                    raise E.ValidationError(f"${ALLOW_ENV}: {item!r} is not an IPv4 network (such as "
                                            f"10.1.0.0/16), 'private' or 'host'") from None
        return cls(nets, host)

    def allows(self, n: int) -> bool:
        return _in_nets(n, self.nets)

    def describe(self) -> list:
        return (["host"] if self.host else []) + [f"{_ip(n)}/{p}" for n, p in self.nets]


def _host_networks(nets) -> list:
    """The networks of the host's own addresses (from an RTM_GETADDR dump): its LAN, whatever the
    range; loopback and the sandboxes' links are refused anyway."""
    return [(n, p) for n, p in nets if p > 0 and not _in_nets(n, _NEVER)]


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
                host_nets = _host_networks(taken)
                nl.veth_add(ifname, "eth0", netns_fd)
                # before the link is up: no fe80:: address, no IPv6 at all on our side
                N.sysctl_write(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")
                index = nl.link_index(ifname)
                nl.addr_add(index, host_ip, 30)
            nl.link_up(index)
        N.run_in_netns(netns_fd, _inside, sb_ip, host_ip)
        policy = EgressPolicy.from_env()
        egress = Egress(host_ip, sb_ip, policy)
        _local_egress[sandbox_id] = egress
        N.nft(_ruleset(table, ifname, host_ip, sb_ip, egress, policy, host_nets))
        _write_resolv_conf(root, host_ip)
        state = {"ifname": ifname, "table": table, "hostIp": host_ip, "sandboxIp": sb_ip,
                 "tcpPort": egress.tcp_port, "dnsPort": egress.dns_port, "pid": os.getpid(),
                 "allow": policy.describe()}
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


def _ruleset(table: str, ifname: str, host_ip: str, sb_ip: str, egress: "Egress",
             policy: EgressPolicy, host_nets=()) -> str:
    # guard (raw, before conntrack): nothing from the veth with a source other than the sandbox's
    # address, so no answer of ours can be reflected to a third party.
    # pre: DNS (to whatever server the sandbox names) goes to the forwarder, which asks only the
    # host's resolvers; TCP to refused destinations (the host's own addresses, loopback, the
    # sandboxes' links, multicast; private ranges and the host's networks unless allowed) goes to
    # a port bound but never listened on, so the sandbox's connect() is refused at once rather
    # than hanging; all other TCP goes to the transparent relay, which checks again.
    # in: only the redirected flows pass; the rest of the host is closed to the sandbox (with
    # `host` allowed: also what is sent to the host end itself, as before issue 14).
    lines = [f'iifname "{ifname}" udp dport 53 redirect to :{egress.dns_port}',
             f'iifname "{ifname}" ip daddr {host_ip} tcp dport 53 redirect to :{egress.tcp_port}']
    if policy.host:
        lines.append(f'iifname "{ifname}" ip daddr {host_ip} return')
    lines += [f'iifname "{ifname}" fib daddr type local meta l4proto tcp redirect to :{egress.refuse_port}',
              f'iifname "{ifname}" ip daddr {{ {REFUSED_NETS} }} meta l4proto tcp redirect to :{egress.refuse_port}']
    if policy.nets:
        lines.append(f'iifname "{ifname}" ip daddr {{ {_cidrs(policy.nets)} }} meta l4proto tcp '
                     f'redirect to :{egress.tcp_port}')
    closed = _collapse(_CLOSED + list(host_nets))
    lines += [f'iifname "{ifname}" ip daddr {{ {_cidrs(closed)} }} meta l4proto tcp redirect to :{egress.refuse_port}',
              f'iifname "{ifname}" meta l4proto tcp redirect to :{egress.tcp_port}']
    inputs = [f'iifname "{ifname}" ip daddr {host_ip} tcp dport {{ {egress.tcp_port}, {egress.refuse_port} }} '
              f'ct status dnat accept',
              f'iifname "{ifname}" ip daddr {host_ip} udp dport {egress.dns_port} ct status dnat accept']
    if policy.host:
        inputs.append(f'iifname "{ifname}" ip daddr {host_ip} accept')
    inputs.append(f'iifname "{ifname}" drop')
    pre = "\n".join("        " + x for x in lines)
    inp = "\n".join("        " + x for x in inputs)
    return f"""table ip {table} {{
    chain guard {{
        type filter hook prerouting priority raw; policy accept;
        iifname "{ifname}" ip saddr != {sb_ip} drop
    }}
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
{pre}
    }}
    chain in {{
        type filter hook input priority filter; policy accept;
{inp}
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
        from .sshkeys import keys_registered, ssh_gateway
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
        from .sshkeys import ssh_gateway
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


def _refused_destination(ip: str, policy: EgressPolicy | None = None, host_nets=None) -> bool:
    """The relay's own check of a sandbox's destination (the nft rules decide first; this holds
    if they ever let one through). Always refused: this-network, loopback, the sandboxes' links,
    multicast and reserved, and any address of the host itself (bind(2) to it succeeds). Refused
    unless ``policy`` allows it: private, shared and link-local ranges, and the networks of the
    host's own addresses (``host_nets``; None: dump them now). IPv6: only global unicast passes
    (no IPv6 leaves a sandbox today; fc00::/7, fe80::/10 and the like are refused here too)."""
    if ":" in ip:
        import ipaddress
        a = ipaddress.IPv6Address(ip)
        if a.ipv4_mapped is not None:
            return _refused_destination(str(a.ipv4_mapped), policy, host_nets)
        return not a.is_global
    n = struct.unpack("!I", socket.inet_pton(socket.AF_INET, ip))[0]
    if _in_nets(n, _NEVER):
        return True
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        return True
    except OSError:
        pass
    finally:
        s.close()
    if policy is not None and policy.allows(n):
        return False
    if _in_nets(n, _CLOSED):
        return True
    if host_nets is None:
        host_nets = _current_host_networks()
    return _in_nets(n, host_nets)


def _current_host_networks() -> list:
    """_host_networks of the host's addresses as they are now (an RTM_GETADDR dump, ~0.1 ms)."""
    from localsb.linux import netns as N
    with N.RtNetlink() as nl:
        return _host_networks(nl.ipv4_networks())


class Egress:
    """A sandbox's way out: a transparent TCP relay and a DNS forwarder on the host end of its link.

    The nft redirect sends the sandbox's TCP connections to ``tcp_port`` and its DNS datagrams to
    ``dns_port``; both listen on the host end's address only, on ports the kernel picks.
    """

    CONNECT_TIMEOUT = 20.0

    def __init__(self, host_ip: str, sandbox_ip: str | None = None, policy: EgressPolicy | None = None):
        self.host_ip = host_ip
        self.sandbox_ip = sandbox_ip
        self.policy = policy or EgressPolicy()
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
            elif dst[0] == self.host_ip or _refused_destination(dst[0], self.policy):
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
        pending = {}   # our query id -> (client address, client's id, time, server asked)
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
                    if _is_query(data) and (self.sandbox_ip is None or client[0] == self.sandbox_ip):
                        key = (client, data[:2])
                        n = tries.get(key, 0)
                        tries[key] = n + 1
                        qid = os.urandom(2)
                        while qid in pending:
                            qid = os.urandom(2)
                        server = self.nameservers[n % len(self.nameservers)]
                        pending[qid] = (client, data[:2], now, server)
                        try:
                            self.upstream.sendto(qid + data[2:], (server, 53))
                        except OSError:
                            pending.pop(qid, None)
                if self.upstream in ready:
                    try:
                        data, source = self.upstream.recvfrom(65535)
                    except OSError:
                        data, source = b"", None
                    entry = pending.get(data[:2]) if len(data) >= 12 else None
                    # an answer only from the server asked (anyone may send to our socket)
                    if entry is not None and source == (entry[3], 53):
                        del pending[data[:2]]
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


def _is_query(data: bytes) -> bool:
    """A DNS query (RFC 1035 4.1.1): a whole header, QR 0, opcode QUERY, one question. Nothing else
    is forwarded: the forwarder is a way to the host's resolvers for names, not for datagrams."""
    return len(data) >= 17 and data[2] & 0xF8 == 0 and data[4:6] == b"\0\1"


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
           "Egress", "EgressPolicy", "link_names", "url_label", "read_state", "errno"]
