"""Execution and job output: pumped from pipes to the client's fds and to durable files.

Files live in ``<state>/out/<id>.stdout|.stderr``, 0600 (output holds what commands print,
secrets included); ``<id>.done`` marks that the producer has finished (readers such as mockcloud's
stream endpoints tail until it appears). Past
OUTPUT_LIMIT bytes per stream the file stops growing and the record says ``outputTruncated``;
the client still receives everything.
"""
from __future__ import annotations

import errno
import os
import selectors
import time

from localsb.linux.private import open_private, private_opener

OUTPUT_LIMIT = 16 * 1024 * 1024
CHUNK = 65536


def out_paths(out_dir: str, ident: str) -> tuple[str, str, str]:
    base = os.path.join(out_dir, ident)
    return base + ".stdout", base + ".stderr", base + ".done"


def _ts() -> bytes:
    t = time.time()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z ").encode()


class _Stream:
    def __init__(self, rfd, file_path, dest_fd, timestamps):
        self.rfd = rfd
        self.file = open(file_path, "ab", buffering=0, opener=private_opener) if file_path else None
        self.dest = dest_fd
        self.timestamps = timestamps
        self.at_line_start = True
        self.written = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        if self.timestamps:
            data = self._stamp(data)
        if self.file is not None:
            room = OUTPUT_LIMIT - self.written
            if room > 0:
                part = data[:room]
                self.file.write(part)
                self.written += len(part)
            if len(data) > room:
                self.truncated = True
        if self.dest is not None and not isinstance(self.dest, int):
            self.dest.write(data)
        elif self.dest is not None:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self.dest, view)
                    view = view[n:]
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                    self.dest = None  # the client went away: keep recording
                else:
                    raise

    def _stamp(self, data: bytes) -> bytes:
        out = []
        for line in data.splitlines(keepends=True):
            if self.at_line_start:
                out.append(_ts())
            out.append(line)
            self.at_line_start = line.endswith(b"\n")
        return b"".join(out)

    def close(self):
        if self.file is not None:
            self.file.close()


def pump(pipes, deadline_cb=None, done_cb=None, grace: float = 0.2) -> dict:
    """Copy each (read_fd, file_path, dest_fd, timestamps) until EOF on all of them.

    ``done_cb()`` returns True once the producer has exited: then the pipes are drained for at
    most ``grace`` seconds (a background process may keep them open forever).
    ``deadline_cb()`` is called about every 50 ms (timeouts). Returns {'truncated': bool}.
    """
    sel = selectors.DefaultSelector()
    streams = []
    for rfd, path, dest, ts in pipes:
        s = _Stream(rfd, path, dest, ts)
        streams.append(s)
        os.set_blocking(rfd, False)
        sel.register(rfd, selectors.EVENT_READ, s)
    open_count = len(streams)
    drain_until = None
    try:
        while open_count:
            timeout = 0.05
            if drain_until is not None:
                timeout = max(0.0, min(timeout, drain_until - time.monotonic()))
            events = sel.select(timeout)
            for key, _ in events:
                s = key.data
                try:
                    data = os.read(s.rfd, CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(s.rfd)
                    open_count -= 1
                    continue
                s.feed(data)
            if deadline_cb is not None:
                deadline_cb()
            if drain_until is None and done_cb is not None and done_cb():
                drain_until = time.monotonic() + grace
            if drain_until is not None and time.monotonic() >= drain_until and not events:
                break
    finally:
        sel.close()
        for s in streams:
            s.close()
            try:
                os.close(s.rfd)
            except OSError:
                pass
    return {"truncated": any(s.truncated for s in streams)}


def mark_done(done_path: str) -> None:
    fd = open_private(done_path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)


def read_output(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b""
