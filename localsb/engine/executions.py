"""The executions part: commands run in a live sandbox (through its supervisor), and their output."""
from __future__ import annotations

import os
import threading
import time

from localsb.api import errors as E
from localsb.api.status import EXECUTION_TERMINAL
from localsb.api.units import parse_duration

from . import render
from .common import auto_resume, bounded, call, close_quiet, copy_to, fileno, live_row, sandbox_row
from .output import out_paths


class Executions:
    def __init__(self, ctx):
        self.ctx = ctx

    def sandbox_execute(self, sandbox_id, command, *, timeout=None, timestamps=False, stdout=None,
                        stderr=None, org_id=None) -> dict:
        if not command:
            raise E.ValidationError("No command given: use -- <command> [args...]")
        if timeout:
            parse_duration(timeout, "timeout")
        row = live_row(self.ctx, sandbox_id, org_id)
        resumed = auto_resume(self.ctx, row)
        fds, closers = [], []
        threads = []
        for stream in (stdout, stderr):
            fd = fileno(stream)
            if fd is None and stream is not None:
                r, w = os.pipe()
                t = threading.Thread(target=copy_to, args=(r, stream), daemon=True)
                t.start()
                threads.append(t)
                closers.append(w)
                fd = w
            fds.append(fd)
        send = [fd for fd in fds if fd is not None]
        msg = {"op": "exec", "command": list(command), "timeout": timeout, "timestamps": bool(timestamps),
               "fds": [fd is not None for fd in fds]}
        try:
            info = call(self.ctx, sandbox_id, msg, fds=send)
        finally:
            for w in closers:
                close_quiet(w)
            for t in threads:
                t.join(5)
        if resumed:
            info["autoResumed"] = True
        return info

    def execute_start(self, sandbox_id, command, *, timeout=None, timestamps=False, org_id=None) -> dict:
        if not command or not all(isinstance(a, str) for a in command):
            raise E.ValidationError("command must be a non-empty list of strings")
        if timeout:
            parse_duration(timeout, "timeout")
        row = live_row(self.ctx, sandbox_id, org_id)
        resumed = auto_resume(self.ctx, row)
        info = call(self.ctx, sandbox_id, {"op": "exec_start", "command": list(command), "timeout": timeout,
                                       "timestamps": bool(timestamps)})
        if resumed:
            info["autoResumed"] = True
        return info

    def execution_list(self, sandbox_id, *, limit=50, org_id=None) -> dict:
        row = sandbox_row(self.ctx, sandbox_id, org_id, include_deleted=True)
        limit = bounded(limit, 1, 1000, "limit")
        rows = self.ctx.store.all("SELECT * FROM executions WHERE sandbox_id=? ORDER BY seq DESC LIMIT ?", row["id"], limit)
        return {"executions": [render.execution_info(r) for r in rows]}

    def _exec_row(self, execution_id, org_id=None):
        r = self.ctx.store.one("SELECT * FROM executions WHERE id=?", execution_id)
        if r is None or (org_id and r["org_id"] != org_id):
            raise E.ExecutionNotFound(execution_id)
        return r

    def execution_get(self, execution_id, *, wait=None, org_id=None) -> dict:
        r = self._exec_row(execution_id, org_id)
        if wait:
            secs = wait if isinstance(wait, (int, float)) else parse_duration(wait, "wait")
            deadline = time.monotonic() + min(float(secs), 300.0)
            while r["status"] not in EXECUTION_TERMINAL and time.monotonic() < deadline:
                time.sleep(0.01)
                r = self._exec_row(execution_id, org_id)
        return render.execution_info(r)

    def execution_output(self, execution_id, stream, out, *, org_id=None) -> None:
        self._exec_row(execution_id, org_id)
        self._copy_output("execution", execution_id, stream, out)

    def output_path(self, kind: str, ident: str, stream: str) -> str:
        so, se, _ = out_paths(self.ctx.out_dir(), ident)
        return so if stream == "stdout" else se

    def output_done(self, kind: str, ident: str) -> bool:
        return os.path.exists(out_paths(self.ctx.out_dir(), ident)[2])

    def _copy_output(self, kind, ident, stream, out, follow=False):
        path = self.output_path(kind, ident, stream)
        pos = 0
        while True:
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    while True:
                        chunk = fh.read(65536)
                        if not chunk:
                            break
                        out.write(chunk)
                        pos += len(chunk)
            except FileNotFoundError:
                pass
            if not follow or self.output_done(kind, ident):
                if follow:
                    # one last read after done: the producer may have written just before marking
                    try:
                        with open(path, "rb") as fh:
                            fh.seek(pos)
                            out.write(fh.read())
                    except FileNotFoundError:
                        pass
                break
            time.sleep(0.05)
        try:
            out.flush()
        except Exception:
            pass
