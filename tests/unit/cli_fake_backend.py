"""An in-memory Backend for the CLI's unit tests: it records every call and keeps simple state.

Commands it "runs" (run, exec, job create): ``echo ARGS`` writes ARGS to stdout; ``fail N`` writes
``oops`` to stderr and exits N; ``cat`` copies stdin to stdout; ``mixed`` writes ``a`` to stdout,
``b`` to stderr, ``c`` to stdout; anything else exits 0 silently.
"""
from __future__ import annotations

import io
import tarfile

from localsb.api import errors as E
from localsb.api.backend import Backend

T0 = "2026-04-01T12:00:00.000Z"


class FakeBackend(Backend):
    name = "fake"

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.sandboxes: dict[str, dict] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.snapshots: dict[str, dict] = {}
        self.checkpoints: dict[str, list[dict]] = {}
        self.jobs: dict[str, dict] = {}
        self.executions: dict[str, dict] = {}
        self.env: dict[str, dict] = {}
        self.raise_next: Exception | None = None
        self.closed = False
        self._n = 0

    # helpers ---------------------------------------------------------------------------------------
    def _rec(self, method, *args, **kwargs):
        self.calls.append((method, args, kwargs))
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc

    def _id(self, prefix):
        self._n += 1
        return f"{prefix}{self._n:04d}"

    def methods(self) -> list[str]:
        return [c[0] for c in self.calls]

    def _box(self, sandbox_id):
        if sandbox_id not in self.sandboxes:
            raise E.SandboxNotFound(sandbox_id)
        return self.sandboxes[sandbox_id]

    def add_sandbox(self, **fields) -> str:
        sid = fields.pop("sandboxId", None) or self._id("sbx_")
        box = {"sandboxId": sid, "status": "idle", "createdAt": T0, "executions": 0, "region": "local",
               "mode": "interactive", "org": {"id": "org_local", "name": "Local"}}
        box.update(fields)
        self.sandboxes[sid] = box
        return sid

    @staticmethod
    def _execute(command, stdin, stdout, stderr) -> int:
        def put(stream, data: bytes):
            if stream is not None:
                stream.write(data)
        if not command:
            return 0
        if command[0] == "echo":
            put(stdout, (" ".join(command[1:]) + "\n").encode())
            return 0
        if command[0] == "fail":
            put(stderr, b"oops\n")
            return int(command[1]) if len(command) > 1 else 1
        if command[0] == "cat":
            put(stdout, stdin.read() if stdin is not None else b"")
            return 0
        if command[0] == "mixed":
            put(stdout, b"a\n")
            put(stderr, b"b\n")
            put(stdout, b"c\n")
            return 0
        return 0

    # sandboxes ---------------------------------------------------------------------------------------
    def sandbox_create(self, spec):
        self._rec("sandbox_create", spec)
        fields = {"name": spec.name, "description": spec.description, "resources": spec.resources() or None,
                  "metadata": spec.metadata}
        if spec.port:
            fields["url"] = f"https://{spec.name or 'sbx'}-abc.agentuity.cloud"
        sid = self.add_sandbox(status="creating", **{k: v for k, v in fields.items() if v is not None})
        out = {"sandboxId": sid, "status": "creating"}
        if spec.port:
            out["url"] = fields["url"]
        return out

    def sandbox_run(self, spec, stdin, stdout, stderr):
        self._rec("sandbox_run", spec, stdin, stdout, stderr)
        code = self._execute(spec.command, stdin, stdout, stderr)
        return {"sandboxId": "sbx_run1", "exitCode": code, "durationMs": 42}

    def sandbox_execute(self, sandbox_id, command, *, timeout=None, timestamps=False, stdout=None,
                        stderr=None, org_id=None):
        self._rec("sandbox_execute", sandbox_id, command, timeout=timeout, timestamps=timestamps,
                  stdout=stdout, stderr=stderr, org_id=org_id)
        box = self._box(sandbox_id)
        resumed = box["status"] == "suspended"
        box["status"] = "idle"
        box["executions"] += 1
        if command and command[0] == "timeout":
            return {"executionId": "exec_0009", "status": "timeout", "durationMs": 126}
        if command and command[0] == "test":
            return {"executionId": "exec_0008", "status": "completed",
                    "exitCode": 0 if (sandbox_id, command[-1]) in self.files else 1, "durationMs": 3}
        code = self._execute(command, None, stdout, stderr)
        out = {"executionId": "exec_0001", "status": "completed", "exitCode": code, "durationMs": 131}
        if resumed:
            out["autoResumed"] = True
        return out

    def sandbox_list(self, *, org_id=None, project_id=None, name=None, mode=None, status=None,
                     snapshot_id=None, limit=50, offset=0, sort="created", direction="desc"):
        self._rec("sandbox_list", org_id=org_id, project_id=project_id, name=name, mode=mode, status=status,
                  snapshot_id=snapshot_id, limit=limit, offset=offset, sort=sort, direction=direction)
        boxes = [b for b in self.sandboxes.values()
                 if (status is None or b["status"] == status) and (name is None or b.get("name") == name)
                 and (snapshot_id is None or b.get("snapshotId") == snapshot_id)]
        rows = [{"id": b["sandboxId"], "name": b.get("name"), "description": b.get("description"),
                 "status": b["status"], "createdAt": b["createdAt"], "region": b.get("region"),
                 "orgId": b.get("orgId", "org_local"), "orgName": b.get("orgName", "Local"),
                 "projectId": b.get("projectId")} for b in boxes]
        return {"sandboxes": rows[offset:offset + limit], "total": len(rows)}

    def sandbox_get(self, sandbox_id, *, org_id=None, include_deleted=False):
        self._rec("sandbox_get", sandbox_id, org_id=org_id, include_deleted=include_deleted)
        return dict(self._box(sandbox_id))

    def sandbox_wait(self, sandbox_id, statuses, *, wait_ms=60000, org_id=None):
        self._rec("sandbox_wait", sandbox_id, tuple(statuses), wait_ms=wait_ms, org_id=org_id)
        box = self._box(sandbox_id)
        if box["status"] == "creating":
            box["status"] = "idle"
        return dict(box)

    def sandbox_destroy(self, sandbox_id, *, org_id=None):
        self._rec("sandbox_destroy", sandbox_id, org_id=org_id)
        self._box(sandbox_id)["status"] = "terminated"

    def sandbox_pause(self, sandbox_id, *, org_id=None):
        self._rec("sandbox_pause", sandbox_id, org_id=org_id)
        box = self._box(sandbox_id)
        box["status"] = "suspended"
        out = {"sandboxId": sandbox_id, "status": "suspended"}
        if box.get("pausedTimeout"):
            out["terminatesAt"] = "2030-01-01T00:00:00.000Z"
        return out

    def sandbox_resume(self, sandbox_id, *, org_id=None):
        self._rec("sandbox_resume", sandbox_id, org_id=org_id)
        self._box(sandbox_id)["status"] = "idle"
        return {"sandboxId": sandbox_id, "status": "idle"}

    def sandbox_env(self, sandbox_id, set_vars, delete, *, org_id=None):
        self._rec("sandbox_env", sandbox_id, set_vars, delete, org_id=org_id)
        self._box(sandbox_id)
        env = self.env.setdefault(sandbox_id, {})
        env.update(set_vars)
        for k in delete:
            env.pop(k, None)
        return {"env": dict(env)}

    # executions ------------------------------------------------------------------------------------
    def execution_list(self, sandbox_id, *, limit=50, org_id=None):
        self._rec("execution_list", sandbox_id, limit=limit, org_id=org_id)
        return {"executions": [e for e in self.executions.values() if e["sandboxId"] == sandbox_id][:limit]}

    def execution_get(self, execution_id, *, wait=None, org_id=None):
        self._rec("execution_get", execution_id, wait=wait, org_id=org_id)
        if execution_id not in self.executions:
            raise E.ExecutionNotFound(execution_id)
        return dict(self.executions[execution_id])

    # jobs ------------------------------------------------------------------------------------------
    def job_create(self, sandbox_id, command, *, org_id=None):
        self._rec("job_create", sandbox_id, command, org_id=org_id)
        self._box(sandbox_id)
        jid = self._id("job_")
        self.jobs[jid] = {"jobId": jid, "sandboxId": sandbox_id, "command": list(command), "status": "pending"}
        return dict(self.jobs[jid])

    def job_list(self, sandbox_id, *, limit=20, org_id=None):
        self._rec("job_list", sandbox_id, limit=limit, org_id=org_id)
        return {"jobs": [dict(j) for j in self.jobs.values() if j["sandboxId"] == sandbox_id][:limit]}

    def job_get(self, sandbox_id, job_id, *, org_id=None):
        self._rec("job_get", sandbox_id, job_id, org_id=org_id)
        if job_id not in self.jobs:
            raise E.JobNotFound(job_id)
        return dict(self.jobs[job_id])

    def job_destroy(self, sandbox_id, job_id, *, force=False, org_id=None):
        self._rec("job_destroy", sandbox_id, job_id, force=force, org_id=org_id)
        if job_id not in self.jobs:
            raise E.JobNotFound(job_id)
        self.jobs[job_id]["status"] = "cancelled"
        return dict(self.jobs[job_id])

    def job_logs(self, sandbox_id, job_id, out, *, stream="stdout", follow=False, org_id=None):
        self._rec("job_logs", sandbox_id, job_id, stream=stream, follow=follow, org_id=org_id)
        job = self.jobs[job_id]
        out.write(job.get(stream, b""))
        return {"jobId": job_id, "sandboxId": sandbox_id, "status": job["status"]}

    # events, stats, runtimes -----------------------------------------------------------------------
    def events_list(self, sandbox_id, *, limit=50, direction="asc", org_id=None):
        self._rec("events_list", sandbox_id, limit=limit, direction=direction, org_id=org_id)
        self._box(sandbox_id)
        evs = [{"eventId": "evt_0001", "sandboxId": sandbox_id, "type": "create", "event": {}, "createdAt": T0},
               {"eventId": "evt_0002", "sandboxId": sandbox_id, "type": "lifecycle:started", "event": {},
                "createdAt": T0}]
        return {"events": (evs if direction == "asc" else evs[::-1])[:limit]}

    def stats(self, *, org_id=None, start=None, end=None):
        self._rec("stats", org_id=org_id, start=start, end=end)
        return {"services": {"sandbox": {"totalActive": 3, "running": 1, "idle": 2, "creating": 0,
                                         "totalExecutions": 17, "totalCpuTimeMs": 123456,
                                         "totalMemoryByteSec": 987654321, "totalNetworkEgressBytes": 4096}}}

    def runtime_list(self, *, limit=50, offset=0, sort="created", direction="desc", org_id=None):
        self._rec("runtime_list", limit=limit, offset=offset, sort=sort, direction=direction, org_id=org_id)
        rts = [{"id": "srt_base", "name": "base", "description": "The host's userland"},
               {"id": "srt_py314", "name": "python:3.14"}]
        return {"runtimes": rts[offset:offset + limit], "total": len(rts)}

    def runtime_build(self, name):
        self._rec("runtime_build", name)
        return {"id": "srt_py314", "name": name}

    # checkpoints -----------------------------------------------------------------------------------
    def checkpoint_create(self, sandbox_id, name, *, org_id=None):
        self._rec("checkpoint_create", sandbox_id, name, org_id=org_id)
        self._box(sandbox_id)
        items = self.checkpoints.setdefault(sandbox_id, [])
        c = {"id": self._id("ckpt_"), "name": name, "createdAt": T0, "parent": items[-1]["name"] if items else ""}
        items.append(c)
        return dict(c)

    def checkpoint_list(self, sandbox_id, *, org_id=None):
        self._rec("checkpoint_list", sandbox_id, org_id=org_id)
        self._box(sandbox_id)
        return {"checkpoints": list(self.checkpoints.get(sandbox_id, []))}

    def checkpoint_restore(self, sandbox_id, ref, *, org_id=None):
        self._rec("checkpoint_restore", sandbox_id, ref, org_id=org_id)
        self._find_ckpt(sandbox_id, ref)
        return {}

    def checkpoint_delete(self, sandbox_id, ref, *, org_id=None):
        self._rec("checkpoint_delete", sandbox_id, ref, org_id=org_id)
        self.checkpoints[sandbox_id].remove(self._find_ckpt(sandbox_id, ref))

    def _find_ckpt(self, sandbox_id, ref):
        for c in self.checkpoints.get(sandbox_id, []):
            if ref in (c["id"], c["name"]):
                return c
        raise E.CheckpointNotFound(sandbox_id, ref)

    # snapshots -------------------------------------------------------------------------------------
    def snapshot_create(self, sandbox_id, *, name=None, description=None, tag=None, public=False, org_id=None):
        self._rec("snapshot_create", sandbox_id, name=name, description=description, tag=tag, public=public,
                  org_id=org_id)
        self._box(sandbox_id)
        sid = self._id("snp_")
        s = {"snapshotId": sid, "name": name or "snap-auto", "tag": tag or "latest", "sizeBytes": 2048,
             "fileCount": 3, "createdAt": T0, "public": public}
        if description:
            s["description"] = description
        self.snapshots[sid] = s
        return dict(s)

    def snapshot_list(self, *, sandbox_id=None, limit=50, offset=0, sort="created", direction="desc", org_id=None):
        self._rec("snapshot_list", sandbox_id=sandbox_id, limit=limit, offset=offset, sort=sort,
                  direction=direction, org_id=org_id)
        items = list(self.snapshots.values())
        return {"snapshots": items[offset:offset + limit], "total": len(items)}

    def snapshot_get(self, snapshot_id, *, org_id=None):
        self._rec("snapshot_get", snapshot_id, org_id=org_id)
        if snapshot_id not in self.snapshots:
            raise E.SnapshotNotFound(snapshot_id)
        return dict(self.snapshots[snapshot_id])

    def snapshot_tag(self, snapshot_id, tag, *, org_id=None):
        self._rec("snapshot_tag", snapshot_id, tag, org_id=org_id)
        if snapshot_id not in self.snapshots:
            raise E.SnapshotNotFound(snapshot_id)
        self.snapshots[snapshot_id]["tag"] = tag
        return dict(self.snapshots[snapshot_id])

    def snapshot_delete(self, snapshot_id, *, org_id=None):
        self._rec("snapshot_delete", snapshot_id, org_id=org_id)
        if self.snapshots.pop(snapshot_id, None) is None:
            raise E.SnapshotNotFound(snapshot_id)

    def snapshot_build(self, build, *, org_id=None):
        self._rec("snapshot_build", build, org_id=org_id)
        for s in self.snapshots.values():
            if s.get("contentHash") == build.content_hash and not build.force:
                return {"unchanged": True, "existingId": s["snapshotId"], "existingName": s["name"],
                        "existingTag": s["tag"]}
        buf = io.BytesIO()
        build.write_archive(buf)
        sid = self._id("snp_")
        s = {"snapshotId": sid, "name": build.name or "snap-built", "tag": build.tag,
             "sizeBytes": build.size_bytes, "fileCount": build.file_count, "createdAt": T0,
             "contentHash": build.content_hash, "archive": buf.getvalue()}
        self.snapshots[sid] = s
        return {k: v for k, v in s.items() if k not in ("contentHash", "archive")}

    # files -----------------------------------------------------------------------------------------
    def fs_write(self, sandbox_id, files, *, org_id=None):
        self._rec("fs_write", sandbox_id, files, org_id=org_id)
        self._box(sandbox_id)
        for f in files:
            self.files[(sandbox_id, f.path)] = f.content
        return {"filesWritten": len(files)}

    def fs_read(self, sandbox_id, path, out, *, org_id=None):
        self._rec("fs_read", sandbox_id, path, org_id=org_id)
        self._box(sandbox_id)
        if (sandbox_id, path) not in self.files:
            raise E.FileNotFoundInSandbox(f"File not found: {path}")
        data = self.files[(sandbox_id, path)]
        out.write(data)
        return len(data)

    def fs_list(self, sandbox_id, path=".", *, org_id=None):
        self._rec("fs_list", sandbox_id, path, org_id=org_id)
        self._box(sandbox_id)
        return {"files": [
            {"path": "src", "size": 4096, "isDir": True, "mode": "0755", "modTime": "2025-01-01T00:00:00Z"},
            {"path": "hello.txt", "size": 19, "isDir": False, "mode": "0644", "modTime": "2025-01-01T00:00:00Z"},
            {"path": "big.bin", "size": 1536, "isDir": False, "mode": "0600", "modTime": "2025-01-01T00:00:00Z"}]}

    def fs_mkdir(self, sandbox_id, path, *, recursive=False, org_id=None):
        self._rec("fs_mkdir", sandbox_id, path, recursive=recursive, org_id=org_id)
        self._box(sandbox_id)

    def fs_rm(self, sandbox_id, path, *, org_id=None):
        self._rec("fs_rm", sandbox_id, path, org_id=org_id)
        return self.files.pop((sandbox_id, path), None) is not None

    def fs_rmdir(self, sandbox_id, path, *, recursive=False, org_id=None):
        self._rec("fs_rmdir", sandbox_id, path, recursive=recursive, org_id=org_id)
        return False

    def fs_download(self, sandbox_id, path, fmt, out, *, org_id=None):
        self._rec("fs_download", sandbox_id, path, fmt, org_id=org_id)
        self._box(sandbox_id)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for (sid, p), data in sorted(self.files.items()):
                if sid == sandbox_id and p.startswith(path.rstrip("/") + "/"):
                    info = tarfile.TarInfo(p[len(path.rstrip("/")) + 1:])
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        out.write(buf.getvalue())
        return len(buf.getvalue())

    def fs_upload(self, sandbox_id, path, fmt, src, *, org_id=None):
        self._rec("fs_upload", sandbox_id, path, fmt, org_id=org_id)
        self._box(sandbox_id)
        data = src.read()
        if fmt == "tar.gz":
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        self.files[(sandbox_id, f"{path.rstrip('/')}/{m.name}")] = tar.extractfile(m).read()

    # shell, doctor ---------------------------------------------------------------------------------
    def ssh_command(self, sandbox_id, command=None, *, org_id=None):
        self._rec("ssh_command", sandbox_id, command, org_id=org_id)
        self._box(sandbox_id)
        return ["localsb-attach", sandbox_id] + ([command] if command else [])

    def doctor(self):
        self._rec("doctor")
        return {"backend": "fake", "storage": "memory", "cgroups": {"memory": "v1", "freeze": "v2"},
                "userns": True}

    def close(self):
        self.closed = True


# running the CLI in-process -------------------------------------------------------------------------


class FakeTTY(io.TextIOWrapper):
    """A text stream that says it is a terminal (for the confirmation prompt)."""

    def isatty(self):
        return True


class Result:
    def __init__(self, rc, out, err, backend):
        self.rc, self.out, self.err, self.backend = rc, out, err, backend

    def json(self):
        import json
        return json.loads(self.out)

    def __repr__(self):
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"


def cli(*argv, backend=None, stdin: bytes = b"", tty: bool = False, env=None) -> Result:
    """Run ``localsb ARGV`` in-process on a FakeBackend with captured binary-capable streams."""
    from localsb.cli.main import main

    backend = FakeBackend() if backend is None else backend
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    cls = FakeTTY if tty else io.TextIOWrapper
    inp = cls(io.BytesIO(stdin), encoding="utf-8")
    # Human output unless a test asks for an agent's: who runs the suite must not change it.
    environ = {"AGENTUITY_AGENT_MODE": "none", **(env or {})}
    rc = main(list(argv), env=environ, stdin=inp, stdout=out, stderr=err, backend=backend)
    out.flush()
    err.flush()
    return Result(rc, out.buffer.getvalue().decode(), err.buffer.getvalue().decode(), backend)
