"""Issue 8: `--network` (a veth /30 per sandbox, transparent TCP relay and DNS forwarder on the
host end, host forwarding off) and the default of loopback only.

Traffic goes only to loopback, to the host end of a sandbox's own link, and to a namespace this
test makes ("remote": the outside world, reached from the host over a veth of its own). The host
end answers only with LOCALSB_NETWORK_ALLOW=host (issue 14): the tests that listen there set it.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec
from localsb.engine import Engine
from localsb.engine import network
from localsb.linux import netns as N

pytestmark = pytest.mark.timeout(180)


def ex(engine, sid, *cmd, **kw):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_execute(sid, list(cmd), stdout=out, stderr=err, **kw)
    return r["exitCode"], out.getvalue().decode(), err.getvalue().decode()


def py(engine, sid, code):
    return ex(engine, sid, "python3", "-c", code)


CONNECT = """
import socket, sys, time, errno
def attempt(host, port, timeout=5):
    t = time.monotonic()
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.sendall(b"ping\\n")
        data = s.recv(100)
        return "ok " + data.decode().strip(), time.monotonic() - t
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e)), time.monotonic() - t
    finally:
        s.close()
"""


def host_primary_ip() -> str:
    """The host's source address toward the world: a UDP connect picks it, no packet is sent."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))
        return s.getsockname()[0]
    finally:
        s.close()


def links() -> set:
    with N.RtNetlink() as nl:
        return set(nl.link_names())


def tables() -> set:
    return set(N.nft_table_names("ip"))


class TcpServer:
    """Accepts connections, answers each line with 'hello <peer ip>'; records peers."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.listen(16)
        self.port = sock.getsockname()[1]
        self.peers = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            self.peers.append(addr[0])
            try:
                c.settimeout(5)
                c.recv(100)
                c.sendall(f"hello {addr[0]}\n".encode())
            except OSError:
                pass
            finally:
                c.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def tcp_server(ip: str) -> TcpServer:
    s = socket.socket()
    s.bind((ip, 0))
    return TcpServer(s)


# a namespace of the test's own: the outside world ---------------------------------------------------
def dns_answer(query: bytes, ip: str) -> bytes:
    """A for *.test -> ip; anything else: NXDOMAIN (AAAA of *.test: no data)."""
    pos = 12
    labels = []
    while query[pos]:
        labels.append(query[pos + 1:pos + 1 + query[pos]].decode())
        pos += 1 + query[pos]
    qtype = struct.unpack_from("!H", query, pos + 1)[0]
    question = query[12:pos + 5]
    name = ".".join(labels).lower()
    if not name.endswith(".test"):
        return query[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question
    if qtype != 1:
        return query[:2] + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + question
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    return query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + answer


class Remote:
    """A host of the outside world: a namespace behind a veth /30 (198.18.x.0/30), serving on an
    address of its own (198.19.x.y) that the host reaches through a route via the veth, not
    on-link: the networks of the host's own addresses are refused like a private LAN (issue 14)."""

    def __init__(self):
        self.fd = N.new_netns()
        self.ifname = "lsbt" + os.urandom(4).hex()
        with N.RtNetlink() as nl:
            taken = nl.ipv4_networks()
            for third in range(0, 256):
                base = (198 << 24) | (18 << 16) | (third << 8) | 0
                public = (198 << 24) | (19 << 16) | (third << 8) | 2
                if not any(network._overlaps(base, 30, n, p) or network._overlaps(public, 32, n, p)
                           for n, p in taken):
                    break
            self.host_ip, self.gateway, self.ip = network._ip(base + 1), network._ip(base + 2), network._ip(public)
            nl.veth_add(self.ifname, "eth0", self.fd)
            N.sysctl_write(f"net/ipv6/conf/{self.ifname}/disable_ipv6", "1")
            idx = nl.link_index(self.ifname)
            nl.addr_add(idx, self.host_ip, 30)
            nl.link_up(idx)
            nl.route_add(self.ip, 32, self.gateway, idx)   # goes with the link

        def inside():
            with N.RtNetlink() as n2:
                i = n2.link_index("eth0")
                n2.addr_add(i, self.gateway, 30)
                n2.addr_add(n2.link_index("lo"), self.ip, 32)
                n2.link_up(i)
                n2.link_up(n2.link_index("lo"))
        N.run_in_netns(self.fd, inside)
        self.closers = []

    def socket(self, type_=socket.SOCK_STREAM):
        return N.run_in_netns(self.fd, socket.socket, socket.AF_INET, type_)

    def tcp_server(self) -> TcpServer:
        s = self.socket()
        s.bind((self.ip, 0))
        srv = TcpServer(s)
        self.closers.append(srv.close)
        return srv

    def http_server(self) -> int:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"path": self.path, "client": self.client_address[0]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = ThreadingHTTPServer((self.ip, 0), Handler, bind_and_activate=False)
        srv.socket.close()
        srv.socket = self.socket()
        srv.server_bind()
        srv.server_activate()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.closers.append(lambda: (srv.shutdown(), srv.server_close()))
        return srv.server_address[1]

    def dns_server(self) -> list:
        s = self.socket(socket.SOCK_DGRAM)
        s.bind((self.ip, 53))
        seen = []

        def loop():
            while True:
                try:
                    q, addr = s.recvfrom(512)
                except OSError:
                    return
                seen.append(addr[0])
                s.sendto(dns_answer(q, self.ip), addr)
        threading.Thread(target=loop, daemon=True).start()
        self.closers.append(s.close)
        return seen

    def close(self):
        for c in self.closers:
            try:
                c()
            except Exception:
                pass
        with N.RtNetlink() as nl:
            nl.link_del(self.ifname)
        os.close(self.fd)


@pytest.fixture
def remote():
    r = Remote()
    yield r
    r.close()


@pytest.fixture
def netsbx(engine):
    made = []

    def make(**kw):
        sid = engine.sandbox_create(CreateSpec(network=True, **kw))["sandboxId"]
        made.append(sid)
        return sid, network.read_state(engine, sid)
    yield make
    for sid in made:
        try:
            engine.sandbox_destroy(sid)
        except E.NotFound:
            pass


# tests ------------------------------------------------------------------------------------------------
def test_default_has_loopback_only_and_connect_out_fails_at_once(engine):
    host = host_primary_ip()
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    try:
        code = CONNECT + f"""
import os
print(sorted(os.listdir('/sys/class/net')))
r, dt = attempt({host!r}, 22)
print(r, dt < 0.5)
r, dt = attempt('169.254.64.1', 80)
print(r, dt < 0.5)
"""
        rc, out, err = py(engine, sid, code)
        assert rc == 0, err
        assert out.splitlines() == ["['lo']", "ENETUNREACH True", "ENETUNREACH True"]
        assert network.read_state(engine, sid) is None
    finally:
        engine.sandbox_destroy(sid)
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_run(CreateSpec(mode="oneshot", command=["python3", "-c", code]), None, out, err)
    assert r["exitCode"] == 0, err.getvalue()
    assert out.getvalue().decode().splitlines()[1] == "ENETUNREACH True"


def test_network_link_reaches_a_server_on_the_host_side(engine, netsbx, monkeypatch):
    # the host end answers only with the opt-in (issue 14; tests/security/test_network_escape.py)
    monkeypatch.setenv("LOCALSB_NETWORK_ALLOW", "host")
    forwarding_before = open("/proc/sys/net/ipv4/ip_forward").read()
    sid, st = netsbx()
    assert st["ifname"] in links() and st["table"] in tables()
    assert st["allow"] == ["host"]
    srv = tcp_server(st["hostIp"])
    try:
        rc, out, err = py(engine, sid, CONNECT + f"""
import os
print(sorted(os.listdir('/sys/class/net')))
print(open('/proc/sys/net/ipv6/conf/eth0/disable_ipv6').read().strip())
print(attempt({st['hostIp']!r}, {srv.port})[0])
print(open('/etc/resolv.conf').read().split('nameserver ')[1].split()[0])
""")
        assert rc == 0, err
        assert out.splitlines() == ["['eth0', 'lo']", "1", f"ok hello {st['sandboxIp']}", st["hostIp"]]
        assert srv.peers == [st["sandboxIp"]]
    finally:
        srv.close()
    # the host keeps forwarding off, globally and on the sandbox's link
    assert open("/proc/sys/net/ipv4/ip_forward").read() == forwarding_before == "0\n"
    assert open(f"/proc/sys/net/ipv4/conf/{st['ifname']}/forwarding").read() == "0\n"
    assert open(f"/proc/sys/net/ipv6/conf/{st['ifname']}/disable_ipv6").read() == "1\n"


def test_egress_tcp_http_and_dns_go_out_through_the_host(engine, netsbx, remote, monkeypatch):
    monkeypatch.setenv("LOCALSB_DNS_SERVERS", remote.ip)
    dns_seen = remote.dns_server()
    port = remote.http_server()
    sid, st = netsbx()
    rc, out, err = py(engine, sid, f"""
import json, socket, urllib.request
print(socket.gethostbyname('web.test'))
print(urllib.request.urlopen('http://web.test:{port}/hello', timeout=10).read().decode())
try:
    socket.gethostbyname('nosuch.invalid')
except socket.gaierror as e:
    print('nxdomain')
""")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == remote.ip
    answer = json.loads(lines[1])
    # the remote end sees the host (the relay's connection), never the sandbox's link address
    assert answer == {"path": "/hello", "client": remote.host_ip}
    assert lines[2] == "nxdomain"
    assert dns_seen and set(dns_seen) == {remote.host_ip}


def test_one_shot_run_with_network_is_wired_before_the_command_starts(engine, cli, remote):
    srv = remote.tcp_server()
    code = CONNECT + f"print(attempt({remote.ip!r}, {srv.port})[0])"
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_run(CreateSpec(mode="oneshot", network=True, command=["python3", "-c", code]),
                           None, out, err)
    assert r["exitCode"] == 0, err.getvalue()
    assert out.getvalue().decode() == f"ok hello {remote.host_ip}\n"
    p = cli("sb", "run", "--network", "--json", "--", "python3", "-c", code)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["output"] == f"ok hello {remote.host_ip}\n"
    assert len(srv.peers) == 2
    # nothing of either run is left on the host, nor in this process
    for sid in (r["sandboxId"], result["sandboxId"]):
        ifname, table = network.link_names(engine, sid)
        assert ifname not in links() and table not in tables()
    assert not network._local_egress
    deadline = time.monotonic() + 3
    while any(t.name.startswith("localsb-egress") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("localsb-egress") for t in threading.enumerate())


def test_sandboxes_cannot_reach_each_other_nor_the_host(engine, netsbx):
    a, sa = netsbx()
    b, sb = netsbx()
    assert sa["hostIp"] != sb["hostIp"]
    rc, _, err = ex(engine, b, "sh", "-c",
                    "nohup python3 -m http.server 8000 >/dev/null 2>&1 & "
                    "nohup python3 -c \"import socket;s=socket.socket(2,2);s.bind(('0.0.0.0',9999));"
                    "d=s.recv(100);open('/tmp/udp','w').write(repr(d))\" >/dev/null 2>&1 &")
    assert rc == 0, err
    rc, out, err = py(engine, b, CONNECT + """
for _ in range(100):
    r = attempt('127.0.0.1', 8000)[0]
    if r.startswith('ok'):
        break
    time.sleep(0.05)
print(r[:2])
""")
    assert out == "ok\n", (out, err)
    # The host's own addresses are refused by the same rule as the host ends (a local address);
    # tests send nothing to the host's network address itself.
    host_srv = tcp_server(sb["hostIp"])
    try:
        targets = [(sb["sandboxIp"], 8000), (sb["hostIp"], 8000), (sb["hostIp"], sb["tcpPort"]),
                   (sb["hostIp"], host_srv.port), ("127.0.0.1", 8000)]
        rc, out, err = py(engine, a, CONNECT + f"""
for host, port in {targets!r}:
    r, dt = attempt(host, port)
    print(host, r, dt < 1.0)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'x', ({sb['sandboxIp']!r}, 9999))
""")
        assert rc == 0, err
        got = out.splitlines()
        # each refused at once: the other sandbox, its host end, its relay, the host itself, and
        # A's own loopback (nothing listens there in A)
        assert got == [f"{h} ECONNREFUSED True" for h, _ in targets], got
        assert host_srv.peers == []
        time.sleep(0.5)
        rc, out, _ = ex(engine, b, "sh", "-c", "cat /tmp/udp 2>/dev/null || echo nothing")
        assert out == "nothing\n"
    finally:
        host_srv.close()


def test_delete_and_repair_leave_no_link_table_or_process(engine, state_dir, netsbx):
    a, sa = netsbx()
    b, sb = netsbx()
    assert {sa["ifname"], sb["ifname"]} <= links()
    assert {sa["table"], sb["table"]} <= tables()
    engine.sandbox_destroy(a)
    assert sa["ifname"] not in links() and sa["table"] not in tables()
    assert network.read_state(engine, a) is None
    # a supervisor killed outright: repair (any later localsb call) removes what it had added
    row = engine.store.one("SELECT supervisor_pid, init_pid FROM sandboxes WHERE id=?", b)
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{row['supervisor_pid']}/status") and \
            "zombie" not in open(f"/proc/{row['supervisor_pid']}/status").read() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb["ifname"] in links()  # the sandbox's init still holds its netns
    e2 = Engine(state_dir)
    try:
        assert b in [r["id"] for r in e2.store.all("SELECT id FROM sandboxes WHERE status='failed'")]
    finally:
        e2.close()
    assert sb["ifname"] not in links() and sb["table"] not in tables()
    assert network.read_state(engine, b) is None
    assert not os.path.exists(f"/proc/{row['init_pid']}/ns/net")


def test_checkpoint_restore_gives_the_new_init_a_link(engine, netsbx, monkeypatch):
    monkeypatch.setenv("LOCALSB_NETWORK_ALLOW", "host")   # the probe listens on the host end
    sid, st = netsbx()
    engine.checkpoint_create(sid, "before")
    engine.checkpoint_restore(sid, "before")
    st2 = network.read_state(engine, sid)
    assert st2 and st2["ifname"] == st["ifname"] and st2["ifname"] in links()
    srv = tcp_server(st2["hostIp"])
    try:
        rc, out, err = py(engine, sid, CONNECT + f"print(attempt({st2['hostIp']!r}, {srv.port})[0])")
        assert rc == 0, err
        assert out == f"ok hello {st2['sandboxIp']}\n"
    finally:
        srv.close()


class _Sink:
    """A TCP server on the host end of a sandbox's link that reads each connection to its end."""

    def __init__(self, ip):
        self.received = []
        self.sock = socket.socket()
        self.sock.bind((ip, 0))
        self.sock.listen(4)
        self.addr = (ip, self.sock.getsockname()[1])
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n = 0
            while True:
                data = c.recv(65536)
                if not data:
                    break
                n += len(data)
            self.received.append(n)
            c.close()

    def send_from(self, engine, sid, nbytes):
        rc, out, err = py(engine, sid, CONNECT + f"""
import socket
s = socket.create_connection({self.addr!r}, timeout=10)
s.sendall(b"x" * {nbytes})
s.close()
""")
        assert rc == 0, err
        deadline = time.monotonic() + 5
        while not self.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.received == [nbytes]

    def close(self):
        self.sock.close()


def test_network_egress_bytes_count_what_the_sandbox_sent(engine, netsbx, monkeypatch):
    """networkEgressBytes: the bytes a sandbox sent on its link, live in stats, kept on the row
    when the link goes (restore makes a new one; delete removes it)."""
    monkeypatch.setenv("LOCALSB_NETWORK_ALLOW", "host")   # the sink listens on the host end
    sid, st = netsbx()
    before = engine.stats()["services"]["sandbox"]["totalNetworkEgressBytes"]
    sink = _Sink(st["hostIp"])
    try:
        sink.send_from(engine, sid, 300_000)
    finally:
        sink.close()
    live = engine.stats()["services"]["sandbox"]["totalNetworkEgressBytes"] - before
    assert 300_000 <= live < 400_000        # the payload plus its TCP/IP headers
    engine.checkpoint_create(sid, "c1")
    engine.checkpoint_restore(sid, "c1")     # a new init, a new link: the old one's bytes stay
    sink = _Sink(network.read_state(engine, sid)["hostIp"])
    try:
        sink.send_from(engine, sid, 300_000)
    finally:
        sink.close()
    engine.sandbox_destroy(sid)
    sent = engine.sandbox_get(sid, include_deleted=True)["networkEgressBytes"]
    assert 600_000 <= sent < 800_000, sent
    quiet = engine.sandbox_create(CreateSpec())["sandboxId"]
    engine.sandbox_destroy(quiet)
    assert engine.sandbox_get(quiet, include_deleted=True)["networkEgressBytes"] == 0



def test_one_shot_run_counts_its_egress_bytes(engine, remote):
    """A one-shot run's link lives until its teardown counted it (the namespace would take the
    link's counters with it when the command ends)."""
    received = []
    srv = remote.socket()      # "the internet": a namespace of the test's own
    srv.bind((remote.ip, 0))
    srv.listen(1)

    def drain():
        c, _ = srv.accept()
        n = 0
        while (data := c.recv(65536)):
            n += len(data)
        received.append(n)
        c.close()
    threading.Thread(target=drain, daemon=True).start()
    code = f"import socket; s = socket.create_connection(({remote.ip!r}, {srv.getsockname()[1]}), timeout=10); " \
           f"s.sendall(b'y' * 200_000); s.close()"
    try:
        r = engine.sandbox_run(CreateSpec(mode="oneshot", network=True, command=["python3", "-c", code]),
                               None, io.BytesIO(), io.BytesIO())
    finally:
        srv.close()
    assert r["exitCode"] == 0 and received == [200_000]
    sent = engine.sandbox_get(r["sandboxId"])["networkEgressBytes"]
    assert 200_000 <= sent < 300_000, sent
