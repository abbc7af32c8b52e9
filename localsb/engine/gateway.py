"""The HTTP gateway of `--port`: ``http://<name>-<identifier>.localhost:<port>`` -> the sandbox's port.

One gateway process per state directory, started with the first sandbox that has a port and
stopped with the last (``Daemon``: a pidfile-like ``run/gateway.json`` with pid, start time and
port, and a lock that orders starts and stops). Its routing table is the sandboxes table itself:
every connection looks its sandbox up, so a deleted sandbox answers 404 at once.

Routing: the first label of the Host header is ``<name>-<identifier>`` (or the identifier
alone); a request without such a host may name the sandbox in ``X-Localsb-Sandbox`` instead
(clients that cannot resolve ``*.localhost`` connect to 127.0.0.1 with that header). The
upstream socket is made inside the sandbox's network namespace (setns to /proc/<init>/ns/net,
socket(), setns back: the socket keeps its namespace) and connects to the sandbox's own
127.0.0.1:<port>, so ports need no veth and no address. After the request head, bytes are relayed
both ways untouched: keep-alive, streaming and WebSocket upgrades pass through. A connection is
routed once, by its first request (browsers and HTTP/1.1 clients open one connection per host).

Answers of the gateway itself: 404 unknown or deleted sandbox, 502 nothing listening on the port,
503 the sandbox is paused, 400 a request it cannot read.

Port: ``LOCALSB_GATEWAY_PORT`` (0: any free port), default 18888, falling back to a free port
when 18888 is taken; the port in use is recorded in the state directory.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import time

from .store import loads, proc_start_time, process_alive

LIVE = ("creating", "idle", "running", "paused", "suspended")


class Daemon:
    """A per-state-directory helper process, started on demand, stopped when nothing needs it.

    The starter binds the listening socket itself and hands it over, so the port is known (and
    connections queue) before the new interpreter has even imported its modules.
    """

    def __init__(self, state_dir: str, name: str, module: str, port_env: str, default_port: int):
        self.state_dir = state_dir
        self.name = name
        self.module = module
        self.port_env = port_env
        self.default_port = default_port
        run = os.path.join(state_dir, "run")
        self.info_path = os.path.join(run, name + ".json")
        self.lock_path = os.path.join(run, name + ".lock")

    # what subclasses decide ------------------------------------------------------------------
    def needed(self, store, exclude: str | None = None) -> bool:
        raise NotImplementedError

    # state ----------------------------------------------------------------------------------------
    def info(self) -> dict | None:
        """The recorded daemon if its process is alive (pid and start time), else None."""
        try:
            with open(self.info_path) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            return None
        return info if process_alive(info.get("pid"), info.get("start")) else None

    def port(self) -> int | None:
        info = self.info()
        return info["port"] if info else None

    def configured_port(self) -> int | None:
        text = os.environ.get(self.port_env)
        if text is None or text == "":
            return None
        try:
            port = int(text)
        except ValueError:
            from localsb.api.errors import ValidationError
            raise ValidationError(f"Invalid {self.port_env} '{text}': expected a port number") from None
        return port or None

    def _lock(self):
        os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    # start / stop ---------------------------------------------------------------------------------
    def ensure(self) -> int:
        """Start the daemon unless it runs; return its port."""
        fd = self._lock()
        try:
            info = self.info()
            if info:
                return info["port"]
            sock = self._bind()
            try:
                pid = self._spawn(sock.fileno())
            finally:
                sock.close()
            port = self._bound_port
            info = {"pid": pid, "start": proc_start_time(pid), "port": port}
            tmp = self.info_path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(info, fh)
            os.rename(tmp, self.info_path)
            return port
        finally:
            os.close(fd)

    def _bind(self) -> socket.socket:
        wanted = os.environ.get(self.port_env)
        port = self.configured_port() if wanted not in (None, "") else self.default_port
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port or 0))
        except OSError:
            if wanted not in (None, "") and port:
                s.close()
                from localsb.api.errors import HostError
                raise HostError(f"Cannot listen on 127.0.0.1:{port} ({self.port_env}): port in use") from None
            s.bind(("127.0.0.1", 0))  # the default port is taken (another state directory?)
        s.listen(256)
        self._bound_port = s.getsockname()[1]
        return s

    def _spawn(self, fd: int) -> int:
        """Double fork, new session, exec a fresh interpreter running ``<module>.main`` with the
        listening socket; return the daemon's pid."""
        from localsb.linux.spawn import close_fds   # before the fork: a caller's thread may hold the import lock
        from .interp import fresh_python
        r, w = os.pipe2(os.O_CLOEXEC)
        args, env = fresh_python(self.module, self.state_dir, str(fd))
        log = os.path.join(self.state_dir, "logs", self.name + ".log")
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.setsid()
                child = os.fork()
                if child != 0:
                    os.write(w, b"%d\n" % child)
                    os._exit(0)
                os.close(w)
                out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.set_inheritable(fd, True)
                close_fds({fd})
                os.execve(sys.executable, args, env)
            finally:
                os._exit(127)
        os.close(w)
        try:
            os.waitpid(pid, 0)
            data = b""
            while True:
                chunk = os.read(r, 64)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(r)
        from localsb.api.errors import HostError
        if not data.strip():
            raise HostError(f"Cannot start the {self.name} process")
        return int(data)

    def stop_if_unneeded(self, exclude: str | None = None) -> bool:
        """Stop the daemon when no sandbox but ``exclude`` needs it; True if it was stopped."""
        if not os.path.exists(self.info_path):
            return False
        from .store import Store
        fd = self._lock()
        try:
            store = Store(os.path.join(self.state_dir, "state.db"))
            try:
                if self.needed(store, exclude):
                    return False
            finally:
                store.close()
            info = self.info()
            try:
                os.unlink(self.info_path)
            except FileNotFoundError:
                pass
            if info:
                _terminate(info["pid"], info["start"])
            return True
        finally:
            os.close(fd)

    def exit_if_unneeded(self, store, cleanup) -> None:
        """In the daemon: when nothing needs it any more, unregister (under the lock, so that a
        concurrent ensure() either sees it running or starts a new one), run ``cleanup`` and exit."""
        if self.needed(store):
            return
        fd = self._lock()
        try:
            if self.needed(store):
                return
            try:
                with open(self.info_path) as fh:
                    mine = json.load(fh).get("pid") == os.getpid()
            except (OSError, ValueError):
                mine = False
            if mine:
                os.unlink(self.info_path)
            cleanup()
        finally:
            os.close(fd)
        os._exit(0)


def _terminate(pid: int, start, timeout: float = 2.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while process_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.005)
    if process_alive(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class HttpGatewayDaemon(Daemon):
    def needed(self, store, exclude=None) -> bool:
        marks = ",".join("?" for _ in LIVE)
        for row in store.all(f"SELECT id, spec FROM sandboxes WHERE status IN ({marks})", *LIVE):
            if row["id"] != exclude and loads(row["spec"], {}).get("port"):
                return True
        return False


def http_gateway(state_dir: str) -> HttpGatewayDaemon:
    return HttpGatewayDaemon(state_dir, "gateway", "localsb.engine.gateway", "LOCALSB_GATEWAY_PORT", 18888)


# the gateway process -------------------------------------------------------------------------------
def main():
    """Entry point of the gateway interpreter (argv: state_dir listening_fd)."""
    serve_daemon(HttpGateway)


def serve_daemon(server_cls) -> None:
    """The body of a gateway interpreter's main (argv: state_dir listening_fd): SIGTERM ends it,
    SIGHUP and SIGPIPE are ignored, ``server_cls(state_dir, listening socket).serve()`` runs."""
    import asyncio
    state_dir, fd = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    asyncio.run(server_cls(state_dir, socket.socket(fileno=fd)).serve())


def _response(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Localsb-Gateway: 1\r\n\r\n").encode() + body


class HttpGateway:
    HEAD_LIMIT = 64 * 1024

    def __init__(self, state_dir: str, sock: socket.socket):
        import hashlib

        from localsb.linux.netns import NetnsSockets

        from .clock import Clock
        from .store import Store
        self.state_dir = state_dir
        self.sock = sock
        self.store = Store(os.path.join(state_dir, "state.db"))
        self.clock = Clock()
        self.daemon = http_gateway(state_dir)
        self.netns = NetnsSockets()
        # the cgroup name of a sandbox (Engine.cgroup_name): proves an init pid is still that
        # sandbox's and not a reused pid
        self.tag = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:8]
        self.touched: dict = {}

    async def serve(self):
        import asyncio
        self.loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        server = await self.loop.create_server(lambda: _ClientSide(self), sock=self.sock)
        while True:
            await asyncio.sleep(1.0)
            try:
                self.daemon.exit_if_unneeded(self.store, server.close)
            except Exception as e:  # noqa: BLE001 - keep serving; a later tick retries
                print(f"gateway: {e}", file=sys.stderr)

    # routing ---------------------------------------------------------------------------------------
    def route(self, headers: dict):
        """-> (row or None, why). Host's first label ``<name>-<ident>`` / ``<ident>``, or
        X-Localsb-Sandbox."""
        host = headers.get("host", "").strip().lower()
        if host.startswith("["):
            host = ""
        host = host.rsplit(":", 1)[0] if ":" in host else host
        label = host.split(".", 1)[0] if "." in host else ""
        candidates = []
        if label and not label.replace(".", "").isdigit():
            candidates.append("sbx_" + label.rsplit("-", 1)[-1])
        explicit = headers.get("x-localsb-sandbox", "").strip()
        if explicit:
            candidates.append(explicit if explicit.startswith("sbx_") else "sbx_" + explicit)
        for sid in candidates:
            row = self.store.one("SELECT * FROM sandboxes WHERE id=?", sid)
            if row is not None and row["status"] in LIVE and loads(row["spec"], {}).get("port"):
                return row
        return None

    def _init_pid(self, row) -> int | None:
        pid = row["init_pid"]
        if not pid:
            return None
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                ok = f"localsb-{self.tag}-{row['id']}" in fh.read()
        except OSError:
            return None
        if not ok or self.netns.same_as_ours(pid):
            return None
        return pid

    def _touch(self, row) -> None:
        """Traffic is activity (idle timeout), recorded at most every 5 s per sandbox."""
        now = time.monotonic()
        if now - self.touched.get(row["id"], 0) < 5.0:
            return
        self.touched[row["id"]] = now
        try:
            self.store.run("UPDATE sandboxes SET last_activity=? WHERE id=?", self.clock.now(), row["id"])
        except Exception:  # noqa: BLE001 - a busy database must not fail a request
            pass

    # connections -----------------------------------------------------------------------------------
    async def open_upstream(self, client: "_ClientSide", head: bytes) -> None:
        """Route a connection by its first request head; answer it ourselves or splice it to the
        sandbox's port."""
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers.setdefault(k.strip().lower().decode("latin-1"), v.strip().decode("latin-1"))
        row = self.route(headers)
        if row is None:
            return client.answer(404, "Not Found", "localsb gateway: no sandbox with an exposed port at "
                                                   f"{headers.get('host', '?')}")
        port = loads(row["spec"], {}).get("port")
        if row["status"] in ("paused", "suspended"):
            return client.answer(503, "Service Unavailable", f"localsb gateway: sandbox {row['id']} is paused; "
                                                             "resume it")
        pid = self._init_pid(row)
        upstream = None
        try:
            if pid is not None:
                upstream = self.netns.socket(pid)
        except OSError:
            upstream = None
        if upstream is None:
            return client.answer(404, "Not Found", f"localsb gateway: sandbox {row['id']} is not running")
        try:
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.sock_connect(upstream, ("127.0.0.1", port))
        except OSError:
            upstream.close()
            return client.answer(502, "Bad Gateway", f"localsb gateway: nothing listens on port {port} in "
                                                     f"sandbox {row['id']}")
        self._touch(row)
        if client.closed:
            upstream.close()
            return
        await self.loop.create_connection(lambda: _UpstreamSide(client), sock=upstream)


class _ClientSide:
    """asyncio Protocol of a client connection: buffer the first request head, then relay bytes
    both ways with the transports' own flow control (pause/resume reading on the other side)."""

    def __init__(self, gateway: HttpGateway):
        self.gateway = gateway
        self.buf = bytearray()
        self.peer = None         # the _UpstreamSide once connected
        self.routing = False
        self.closed = False
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timer = self.gateway.loop.call_later(60, self._head_timeout)

    def data_received(self, data):
        if self.peer is not None:
            self.peer.transport.write(data)
            return
        self.buf += data
        if self.routing:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > HttpGateway.HEAD_LIMIT:
                self.answer(431, "Request Header Fields Too Large", "localsb gateway: request head too large")
            return
        self.routing = True
        self.timer.cancel()
        self.transport.pause_reading()
        import asyncio
        task = asyncio.ensure_future(self.gateway.open_upstream(self, bytes(self.buf[:end + 4])))
        task.add_done_callback(self._routed)

    def _routed(self, task):
        exc = task.exception()
        if exc is not None:
            print(f"gateway: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.answer(502, "Bad Gateway", "localsb gateway: cannot reach the sandbox")

    def attached(self, peer):
        self.peer = peer
        if self.buf:
            peer.transport.write(bytes(self.buf))
            self.buf.clear()
        if self.eof and peer.transport.can_write_eof():
            peer.transport.write_eof()
        self.transport.resume_reading()

    def answer(self, status, reason, text):
        if not self.closed:
            self.transport.write(_response(status, reason, text))
            self.transport.close()

    def _head_timeout(self):
        if self.peer is None and not self.routing:
            self.answer(408, "Request Timeout", "localsb gateway: no request")

    def eof_received(self):
        self.eof = True
        if self.peer is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True   # keep the other direction open (half-close)

    def connection_lost(self, exc):
        self.closed = True
        self.timer.cancel()
        if self.peer is not None:
            self.peer.transport.close()

    def pause_writing(self):
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None:
            self.peer.transport.resume_reading()


class _UpstreamSide:
    def __init__(self, client: _ClientSide):
        self.client = client

    def connection_made(self, transport):
        self.transport = transport
        self.client.attached(self)

    def data_received(self, data):
        self.client.transport.write(data)

    def eof_received(self):
        if self.client.transport.can_write_eof():
            self.client.transport.write_eof()
        return True

    def connection_lost(self, exc):
        self.client.transport.close()

    def pause_writing(self):
        self.client.transport.pause_reading()

    def resume_writing(self):
        self.client.transport.resume_reading()


__all__ = ["Daemon", "http_gateway", "HttpGateway", "main"]
