"""`sandbox job` (jobs): background jobs: create, list, get, destroy, logs."""
from __future__ import annotations

import argparse

from ..tree import arg, command, group, int_range, opt
from ._common import PREFIX


def register(sub):
    group(sub, "job", aliases=["jobs"], help="Manage background jobs in a sandbox",
          examples=[f"{PREFIX} job create sbx_abc123 -- bun run build",
                    f"{PREFIX} job list sbx_abc123",
                    f"{PREFIX} job get sbx_abc123 job_xyz789",
                    f"{PREFIX} job destroy sbx_abc123 job_xyz789 --force",
                    f"{PREFIX} job logs sbx_abc123 job_xyz789 --follow"],
          populate=_commands)


def _commands(children):
    p = command(children, "create", aliases=["new"], help="Start a command in the background", handler=create,
                takes_command=True, usage="%(prog)s <sandbox-id> [options] -- <command> [args...]",
                examples=[(f"{PREFIX} job create sbx_abc123 -- bun run build", "Create a background job"),
                          (f"{PREFIX} job create sbx_abc123 -- npm install", "Run npm install in background")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")

    p = command(children, "list", aliases=["ls"], help="List the jobs of a sandbox", handler=list_, dry_run=True,
                examples=[f"{PREFIX} job list sbx_abc123", f"{PREFIX} job list sbx_abc123 --limit 10"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--limit", type=int_range(1, 100, "limit"), default=20, help="Max results (at most 100)")

    p = command(children, "get", aliases=["show", "info"], help="Get job status", handler=get, dry_run=True,
                examples=[f"{PREFIX} job get sbx_abc123 job_xyz789"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "job_id", metavar="job-id", help="Job ID")

    p = command(children, "destroy", aliases=["stop", "terminate"], help="Stop a job", handler=destroy,
                examples=[(f"{PREFIX} job destroy sbx_abc123 job_xyz789", "Graceful stop (SIGTERM)"),
                          (f"{PREFIX} job destroy sbx_abc123 job_xyz789 --force", "Force kill (SIGKILL)")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "job_id", metavar="job-id", help="Job ID")
    opt(p, "--force", action="store_true", help="Force kill with SIGKILL instead of SIGTERM")

    p = command(children, "logs", aliases=["log"], help="Show the output of a job", handler=logs, dry_run=True,
                examples=[f"{PREFIX} job logs sbx_abc123 job_xyz789",
                          f"{PREFIX} job logs sbx_abc123 job_xyz789 --stderr --no-timestamps",
                          f"{PREFIX} job logs sbx_abc123 job_xyz789 --follow --grep error --tail 20"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "job_id", metavar="job-id", help="Job ID")
    opt(p, "--stderr", action="store_true", help="Show stderr instead of stdout")
    opt(p, "--follow", action="store_true", help="Keep streaming until the job ends")
    opt(p, "--timestamps", action=argparse.BooleanOptionalAction, default=True,
        help="Prefix each line with the local time it was read (HH:MM:SS)")
    opt(p, "--grep", metavar="REGEX", help="Only lines matching this regular expression (case-insensitive)")
    opt(p, "--tail", metavar="N", type=int_range(1, None, "tail"), help="Only the last N lines")


def _cmd(job) -> str:
    c = job.get("command")
    return " ".join(c) if isinstance(c, list) else str(c or "")


def create(ctx):
    a, out = ctx.args, ctx.out
    j = ctx.backend.job_create(a.sandbox_id, a.command, org_id=ctx.org_id)
    if out.json_mode:
        out.json(j)
        return 0
    out.success(f"Created job {j.get('jobId')}")
    out.info(f"Status: {j.get('status')}")
    return 0


def list_(ctx):
    a, out = ctx.args, ctx.out
    jobs = ctx.backend.job_list(a.sandbox_id, limit=a.limit, org_id=ctx.org_id).get("jobs") or []
    if out.json_mode:
        out.json({"jobs": jobs})
        return 0
    if not jobs:
        out.info("No jobs found")
        return 0
    out.info(f"Jobs for sandbox {a.sandbox_id}:")
    out.line()
    for j in jobs:
        out.line(f"  {j.get('jobId')} {out.status_color(j.get('status', ''))} {_cmd(j)}")
        if j.get("exitCode") is not None:
            out.line(f"    Exit code: {j['exitCode']}")
        if j.get("startedAt"):
            out.line(f"    Started: {j['startedAt']}")
        if j.get("completedAt"):
            out.line(f"    Completed: {j['completedAt']}")
    return 0


def get(ctx):
    a, out = ctx.args, ctx.out
    j = ctx.backend.job_get(a.sandbox_id, a.job_id, org_id=ctx.org_id)
    if out.json_mode:
        out.json(j)
        return 0
    out.info(f"Job {j.get('jobId', a.job_id)}")
    out.line()
    for label, value in (("Status", j.get("status")), ("Sandbox", j.get("sandboxId")), ("Command", _cmd(j)),
                         ("Exit code", j.get("exitCode")), ("Started", j.get("startedAt")),
                         ("Completed", j.get("completedAt")), ("Error", j.get("error")),
                         ("Stdout", j.get("stdoutStreamUrl")), ("Stderr", j.get("stderrStreamUrl"))):
        if value not in (None, ""):
            out.line(f"  {label + ':':<12}{value}")
    return 0


def destroy(ctx):
    a, out = ctx.args, ctx.out
    j = ctx.backend.job_destroy(a.sandbox_id, a.job_id, force=a.force, org_id=ctx.org_id)
    if out.json_mode:
        out.json(j)
    elif j.get("status") == "cancelled":
        out.success(f"Job {a.job_id} terminated")
    else:
        out.info(f"Job {a.job_id} status: {j.get('status')}")
    return 0


class LineFilter:
    """The sink job logs hands the backend: splits lines, filters (--grep), stamps, keeps --tail."""

    def __init__(self, emit, stream: str, *, timestamps: bool, grep: str | None, tail: int | None):
        import re
        from collections import deque
        self.emit, self.stream, self.timestamps = emit, stream, timestamps
        self.grep = re.compile(grep, re.IGNORECASE) if grep else None
        self.kept = deque(maxlen=tail) if tail else None
        self.partial = b""
        self.bytes_read = 0

    def write(self, data) -> int:
        data = bytes(data)
        self.bytes_read += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self._line(line)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = b""
        if self.kept is not None:
            for item in self.kept:
                self.emit(*item)
            self.kept.clear()

    def _line(self, raw: bytes) -> None:
        import time
        text = raw.decode("utf-8", "replace")
        if self.grep and not self.grep.search(text):
            return
        item = (time.time(), text)
        if self.kept is not None:
            self.kept.append(item)
        else:
            self.emit(*item)


def logs(ctx):
    import datetime as dt
    import json as _json
    import time

    from localsb.api.errors import ValidationError

    a, out = ctx.args, ctx.out
    stream = "stderr" if a.stderr else "stdout"
    if a.grep:
        import re
        try:
            re.compile(a.grep)
        except re.error as exc:
            raise ValidationError(f"Invalid --grep expression '{a.grep}': {exc}") from None
    job = ctx.backend.job_get(a.sandbox_id, a.job_id, org_id=ctx.org_id)

    def emit(ts, text):
        if out.json_mode:
            stamp = dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds")
            out.write(_json.dumps({"timestamp": stamp.replace("+00:00", "Z"), "stream": stream,
                                   "message": text}, ensure_ascii=False,
                                  separators=(",", ":")) + "\n")  # JSON.stringify, compact
        elif a.timestamps:
            out.write(time.strftime("%H:%M:%S ", time.localtime(ts)) + text + "\n")
        else:
            out.write(text + "\n")

    if not out.json_mode:
        out.info(f"Streaming {stream} for job {a.job_id} (status: {job.get('status')})")
    sink = LineFilter(emit, stream, timestamps=a.timestamps, grep=a.grep, tail=a.tail)
    try:
        result = ctx.backend.job_logs(a.sandbox_id, a.job_id, sink, stream=stream, follow=a.follow,
                                      org_id=ctx.org_id) or {}
    finally:
        sink.close()
    if out.json_mode:
        out.json({"jobId": a.job_id, "sandboxId": a.sandbox_id, "status": result.get("status", job.get("status")),
                  "bytesRead": sink.bytes_read})
    return 0
