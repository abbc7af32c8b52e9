"""Background jobs: started and stopped by the sandbox's supervisor, read from the store."""
from __future__ import annotations

from localsb.api import errors as E

from . import render
from .common import auto_resume, bounded, call, live_row, sandbox_row


class Jobs:
    def __init__(self, ctx, executions):
        self.ctx = ctx
        self.executions = executions

    def job_create(self, sandbox_id, command, *, org_id=None) -> dict:
        if not command or not all(isinstance(a, str) for a in command):
            raise E.ValidationError("No command given: use -- <command> [args...]")
        row = live_row(self.ctx, sandbox_id, org_id)
        auto_resume(self.ctx, row)
        return call(self.ctx, sandbox_id, {"op": "job_create", "command": list(command)})

    def _job_row(self, sandbox_id, job_id, org_id):
        sandbox_row(self.ctx, sandbox_id, org_id, include_deleted=True)
        row = self.ctx.store.one("SELECT * FROM jobs WHERE id=? AND sandbox_id=?", job_id, sandbox_id)
        if row is None:
            raise E.JobNotFound(job_id)
        return row

    def job_list(self, sandbox_id, *, limit=20, org_id=None) -> dict:
        sandbox_row(self.ctx, sandbox_id, org_id, include_deleted=True)
        limit = bounded(limit, 1, 100, "limit")
        rows = self.ctx.store.all("SELECT * FROM jobs WHERE sandbox_id=? ORDER BY seq DESC LIMIT ?", sandbox_id, limit)
        return {"jobs": [render.job_info(r) for r in rows]}

    def job_get(self, sandbox_id, job_id, *, org_id=None) -> dict:
        return render.job_info(self._job_row(sandbox_id, job_id, org_id))

    def job_destroy(self, sandbox_id, job_id, *, force=False, org_id=None) -> dict:
        row = self._job_row(sandbox_id, job_id, org_id)
        if row["status"] not in ("pending", "running"):
            return render.job_info(row)
        live_row(self.ctx, sandbox_id, org_id)
        return call(self.ctx, sandbox_id, {"op": "job_destroy", "job_id": job_id, "force": bool(force)}, timeout=60)

    def job_logs(self, sandbox_id, job_id, out, *, stream="stdout", follow=False, org_id=None) -> dict:
        row = self._job_row(sandbox_id, job_id, org_id)
        if stream not in ("stdout", "stderr"):
            raise E.ValidationError("stream must be stdout or stderr")
        self.executions._copy_output("job", job_id, stream, out, follow=follow)
        return {"jobId": job_id, "sandboxId": sandbox_id, "status": self._job_row(sandbox_id, job_id, org_id)["status"]
                if follow else row["status"]}
