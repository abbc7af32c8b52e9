"""The Backend ABC: one method per hosted operation, one name through every layer.

Every method returns the hosted ``data`` payload as a dict with the hosted keys (see models.py),
or raises an error of localsb.api.errors. Methods that stream (run, execute, fs reads and writes,
job logs) take binary file objects. ``org_id`` scopes the call the way ``?orgId=`` does on the wire.

Implementations: ``localsb.engine.Engine`` (in-process), ``localsb.backends.cloud.CloudBackend``
(HTTP client of the hosted API, e.g. mockcloud).
"""
from __future__ import annotations

import abc

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms)
if TYPE_CHECKING:  # annotations only: the CLI's commands that create nothing never load specs.py
    from typing import BinaryIO

    from .specs import CreateSpec


class Backend(abc.ABC):
    name = "abstract"

    # sandboxes -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def sandbox_create(self, spec: CreateSpec) -> dict:
        """POST /sandbox (interactive). -> {sandboxId, status, url?, ...stream urls}"""

    @abc.abstractmethod
    def sandbox_run(self, spec: CreateSpec, stdin: BinaryIO | None, stdout: BinaryIO | None,
                    stderr: BinaryIO | None) -> dict:
        """One-shot: create, run spec.command streaming to stdout/stderr, destroy.
        -> {sandboxId, exitCode, durationMs} (exitCode is 124 on timeout)."""

    @abc.abstractmethod
    def sandbox_execute(self, sandbox_id: str, command: list[str], *, timeout: str | None = None,
                        timestamps: bool = False, stdout: BinaryIO | None = None,
                        stderr: BinaryIO | None = None, org_id: str | None = None) -> dict:
        """POST /sandbox/{id}/execute and wait. -> ExecutionInfo + autoResumed?"""

    @abc.abstractmethod
    def sandbox_list(self, *, org_id=None, project_id=None, name=None, mode=None, status=None,
                     snapshot_id=None, limit=50, offset=0, sort="created", direction="desc",
                     include_deleted=False, deleted_only=False, live=False) -> dict:
        """-> {sandboxes: [SandboxSummary], total} (SandboxSummary keys as GET /cli/sandbox).
        ``total`` counts every match of all the filters, before paging."""

    @abc.abstractmethod
    def sandbox_get(self, sandbox_id: str, *, org_id=None, include_deleted=False) -> dict:
        """-> SandboxInfo (reference §3.1)."""

    @abc.abstractmethod
    def sandbox_destroy(self, sandbox_id: str, *, org_id=None) -> None:
        """DELETE /sandbox/{id}."""

    @abc.abstractmethod
    def sandbox_pause(self, sandbox_id: str, *, org_id=None) -> dict:
        """-> {sandboxId, status, terminatesAt?}"""

    @abc.abstractmethod
    def sandbox_resume(self, sandbox_id: str, *, org_id=None) -> dict:
        """-> {sandboxId, status}"""

    def sandbox_wait(self, sandbox_id: str, statuses, *, wait_ms: int = 60000, org_id=None) -> dict:
        """Return SandboxInfo once its status is one of ``statuses`` or ``wait_ms`` has passed
        (GET /sandbox/{id}?waitForStatus=a,b&waitMs=n). Used by ``create --wait`` and
        ``get --wait-for-status``. This default polls sandbox_get every 100 ms; a backend with a
        long-poll or a state-change notification should override it."""
        import time
        deadline = time.monotonic() + wait_ms / 1000.0
        while True:
            info = self.sandbox_get(sandbox_id, org_id=org_id, include_deleted=True)
            if info.get("status") in statuses or time.monotonic() >= deadline:
                return info
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    @abc.abstractmethod
    def sandbox_env(self, sandbox_id: str, set_vars: dict, delete: list, *, org_id=None) -> dict:
        """PATCH /sandbox/env/{id}. -> {env}"""

    # executions ----------------------------------------------------------------------------------
    def execution_list(self, sandbox_id: str, *, limit=50, org_id=None) -> dict:
        raise NotImplementedError

    def execution_get(self, execution_id: str, *, wait: str | None = None, org_id=None) -> dict:
        raise NotImplementedError

    def execution_output(self, execution_id: str, stream: str, out: BinaryIO, *, org_id=None) -> None:
        raise NotImplementedError

    # jobs ----------------------------------------------------------------------------------------
    def job_create(self, sandbox_id: str, command: list[str], *, org_id=None) -> dict:
        raise NotImplementedError

    def job_list(self, sandbox_id: str, *, limit=20, org_id=None) -> dict:
        raise NotImplementedError

    def job_get(self, sandbox_id: str, job_id: str, *, org_id=None) -> dict:
        raise NotImplementedError

    def job_destroy(self, sandbox_id: str, job_id: str, *, force=False, org_id=None) -> dict:
        raise NotImplementedError

    def job_logs(self, sandbox_id: str, job_id: str, out: BinaryIO, *, stream="stdout",
                 follow=False, org_id=None) -> dict:
        raise NotImplementedError

    # events, stats, runtimes ---------------------------------------------------------------------
    def events_list(self, sandbox_id: str, *, limit=50, direction="asc", org_id=None) -> dict:
        raise NotImplementedError

    def stats(self, *, org_id=None, start=None, end=None) -> dict:
        raise NotImplementedError

    def runtime_list(self, *, limit=50, offset=0, sort="created", direction="desc", org_id=None) -> dict:
        raise NotImplementedError

    def runtime_build(self, name: str) -> dict:
        """Build runtime ``name`` (e.g. python:3.14) now, so the first sandbox on it needs no
        build; a no-op when it is built already. -> Runtime (reference §3.7) of the built runtime.
        Local backends only: the hosted service has no such operation (``runtime build``)."""
        raise NotImplementedError

    # checkpoints ---------------------------------------------------------------------------------
    def checkpoint_create(self, sandbox_id: str, name: str, *, org_id=None) -> dict:
        raise NotImplementedError

    def checkpoint_list(self, sandbox_id: str, *, org_id=None) -> dict:
        raise NotImplementedError

    def checkpoint_restore(self, sandbox_id: str, ref: str, *, org_id=None) -> dict:
        raise NotImplementedError

    def checkpoint_delete(self, sandbox_id: str, ref: str, *, org_id=None) -> None:
        raise NotImplementedError

    # snapshots -----------------------------------------------------------------------------------
    def snapshot_create(self, sandbox_id: str, *, name=None, description=None, tag=None,
                        public=False, org_id=None) -> dict:
        raise NotImplementedError

    def snapshot_list(self, *, sandbox_id=None, limit=50, offset=0, sort="created",
                      direction="desc", org_id=None) -> dict:
        raise NotImplementedError

    def snapshot_get(self, snapshot_id: str, *, org_id=None) -> dict:
        raise NotImplementedError

    def snapshot_tag(self, snapshot_id: str, tag: str | None, *, org_id=None) -> dict:
        raise NotImplementedError

    def snapshot_delete(self, snapshot_id: str, *, org_id=None) -> None:
        raise NotImplementedError

    def snapshot_build(self, build, *, org_id=None) -> dict:
        raise NotImplementedError

    # files ---------------------------------------------------------------------------------------
    def fs_write(self, sandbox_id: str, files: list, *, org_id=None) -> dict:
        raise NotImplementedError

    def fs_write_stream(self, sandbox_id: str, path: str, src: BinaryIO, *, org_id=None) -> int:
        """Write one file from a stream; returns its size. The hosted API takes files as base64 in
        JSON, so the default reads the whole stream; backends that can stream override it."""
        from .specs import FileSpec
        content = src.read()
        self.fs_write(sandbox_id, [FileSpec(path, content)], org_id=org_id)
        return len(content)

    def fs_read(self, sandbox_id: str, path: str, out: BinaryIO, *, org_id=None) -> int:
        raise NotImplementedError

    def fs_list(self, sandbox_id: str, path: str = ".", *, org_id=None) -> dict:
        raise NotImplementedError

    def fs_mkdir(self, sandbox_id: str, path: str, *, recursive=False, org_id=None) -> None:
        raise NotImplementedError

    def fs_rm(self, sandbox_id: str, path: str, *, org_id=None) -> bool:
        raise NotImplementedError

    def fs_rmdir(self, sandbox_id: str, path: str, *, recursive=False, org_id=None) -> bool:
        raise NotImplementedError

    def fs_download(self, sandbox_id: str, path: str, fmt: str, out: BinaryIO, *, org_id=None) -> int:
        raise NotImplementedError

    def fs_upload(self, sandbox_id: str, path: str, fmt: str, src: BinaryIO, *, org_id=None) -> None:
        raise NotImplementedError

    # shell access and diagnostics ------------------------------------------------------------------
    def ssh_command(self, sandbox_id: str, command: str | None = None, *, org_id=None) -> list[str]:
        """-> the argv that opens an interactive shell in the sandbox, or runs ``command`` (one
        shell string) in it, attached to the caller's terminal. The CLI runs or shows it
        (``cloud ssh <id> [command] [--show]``); hosted: ``ssh <id>@ion-<region>.agentuity.cloud``."""
        raise NotImplementedError

    def doctor(self) -> dict:
        """-> {check: value} describing what this backend can do here (storage driver and its
        cost, cgroup layout, which limits are enforced, namespaces, runtimes built, server URL
        ...); values are str, int, bool, list or dict. Shown by ``localsb doctor``."""
        raise NotImplementedError

    def close(self) -> None:
        pass
