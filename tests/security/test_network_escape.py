"""Issue 14, item 5: `--network` is a way out to the public internet, never into the host nor onto
the private network behind it.

Traffic goes only to loopback, to the host end of the links of this test's own sandboxes, and to
network namespaces this test makes: a "fake private host" is a namespace behind a veth whose /30
(10.253.x.y, 192.168.253.x, or 198.18.x.y for a LAN in a public-looking range) is routed only to
that veth. Nothing is ever sent to any other address. Every namespace and veth made here is
removed in a finally.
"""
from __future__ import annotations

import io
import json
import os
import random
import socket
import struct
import threading
import time

import pytest

from localsb.api.specs import CreateSpec
from localsb.engine import network
from localsb.linux import netns as N

pytestmark = pytest.mark.timeout(180)

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)   # linux/in.h

PROBE = r"""
import errno, socket, struct, time

def host_end():
    # the sandbox's default gateway (/proc/net/route, little-endian hex) and its nameserver agree
    for line in open('/proc/net/route').read().splitlines()[1:]:
        f = line.split()
        if f[1] == '00000000':
            gw = socket.inet_ntoa(struct.pack('<I', int(f[2], 16)))
    ns = open('/etc/resolv.conf').read().split('nameserver ')[1].split()[0]
    assert gw == ns, (gw, ns)
    return gw

def tcp(host, port, timeout=5):
    t = time.monotonic()
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.sendall(b'ping\n')
        data = s.recv(100)
        r = 'ok ' + data.decode().strip() if data else 'closed'
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
    return r, time.monotonic() - t

def udp(host, port, payload=b'probe', timeout=1.5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(payload, (host, port))
        data, peer = s.recvfrom(512)
        return 'answer', data, peer
    except socket.timeout:
        return 'timeout', b'', None
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e)), b'', None
    finally:
        s.close()

def query(name, qid=b'\x42\x42'):
    q = qid + b'\x01\x00' + struct.pack('!HHHH', 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\x00' + struct.pack('!HH', 1, 1)
"""


def ex(engine, sid, code):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_execute(sid, ["python3", "-c", PROBE + code], stdout=out, stderr=err)
    assert r["exitCode"] == 0, err.getvalue().decode()
    return out.getvalue().decode().splitlines()


def dns_query(name: str, qid: bytes = b"\x42\x42") -> bytes:
    q = qid + b"\x01\x00" + struct.pack("!HHHH", 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes, ip: str) -> bytes:
    """A for any name -> ip (the question echoed, one answer)."""
    end = 12
    while query[end]:
        end += 1 + query[end]
    question = query[12:end + 5]
    return query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + \
        struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)


# listeners --------------------------------------------------------------------------------------------
class Listener:
    """TCP: records each peer and answers its first line with 'hello'. UDP: records each datagram
    and answers it ('pong', or a DNS answer when ``dns_ip`` is given)."""

    def __init__(self, sock, dns_ip=None):
        self.sock, self.dns_ip = sock, dns_ip
        self.port = sock.getsockname()[1]
        self.peers, self.datagrams = [], []
        if sock.type == socket.SOCK_STREAM:
            sock.listen(16)
        threading.Thread(target=self._tcp if sock.type == socket.SOCK_STREAM else self._udp,
                         daemon=True).start()

    def _tcp(self):
        while True:
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            self.peers.append(addr[0])
            try:
                c.settimeout(5)
                c.recv(100)
                c.sendall(b"hello\n")
            except OSError:
                pass
            finally:
                c.close()

    def _udp(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                return
            if addr is None:   # shut down
                return
            self.datagrams.append((data, addr))
            try:
                self.sock.sendto(dns_answer(data, self.dns_ip) if self.dns_ip else b"pong", addr)
            except (OSError, IndexError):
                pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeHost:
    """A host of a private (or any) network in a namespace of the test's own: a veth into the
    host's namespace, ``host_ip``/30 on the host's side and ``ip``/30 inside, so that the /30 is
    routed to that veth only."""

    def __init__(self, first: int, second: int, third=None):
        self.listeners = []
        self.ifname = "lsbe" + os.urandom(4).hex()
        self.fd = N.new_netns()
        try:
            with N.RtNetlink() as nl:
                taken = nl.ipv4_networks()
                thirds = [third] if third is not None else random.sample(range(256), 256)
                for t in thirds:
                    candidates = [(first << 24) | (second << 16) | (t << 8) | (4 * k)
                                  for k in random.sample(range(64), 64)]
                    free = [b for b in candidates if not any(network._overlaps(b, 30, n, p) for n, p in taken)]
                    if free:
                        base = free[0]
                        break
                else:
                    raise RuntimeError(f"no free /30 in {first}.{second}.0.0/16")
                self.host_ip, self.ip = network._ip(base + 1), network._ip(base + 2)
                self.cidr = f"{network._ip(base)}/30"
                nl.veth_add(self.ifname, "eth0", self.fd)
                N.sysctl_write(f"net/ipv6/conf/{self.ifname}/disable_ipv6", "1")
                idx = nl.link_index(self.ifname)
                nl.addr_add(idx, self.host_ip, 30)
                nl.link_up(idx)

            def inside():
                N.sysctl_write("net/ipv6/conf/eth0/disable_ipv6", "1")
                with N.RtNetlink() as n2:
                    i = n2.link_index("eth0")
                    n2.addr_add(i, self.ip, 30)
                    n2.link_up(i)
                    n2.link_up(n2.link_index("lo"))
            N.run_in_netns(self.fd, inside)
        except BaseException:
            self.close()
            raise

    def listen(self, type_=socket.SOCK_STREAM, port=0, dns_ip=None) -> Listener:
        s = N.run_in_netns(self.fd, socket.socket, socket.AF_INET, type_)
        s.bind(("0.0.0.0", port))
        lst = Listener(s, dns_ip)
        self.listeners.append(lst)
        return lst

    def close(self):
        for lst in self.listeners:   # a socket keeps its namespace alive
            lst.close()
        try:
            with N.RtNetlink() as nl:
                nl.link_del(self.ifname)
        finally:
            os.close(self.fd)


@pytest.fixture
def fake_hosts():
    made = []

    def make(first, second, third=None):
        h = FakeHost(first, second, third)
        made.append(h)
        return h
    try:
        yield make
    finally:
        errors = []
        for h in made:
            try:
                h.close()
            except Exception as e:  # noqa: BLE001 - close the others first
                errors.append(e)
        with N.RtNetlink() as nl:
            assert not [h.ifname for h in made if h.ifname in nl.link_names()]
        assert not errors, errors


@pytest.fixture
def sandboxes(engine):
    made = []

    def make():
        sid = engine.sandbox_create(CreateSpec(network=True))["sandboxId"]
        made.append(sid)
        return sid, network.read_state(engine, sid)
    yield make
    for sid in made:
        try:
            engine.sandbox_destroy(sid)
        except Exception:  # noqa: BLE001 - the state dir's teardown gets the rest
            pass


def wait_quiet(seconds=1.0):
    """Give a packet that should not arrive the time to arrive anyway."""
    time.sleep(seconds)


# (1) the host end ---------------------------------------------------------------------------------------
def host_listeners():
    """A TCP and a UDP listener on 0.0.0.0 of the host, on the same free port."""
    for _ in range(50):
        t = socket.socket()
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("0.0.0.0", 0))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("0.0.0.0", t.getsockname()[1]))
        except OSError:
            t.close()
            u.close()
            continue
        return Listener(t), Listener(u)
    raise RuntimeError("no port free for both TCP and UDP")


def test_host_services_on_all_addresses_do_not_answer_through_the_host_end(engine, sandboxes, monkeypatch):
    monkeypatch.delenv("LOCALSB_NETWORK_ALLOW", raising=False)
    tcp_l, udp_l = host_listeners()
    try:
        port = tcp_l.port
        code = f"""
gw = host_end()
print(gw)
r, dt = tcp(gw, {port})
print('tcp', r, dt < 1.0)
print('udp', udp(gw, {port})[0])
"""
        sid, st = sandboxes()
        lines = ex(engine, sid, code)
        assert lines == [st["hostIp"], "tcp ECONNREFUSED True", "udp timeout"], lines
        wait_quiet(0.5)
        assert tcp_l.peers == [] and udp_l.datagrams == []
        assert st["allow"] == []

        # the same probes do reach them with the explicit opt-in: the probes are real
        monkeypatch.setenv("LOCALSB_NETWORK_ALLOW", "host")
        sid2, st2 = sandboxes()
        assert st2["allow"] == ["host"]
        lines = ex(engine, sid2, code)
        assert lines == [st2["hostIp"], "tcp ok hello True", "udp answer"], lines
        assert tcp_l.peers == [st2["sandboxIp"]]
        assert [(d, a[0]) for d, a in udp_l.datagrams] == [(b"probe", st2["sandboxIp"])]
    finally:
        tcp_l.close()
        udp_l.close()


# (2) private ranges, refused by the rules and by the relay itself -------------------------------------
def test_private_hosts_and_the_hosts_own_network_are_refused(engine, sandboxes, fake_hosts, monkeypatch):
    monkeypatch.delenv("LOCALSB_NETWORK_ALLOW", raising=False)
    ten = fake_hosts(10, 253)
    home = fake_hosts(192, 168, 253)
    lan = fake_hosts(198, 18, random.randrange(128, 256))   # a LAN of the host's in a public range
    hosts = [ten, home, lan]
    servers = [h.listen() for h in hosts]
    targets = [(h.ip, s.port) for h, s in zip(hosts, servers)]
    sid, st = sandboxes()
    lines = ex(engine, sid, f"""
for host, port in {targets!r}:
    r, dt = tcp(host, port)
    print(host, r, dt < 1.0)
""")
    assert lines == [f"{h} ECONNREFUSED True" for h, _ in targets], lines
    assert all(s.peers == [] for s in servers)

    # defence in depth: were the rules to send these connections to the relay, it refuses them itself
    for host, _ in targets:
        N.nft(f'insert rule ip {st["table"]} pre iifname "{st["ifname"]}" ip daddr {host} '
              f'meta l4proto tcp redirect to :{st["tcpPort"]}')
    lines = ex(engine, sid, f"""
for host, port in {targets!r}:
    print(host, tcp(host, port)[0])
""")
    assert all(not line.split()[1].startswith("ok") for line in lines) and len(lines) == 3, lines
    assert all(s.peers == [] for s in servers)


# (3) the opt-in ---------------------------------------------------------------------------------------------
def test_the_explicit_opt_in_reaches_the_networks_it_names_and_no_other(cli, fake_hosts):
    ten = fake_hosts(10, 253)
    home = fake_hosts(192, 168, 253)
    s_ten, s_home = ten.listen(), home.listen()
    code = PROBE + f"""
for host, port in {[(ten.ip, s_ten.port), (home.ip, s_home.port)]!r}:
    print(host, tcp(host, port)[0])
"""

    def run(allow):
        p = cli("sb", "run", "--network", "--json", "--", "python3", "-c", code,
                env={"LOCALSB_NETWORK_ALLOW": allow})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)["output"].splitlines()

    assert run(ten.cidr) == [f"{ten.ip} ok hello", f"{home.ip} ECONNREFUSED"]
    assert s_ten.peers == [ten.host_ip] and s_home.peers == []   # reached by the relay, from the host
    assert run("private") == [f"{ten.ip} ok hello", f"{home.ip} ok hello"]
    assert s_home.peers == [home.host_ip]
    # a setting that says nothing clear is refused before anything is made
    p = cli("sb", "create", "--network", env={"LOCALSB_NETWORK_ALLOW": "yes-please"})
    assert p.returncode == 2 and b"LOCALSB_NETWORK_ALLOW" in p.stderr, (p.returncode, p.stderr)


# (4) the DNS forwarder --------------------------------------------------------------------------------------
def test_the_dns_forwarder_reaches_only_the_hosts_resolvers_and_only_with_queries(engine, sandboxes, fake_hosts,
                                                                                 monkeypatch):
    monkeypatch.delenv("LOCALSB_NETWORK_ALLOW", raising=False)
    resolver_host = fake_hosts(10, 253)
    target = fake_hosts(192, 168, 253)
    resolver = resolver_host.listen(socket.SOCK_DGRAM, 53, dns_ip="198.51.100.53")
    monkeypatch.setenv("LOCALSB_DNS_SERVERS", resolver_host.ip)
    t_dns = target.listen(socket.SOCK_DGRAM, 53)
    t_tcp53 = target.listen(socket.SOCK_STREAM, 53)
    t_back = target.listen(socket.SOCK_DGRAM, 0)
    sid, st = sandboxes()
    lines = ex(engine, sid, f"""
kind, data, peer = udp({target.ip!r}, 53, query('probe.test'))
print(kind, socket.inet_ntoa(data[-4:]) if kind == 'answer' else '', peer[0] if peer else '')
print(udp({target.ip!r}, 53, b'\\x12\\x34\\x81\\x80' + b'\\x00' * 24)[0])
print('tcp53', tcp({target.ip!r}, 53)[0])
""")
    # a query to any server is answered by the host's resolver, never by (nor sent to) the target;
    # a datagram that is no DNS query goes nowhere; DNS over TCP to the target is refused
    assert lines == [f"answer 198.51.100.53 {target.ip}", "timeout", "tcp53 ECONNREFUSED"], lines
    assert [a[0] for _, a in resolver.datagrams] == [resolver_host.host_ip]

    # a query with a forged source (the target's address, as a sandbox holding CAP_NET_RAW could
    # send it): the forwarder's answer would go to the target, a third party. The test makes the
    # socket in the sandbox's network namespace itself.
    init_pid = engine.store.one("SELECT init_pid FROM sandboxes WHERE id=?", sid)["init_pid"]
    fd = N.netns_fd_of(init_pid)
    try:
        def forged():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.bind((target.ip, t_back.port))
            return s
        s = N.run_in_netns(fd, forged)
    finally:
        os.close(fd)
    try:
        s.sendto(dns_query("reflect.test", b"\x77\x77"), (st["hostIp"], 53))
    finally:
        s.close()
    wait_quiet(1.5)
    assert t_back.datagrams == [] and t_dns.datagrams == [] and t_tcp53.peers == []
    assert len(resolver.datagrams) == 1, resolver.datagrams
