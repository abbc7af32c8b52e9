"""The client side of a sandbox supervisor's socket: one JSON request (fds by SCM_RIGHTS), one answer."""
from __future__ import annotations

import json
import os
import socket

from localsb.api import errors as E


def call(sock_path: str, msg: dict, fds=(), timeout=None) -> dict:
    """Send one request and wait for its answer; raise the error the supervisor reported."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            s.connect(sock_path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise E.SandboxTerminated(os.path.basename(sock_path)[:-5], "failed") from None
        if timeout:
            s.settimeout(timeout)
        data = (json.dumps(msg) + "\n").encode()
        if fds:
            socket.send_fds(s, [data], list(fds))
        else:
            s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise E.HostError("the sandbox supervisor closed the connection without answering")
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if reply.get("ok"):
        return reply.get("result") or {}
    raise E.from_code(reply.get("code"), reply.get("message") or "supervisor error")
