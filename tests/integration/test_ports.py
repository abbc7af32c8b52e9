"""Issue 8: `--port`: the URL in create and get, the HTTP gateway (routing by host name,
WebSocket pass-through, 404/502/503 answers of its own) and its lifecycle (started with the first
sandbox with a port, stopped with the last, repaired after SIGKILL). Traffic: loopback only."""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec
from localsb.engine import Engine
from localsb.engine.gateway import http_gateway
from localsb.engine.store import process_alive

pytestmark = pytest.mark.timeout(180)

WS_SERVER = r'''
import base64, hashlib, socket, struct, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def recv_exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    try:
        while True:
            b0, b1 = recv_exact(c, 2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", recv_exact(c, 2))[0]
            elif n == 127:
                n = struct.unpack("!Q", recv_exact(c, 8))[0]
            mask = recv_exact(c, 4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(recv_exact(c, n)))
            if op == 8:
                c.sendall(b"\x88\x00")
                return
            if n < 126:
                hdr = bytes([0x80 | op, n])
            elif n < 65536:
                hdr = bytes([0x80 | op, 126]) + struct.pack("!H", n)
            else:
                hdr = bytes([0x80 | op, 127]) + struct.pack("!Q", n)
            c.sendall(hdr + data)
    except EOFError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 3000))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def ex(engine, sid, *cmd):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_execute(sid, list(cmd), stdout=out, stderr=err)
    return r["exitCode"], out.getvalue().decode(), err.getvalue().decode()


def split_url(url):
    assert url.startswith("http://") and ".localhost:" in url, url
    host = url[len("http://"):]
    return host, int(host.rsplit(":", 1)[1])


def get(port, host, path="/", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": host, **(headers or {})})
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def serve_http(engine, sid, port=3000, text="hello from the sandbox"):
    rc, _, err = ex(engine, sid, "sh", "-c", f"mkdir -p www && echo '{text}' > www/index.html && "
                                             f"nohup python3 -m http.server {port} -d www >/dev/null 2>&1 &")
    assert rc == 0, err
    wait_listening(engine, sid, port)


def wait_listening(engine, sid, port):
    rc, out, err = ex(engine, sid, "python3", "-c", f"""
import socket, time
for _ in range(200):
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
        print('up'); break
    except OSError:
        time.sleep(0.05)
""")
    assert out == "up\n", (out, err)


@pytest.fixture(autouse=True)
def any_free_port(monkeypatch):
    # parallel test processes each run a gateway of their own state dir
    monkeypatch.setenv("LOCALSB_GATEWAY_PORT", "0")


@pytest.fixture
def sbx(engine):
    made = []

    def make(**kw):
        r = engine.sandbox_create(CreateSpec(**kw))
        made.append(r["sandboxId"])
        return r
    yield make
    for sid in made:
        try:
            engine.sandbox_destroy(sid)
        except E.NotFound:
            pass


def test_url_in_create_and_get_and_http_through_the_gateway(engine, cli):
    env = {"LOCALSB_GATEWAY_PORT": "0"}
    p = cli("sb", "create", "--port", "3000", "--name", "My Web", "--json", env=env, check=0)
    created = json.loads(p.stdout)
    sid, url = created["sandboxId"], created["url"]
    assert url == f"http://my-web-{sid[4:]}.localhost:{split_url(url)[1]}"
    info = json.loads(cli("sb", "get", sid, "--json", env=env, check=0).stdout)
    assert info["url"] == url
    info = engine.sandbox_get(sid)
    assert info["url"] == url and info["networkPort"] == 3000 and info["networkEnabled"] is True
    p = cli("sb", "create", "--port", "3001", env=env, check=0)
    lines = p.stderr.decode().splitlines()  # message lines go to stderr, as the official CLI's
    assert lines[0].startswith("✓ created sandbox sbx_")
    other = lines[0].split()[3]
    assert lines[1] == f"ℹ url: http://{other[4:]}.localhost:{split_url(url)[1]}"
    try:
        serve_http(engine, sid)
        host, port = split_url(url)
        status, body, _ = get(port, host, "/index.html")
        assert (status, body) == (200, b"hello from the sandbox\n")
        # hosts are case-insensitive; a client that cannot resolve *.localhost names the sandbox
        status, body, _ = get(port, host.upper(), "/index.html")
        assert (status, body) == (200, b"hello from the sandbox\n")
        status, body, _ = get(port, f"127.0.0.1:{port}", "/index.html", {"X-Localsb-Sandbox": sid})
        assert (status, body) == (200, b"hello from the sandbox\n")
        if shutil.which("curl"):  # curl resolves *.localhost itself, as browsers do
            out = subprocess.run(["curl", "-sS", "-m", "10", url + "/index.html"], capture_output=True)
            assert out.stdout == b"hello from the sandbox\n", out.stderr
    finally:
        cli("sb", "delete", sid, "--confirm", env=env)
        cli("sb", "delete", other, "--confirm", env=env)


def ws_connect(port, host):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, head
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert b"Sec-WebSocket-Accept: " + accept in head
    return s, rest


def ws_send(s, data: bytes, op=1):
    mask = os.urandom(4)
    n = len(data)
    if n < 126:
        hdr = bytes([0x80 | op, 0x80 | n])
    elif n < 65536:
        hdr = bytes([0x80 | op, 0x80 | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([0x80 | op, 0x80 | 127]) + struct.pack("!Q", n)
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def ws_recv(s, buf: bytes):
    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
    need(2)
    op, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        need(4)
        n, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, pos = struct.unpack("!Q", buf[2:10])[0], 10
    need(pos + n)
    return op, buf[pos:pos + n], buf[pos + n:]


def test_websocket_echo_passes_through(engine, sbx):
    r = sbx(port=3000, name="ws")
    sid = r["sandboxId"]
    rc, _, err = ex(engine, sid, "sh", "-c", "cat > /tmp/ws.py <<'EOF'\n" + WS_SERVER + "\nEOF\n"
                                            "nohup python3 /tmp/ws.py >/tmp/ws.log 2>&1 &")
    assert rc == 0, err
    wait_listening(engine, sid, 3000)
    host, port = split_url(r["url"])
    s, buf = ws_connect(port, host)
    try:
        ws_send(s, b"hello websocket")
        op, data, buf = ws_recv(s, buf)
        assert (op, data) == (1, b"hello websocket")
        big = os.urandom(200_000)
        ws_send(s, big, op=2)
        op, data, buf = ws_recv(s, buf)
        assert op == 2 and data == big
        ws_send(s, b"", op=8)
        op, data, buf = ws_recv(s, buf)
        assert op == 8
    finally:
        s.close()


def test_unknown_and_deleted_sandboxes_get_404_and_the_gateway_stops_with_the_last(engine, sbx):
    a = sbx(port=3000, name="a")
    b = sbx(port=3000, name="b")
    for r in (a, b):
        serve_http(engine, r["sandboxId"], text=r["sandboxId"])
    host_a, port = split_url(a["url"])
    host_b, port_b = split_url(b["url"])
    assert port_b == port  # one gateway per state directory
    gw = http_gateway(engine.state_dir).info()
    assert gw and gw["port"] == port and process_alive(gw["pid"], gw["start"])
    assert get(port, host_a)[:2] == (200, (a["sandboxId"] + "\n").encode())
    engine.sandbox_destroy(a["sandboxId"])
    status, body, headers = get(port, host_a)
    assert status == 404 and headers.get("X-Localsb-Gateway") == "1", body
    status, body, _ = get(port, f"nosuch-zzzzzzzzzzzz.localhost:{port}")
    assert status == 404 and b"no sandbox" in body
    assert get(port, f"127.0.0.1:{port}")[0] == 404
    assert get(port, host_b)[:2] == (200, (b["sandboxId"] + "\n").encode())
    engine.sandbox_destroy(b["sandboxId"])
    # the last sandbox with a port is gone: so is the gateway, and nothing answers there
    assert not process_alive(gw["pid"], gw["start"])
    assert http_gateway(engine.state_dir).info() is None
    assert not os.path.exists(os.path.join(engine.state_dir, "run", "gateway.json"))
    with pytest.raises(ConnectionRefusedError):
        get(port, host_b)


def test_gateway_answers_502_without_a_server_and_503_when_paused(engine, sbx):
    r = sbx(port=4000)
    host, port = split_url(r["url"])
    status, body, _ = get(port, host)
    assert status == 502 and b"nothing listens on port 4000" in body
    serve_http(engine, r["sandboxId"], port=4000)
    assert get(port, host)[0] == 200
    engine.sandbox_pause(r["sandboxId"])
    try:
        status, body, _ = get(port, host)
        assert status == 503 and b"paused" in body
    finally:
        engine.sandbox_resume(r["sandboxId"])
    assert get(port, host)[0] == 200


def test_gateway_killed_comes_back_and_repair_stops_it(engine, state_dir, sbx):
    r = sbx(port=3000)
    sid = r["sandboxId"]
    serve_http(engine, sid)
    gw = http_gateway(engine.state_dir).info()
    os.kill(gw["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process_alive(gw["pid"], gw["start"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    url = engine.sandbox_get(sid)["url"]  # a live sandbox with a port needs its gateway: restarted
    host, port = split_url(url)
    assert get(port, host)[0] == 200
    gw2 = http_gateway(engine.state_dir).info()
    assert gw2 and gw2["pid"] != gw["pid"]
    row = engine.store.one("SELECT supervisor_pid FROM sandboxes WHERE id=?", sid)
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.3)
    Engine(state_dir).close()  # any later localsb call repairs
    assert engine.sandbox_get(sid)["status"] == "failed"
    deadline = time.monotonic() + 5
    while process_alive(gw2["pid"], gw2["start"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(gw2["pid"], gw2["start"])
