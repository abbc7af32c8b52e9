"""The engine: a facade over the parts that run sandboxes on the local machine (the Backend ABC).

``Engine`` builds one ``Context`` (store, clock, pool, cgroup driver, paths: context.py) and hands
it to its parts, each a class of its own module that never imports this one:

    sandboxes.py    Sandboxes     create (interactive or one-shot run), list, get, pause, destroy
    executions.py   Executions    exec through the supervisor, executions and their output
    jobs.py         Jobs          background jobs
    checkpoints.py  Checkpoints   disk checkpoints and restore
    snapshots.py    Snapshots     snapshots of a sandbox's volume
    builds.py       Builds        `snapshot build` (init, upload, finalize)
    fsops.py        Fs            the fs commands
    access.py       Network, Ssh  port URLs; `cloud ssh`, SSH keys

What several parts share (rows, events, supervisor calls, teardown, repair) is common.py, below
them. Every Backend method here is one line handing the call to its part.
"""
from __future__ import annotations

import os
import time

from localsb.api import errors as E
from localsb.api.backend import Backend

TYPE_CHECKING = False  # annotations only: exec, get, list, ... never load specs.py (dataclasses)
if TYPE_CHECKING:
    from localsb.api.specs import CreateSpec

from . import runtimes
from .access import Network, Ssh
from .builds import Builds
from .checkpoints import Checkpoints
from .clock import Clock
from .common import DEFAULT_ORG, bounded, default_limits, default_state_dir, event, repair
from .context import Context
from .executions import Executions
from .fsops import Fs
from .jobs import Jobs
from .sandboxes import Sandboxes
from .snapshots import Snapshots


class Engine(Backend):
    name = "local"

    def __init__(self, state_dir: str | None = None, clock: Clock | None = None, repair: bool = True):
        self.ctx = ctx = Context(state_dir or default_state_dir(), clock)
        self.checkpoints = Checkpoints(ctx)
        self.snapshots = Snapshots(ctx, self.checkpoints)
        self.builds = Builds(ctx, self.snapshots)
        self.network = Network(ctx)
        self.ssh = Ssh(ctx)
        self.sandboxes = Sandboxes(ctx, self.snapshots, self.network)
        self.executions = Executions(ctx)
        self.jobs = Jobs(ctx, self.executions)
        self.fs = Fs(ctx)
        if repair:
            self.repair()

    # the context, as callers (mockcloud, the CLI, tests) read it -----------------------------------
    @property
    def state_dir(self) -> str:
        return self.ctx.state_dir

    @property
    def store(self):
        return self.ctx.store

    @property
    def clock(self):
        return self.ctx.clock

    @property
    def tag(self) -> str:
        return self.ctx.tag

    @property
    def org_names(self) -> dict:
        return self.ctx.org_names

    @org_names.setter
    def org_names(self, value: dict) -> None:
        self.ctx.org_names = value

    @property
    def pool(self):
        return self.ctx.pool

    @property
    def cgroups(self):
        return self.ctx.cgroups

    def out_dir(self) -> str:
        return self.ctx.out_dir()

    def sock_path(self, sandbox_id: str) -> str:
        return self.ctx.sock_path(sandbox_id)

    def cgroup_name(self, sandbox_id: str) -> str:
        return self.ctx.cgroup_name(sandbox_id)

    def event(self, sandbox_id: str, org_id: str, type_: str, payload: dict | None = None) -> None:
        event(self.ctx, sandbox_id, org_id, type_, payload)

    def repair(self) -> list:
        """Finish what a killed process left: sandboxes whose creator or supervisor is gone."""
        return repair(self.ctx)

    # sandboxes (sandboxes.py) -------------------------------------------------------------------
    def sandbox_create(self, spec: CreateSpec, stdin: bytes | None = None, stdin_path: str | None = None,
                       stdin_done_path: str | None = None) -> dict:
        return self.sandboxes.sandbox_create(spec, stdin, stdin_path, stdin_done_path)

    def sandbox_run(self, spec: CreateSpec, stdin=None, stdout=None, stderr=None) -> dict:
        return self.sandboxes.sandbox_run(spec, stdin, stdout, stderr)

    def sandbox_list(self, *, org_id=None, project_id=None, name=None, mode=None, status=None,
                     snapshot_id=None, limit=50, offset=0, sort="created", direction="desc",
                     include_deleted=False, deleted_only=False, live=False) -> dict:
        return self.sandboxes.sandbox_list(org_id=org_id, project_id=project_id, name=name, mode=mode,
                                           status=status, snapshot_id=snapshot_id, limit=limit, offset=offset,
                                           sort=sort, direction=direction, include_deleted=include_deleted,
                                           deleted_only=deleted_only, live=live)

    def sandbox_get(self, sandbox_id, *, org_id=None, include_deleted=False) -> dict:
        return self.sandboxes.sandbox_get(sandbox_id, org_id=org_id, include_deleted=include_deleted)

    def sandbox_status(self, sandbox_id, *, wait_for=None, wait_ms=None, org_id=None) -> dict:
        return self.sandboxes.sandbox_status(sandbox_id, wait_for=wait_for, wait_ms=wait_ms, org_id=org_id)

    def sandbox_destroy(self, sandbox_id, *, org_id=None) -> None:
        return self.sandboxes.sandbox_destroy(sandbox_id, org_id=org_id)

    def sandbox_pause(self, sandbox_id, *, org_id=None) -> dict:
        return self.sandboxes.sandbox_pause(sandbox_id, org_id=org_id)

    def sandbox_resume(self, sandbox_id, *, org_id=None) -> dict:
        return self.sandboxes.sandbox_resume(sandbox_id, org_id=org_id)

    def sandbox_env(self, sandbox_id, set_vars, delete, *, org_id=None) -> dict:
        return self.sandboxes.sandbox_env(sandbox_id, set_vars, delete, org_id=org_id)

    def events_list(self, sandbox_id, *, limit=50, direction="asc", org_id=None) -> dict:
        return self.sandboxes.events_list(sandbox_id, limit=limit, direction=direction, org_id=org_id)

    def stats(self, *, org_id=None, start=None, end=None) -> dict:
        return self.sandboxes.stats(org_id=org_id, start=start, end=end)

    # executions (executions.py) -----------------------------------------------------------------
    def sandbox_execute(self, sandbox_id, command, *, timeout=None, timestamps=False, stdout=None,
                        stderr=None, org_id=None) -> dict:
        return self.executions.sandbox_execute(sandbox_id, command, timeout=timeout, timestamps=timestamps,
                                               stdout=stdout, stderr=stderr, org_id=org_id)

    def execute_start(self, sandbox_id, command, *, timeout=None, timestamps=False, org_id=None) -> dict:
        return self.executions.execute_start(sandbox_id, command, timeout=timeout, timestamps=timestamps,
                                             org_id=org_id)

    def execution_list(self, sandbox_id, *, limit=50, org_id=None) -> dict:
        return self.executions.execution_list(sandbox_id, limit=limit, org_id=org_id)

    def execution_get(self, execution_id, *, wait=None, org_id=None) -> dict:
        return self.executions.execution_get(execution_id, wait=wait, org_id=org_id)

    def execution_output(self, execution_id, stream, out, *, org_id=None) -> None:
        return self.executions.execution_output(execution_id, stream, out, org_id=org_id)

    def output_path(self, kind: str, ident: str, stream: str) -> str:
        return self.executions.output_path(kind, ident, stream)

    def output_done(self, kind: str, ident: str) -> bool:
        return self.executions.output_done(kind, ident)

    # jobs (jobs.py) -----------------------------------------------------------------------------
    def job_create(self, sandbox_id, command, *, org_id=None) -> dict:
        return self.jobs.job_create(sandbox_id, command, org_id=org_id)

    def job_list(self, sandbox_id, *, limit=20, org_id=None) -> dict:
        return self.jobs.job_list(sandbox_id, limit=limit, org_id=org_id)

    def job_get(self, sandbox_id, job_id, *, org_id=None) -> dict:
        return self.jobs.job_get(sandbox_id, job_id, org_id=org_id)

    def job_destroy(self, sandbox_id, job_id, *, force=False, org_id=None) -> dict:
        return self.jobs.job_destroy(sandbox_id, job_id, force=force, org_id=org_id)

    def job_logs(self, sandbox_id, job_id, out, *, stream="stdout", follow=False, org_id=None) -> dict:
        return self.jobs.job_logs(sandbox_id, job_id, out, stream=stream, follow=follow, org_id=org_id)

    # checkpoints (checkpoints.py) ---------------------------------------------------------------
    def checkpoint_create(self, sandbox_id, name, *, org_id=None) -> dict:
        return self.checkpoints.checkpoint_create(sandbox_id, name, org_id=org_id)

    def checkpoint_list(self, sandbox_id, *, org_id=None) -> dict:
        return self.checkpoints.checkpoint_list(sandbox_id, org_id=org_id)

    def checkpoint_restore(self, sandbox_id, ref, *, org_id=None) -> dict:
        return self.checkpoints.checkpoint_restore(sandbox_id, ref, org_id=org_id)

    def checkpoint_delete(self, sandbox_id, ref, *, org_id=None) -> None:
        return self.checkpoints.checkpoint_delete(sandbox_id, ref, org_id=org_id)

    # snapshots (snapshots.py) -------------------------------------------------------------------
    def resolve_snapshot(self, ref: str, org_id=None):
        return self.snapshots.resolve_snapshot(ref, org_id)

    def snapshot_create(self, sandbox_id, *, name=None, description=None, tag=None, public=False,
                        org_id=None) -> dict:
        return self.snapshots.snapshot_create(sandbox_id, name=name, description=description, tag=tag,
                                              public=public, org_id=org_id)

    def snapshot_list(self, *, sandbox_id=None, limit=50, offset=0, sort="created", direction="desc",
                      org_id=None) -> dict:
        return self.snapshots.snapshot_list(sandbox_id=sandbox_id, limit=limit, offset=offset, sort=sort,
                                            direction=direction, org_id=org_id)

    def snapshot_get(self, snapshot_id, *, org_id=None) -> dict:
        return self.snapshots.snapshot_get(snapshot_id, org_id=org_id)

    def snapshot_tag(self, snapshot_id, tag, *, org_id=None) -> dict:
        return self.snapshots.snapshot_tag(snapshot_id, tag, org_id=org_id)

    def snapshot_delete(self, snapshot_id, *, org_id=None) -> None:
        return self.snapshots.snapshot_delete(snapshot_id, org_id=org_id)

    def snapshot_files(self, row) -> list:
        return self.snapshots.snapshot_files(row)

    # builds (builds.py) -------------------------------------------------------------------------
    def snapshot_build_init(self, body: dict, *, org_id=None) -> dict:
        return self.builds.snapshot_build_init(body, org_id=org_id)

    def snapshot_build_upload(self, snapshot_id: str, src, *, org_id=None, limit: int = 8 << 30) -> dict:
        return self.builds.snapshot_build_upload(snapshot_id, src, org_id=org_id, limit=limit)

    def snapshot_build_finalize(self, snapshot_id: str, body: dict, *, org_id=None) -> dict:
        return self.builds.snapshot_build_finalize(snapshot_id, body, org_id=org_id)

    def snapshot_build(self, build, *, org_id=None) -> dict:
        return self.builds.snapshot_build(build, org_id=org_id)

    def snapshot_env(self, snapshot_id) -> dict:
        return self.builds.snapshot_env(snapshot_id)

    # fs (fsops.py) ------------------------------------------------------------------------------
    def fs_write(self, sandbox_id, files_, *, org_id=None) -> dict:
        return self.fs.fs_write(sandbox_id, files_, org_id=org_id)

    def fs_write_stream(self, sandbox_id, path, src, *, org_id=None) -> int:
        return self.fs.fs_write_stream(sandbox_id, path, src, org_id=org_id)

    def fs_read(self, sandbox_id, path, out, *, org_id=None) -> int:
        return self.fs.fs_read(sandbox_id, path, out, org_id=org_id)

    def fs_list(self, sandbox_id, path=".", *, org_id=None) -> dict:
        return self.fs.fs_list(sandbox_id, path, org_id=org_id)

    def fs_mkdir(self, sandbox_id, path, *, recursive=False, org_id=None) -> None:
        return self.fs.fs_mkdir(sandbox_id, path, recursive=recursive, org_id=org_id)

    def fs_rm(self, sandbox_id, path, *, org_id=None) -> bool:
        return self.fs.fs_rm(sandbox_id, path, org_id=org_id)

    def fs_rmdir(self, sandbox_id, path, *, recursive=False, org_id=None) -> bool:
        return self.fs.fs_rmdir(sandbox_id, path, recursive=recursive, org_id=org_id)

    def fs_download(self, sandbox_id, path, fmt, out, *, org_id=None) -> int:
        return self.fs.fs_download(sandbox_id, path, fmt, out, org_id=org_id)

    def fs_upload(self, sandbox_id, path, fmt, src, *, org_id=None) -> None:
        return self.fs.fs_upload(sandbox_id, path, fmt, src, org_id=org_id)

    # network (access.py) ------------------------------------------------------------------------
    def sandbox_url(self, row) -> str | None:
        return self.network.sandbox_url(row)

    # ssh (access.py) ----------------------------------------------------------------------------
    def ssh_command(self, sandbox_id: str, command: str | None = None, *, org_id=None) -> list[str]:
        return self.ssh.ssh_command(sandbox_id, command, org_id=org_id)

    def ssh_key_add(self, text: str) -> dict:
        return self.ssh.ssh_key_add(text)

    def ssh_key_list(self) -> dict:
        return self.ssh.ssh_key_list()

    def ssh_key_remove(self, fingerprint: str) -> dict:
        return self.ssh.ssh_key_remove(fingerprint)

    # runtimes ------------------------------------------------------------------------------------
    def runtime_list(self, *, limit=50, offset=0, sort="created", direction="desc", org_id=None) -> dict:
        if sort not in ("name", "created"):
            raise E.ValidationError(f"Invalid sort field '{sort}': expected name or created")
        if direction not in ("asc", "desc"):
            raise E.ValidationError(f"Invalid direction '{direction}': expected asc or desc")
        limit = bounded(limit, 1, 100, "limit")
        offset = bounded(offset, 0, 10 ** 9, "offset")
        items = sorted(runtimes.CATALOGUE, key=lambda r: r["name"] if sort == "name" else r["created"],
                       reverse=direction == "desc")
        from .images import is_built
        page = items[offset:offset + limit]
        return {"runtimes": [runtimes.wire(r, is_built(self.ctx.state_dir, r["name"])) for r in page],
                "total": len(items)}

    def runtime_build(self, name: str) -> dict:
        """Build a runtime's image ahead of its first use."""
        rt = runtimes.resolve_ref(name)
        runtimes.require_buildable(rt)
        from . import images
        t = time.monotonic()
        path = images.ensure_image(self.ctx.pool, rt["name"], log_dir=os.path.join(self.ctx.state_dir, "logs"))
        info = images.image_info(path)
        return {**runtimes.wire(rt, True), "image": path, "version": info.get("version"),
                "sizeBytes": info.get("sizeBytes"), "durationMs": int((time.monotonic() - t) * 1000)}

    # doctor --------------------------------------------------------------------------------------
    def doctor(self) -> dict:
        from .doctor import report
        return report(self.ctx)

    def close(self) -> None:
        self.ctx.store.close()


__all__ = ["Engine", "default_state_dir", "default_limits", "DEFAULT_ORG"]
