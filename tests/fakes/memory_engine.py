"""MemoryEngine: an in-memory stand-in for ``localsb.engine.Engine``, for mockcloud's unit tests.

It offers the Backend ABC plus the engine's asynchronous extras that mockcloud calls
(``execute_start``, ``execution_get(wait=)``, ``sandbox_status(wait_for=, wait_ms=)``,
``output_path``/``output_done``, oneshot ``sandbox_create`` returning ``executionId``), with the same
names, arguments, return shapes and errors. Commands really run, as host subprocesses in a
per-sandbox directory (no isolation: this is a test fake, never a backend). Sandboxes are scoped
by org exactly as the engine scopes them: another org's id raises SandboxNotFound.

State is in memory, so it does not survive the process; output files live under ``state_dir``.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import zipfile

from localsb.api import errors as E
from localsb.api.backend import Backend
from localsb.api.models import new_id, now_iso, omit_none, validate_snapshot_name, validate_tag
from localsb.api.specs import CreateSpec, FileSpec
from localsb.api.status import (EXECUTION_TERMINAL, SANDBOX_GONE, SANDBOX_LIVE, SANDBOX_PAUSED,
                                check_transition, execution_exit_code)
from localsb.api.units import format_go_duration, parse_duration

WORKSPACE = "/home/agentuity"
RUNTIMES = [{"id": "srt_base000000000", "name": "base", "description": "The host's userland, read-only",
             "tags": ["offline"]}]


class MemoryEngine(Backend):
    name = "memory"

    def __init__(self, state_dir: str):
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.sandboxes: dict[str, dict] = {}
        self.executions: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.events: list[dict] = []
        self.checkpoints: dict[str, list[dict]] = {}
        self.snapshots: dict[str, dict] = {}
        self.builds: dict[str, dict] = {}
        self.calls: list[str] = []

    # helpers -------------------------------------------------------------------------------------
    def _sbx(self, sandbox_id: str, org_id, include_deleted: bool = True) -> dict:
        s = self.sandboxes.get(sandbox_id)
        if s is None or (org_id is not None and s["org"] != org_id) or (s["deleted"] and not include_deleted):
            raise E.SandboxNotFound(sandbox_id)
        return s

    def _root(self, s: dict) -> str:
        return os.path.join(self.state_dir, "sandboxes", s["id"])

    def _event(self, s: dict, type_: str, **payload) -> None:
        self.events.append({"eventId": new_id("event"), "sandboxId": s["id"], "type": type_,
                            "event": payload, "createdAt": now_iso()})

    def _host_path(self, s: dict, path: str) -> str:
        """Map a sandbox path onto the sandbox's root directory; a '..' above '/' is refused."""
        if not isinstance(path, str) or not path or "\0" in path:
            raise E.ValidationError(f"Invalid path: {path!r}")
        absolute = path if path.startswith("/") else WORKSPACE + "/" + path
        parts: list[str] = []
        for part in absolute.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise E.ValidationError(f"Invalid path {path}: it leaves the sandbox")
                parts.pop()
            else:
                parts.append(part)
        return os.path.join(self._root(s), *parts)

    def _out(self, kind: str, id_: str) -> str:
        d = os.path.join(self.state_dir, "output", kind)
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, id_)

    def output_path(self, kind: str, id_: str, stream: str) -> str:
        return self._out(kind, id_) + "." + stream

    def output_done(self, kind: str, id_: str) -> bool:
        return os.path.exists(self._out(kind, id_) + ".done")

    # sandboxes -----------------------------------------------------------------------------------
    def sandbox_create(self, spec: CreateSpec, stdin: bytes | None = None, stdin_path: str | None = None,
                       stdin_done_path: str | None = None) -> dict:
        self.calls.append("sandbox_create")
        spec.validate()
        if spec.runtime not in (None, "base") or spec.runtime_id not in (None, RUNTIMES[0]["id"]):
            raise E.RuntimeNotFound(spec.runtime or spec.runtime_id)
        snap = None
        if spec.snapshot:
            snap = self._snapshot_by_ref(spec.snapshot, spec.org_id)
        sid = new_id("sandbox")
        s = {"id": sid, "org": spec.org_id, "spec": spec, "status": "idle", "createdAt": now_iso(),
             "exitCode": None, "env": dict(spec.env), "executions": 0, "deleted": False, "busy": None,
             "mode": spec.mode, "pausedAt": None}
        root = self._root(s)
        os.makedirs(os.path.join(root, WORKSPACE.lstrip("/")), exist_ok=True)
        if snap is not None:
            shutil.copytree(snap["dir"], root, dirs_exist_ok=True)
        for f in spec.files:
            self._write(s, f)
        with self.lock:
            self.sandboxes[sid] = s
            self._event(s, "create", mode=spec.mode)
        if spec.mode == "oneshot":
            s["status"] = "running"
            ex = self._start(s, spec.command, spec.execution_timeout, stdin=stdin, stdin_path=stdin_path,
                             stdin_done_path=stdin_done_path, oneshot=True)
            return {"sandboxId": sid, "status": "running", "executionId": ex["executionId"]}
        return omit_none({"sandboxId": sid, "status": "idle"})

    def sandbox_run(self, spec, stdin, stdout, stderr) -> dict:
        started = time.monotonic()
        data = stdin.read() if stdin is not None else None
        r = self.sandbox_create(spec, stdin=data)
        ex = self.execution_get(r["executionId"], wait=3600)
        for stream, out in (("stdout", stdout), ("stderr", stderr)):
            if out is not None:
                with open(self.output_path("execution", ex["executionId"], stream), "rb") as fh:
                    out.write(fh.read())
        return {"sandboxId": r["sandboxId"], "exitCode": execution_exit_code(ex["status"], ex.get("exitCode")),
                "durationMs": int((time.monotonic() - started) * 1000)}

    def _info(self, s: dict) -> dict:
        spec: CreateSpec = s["spec"]
        timeout = omit_none({"idle": spec.idle_timeout and format_go_duration(parse_duration(spec.idle_timeout)),
                             "execution": spec.execution_timeout and format_go_duration(
                                 parse_duration(spec.execution_timeout)),
                             "paused": spec.paused_timeout and format_go_duration(parse_duration(spec.paused_timeout))})
        return omit_none({
            "sandboxId": s["id"], "name": spec.name, "description": spec.description,
            "status": "deleted" if s["deleted"] else s["status"], "mode": s["mode"], "createdAt": s["createdAt"],
            "region": "usc", "runtime": {"id": RUNTIMES[0]["id"], "name": "base"}, "executions": s["executions"],
            "exitCode": s["exitCode"], "dependencies": spec.dependencies or None, "packages": spec.packages or None,
            "metadata": spec.metadata, "resources": spec.resources() or None, "networkEnabled": spec.network,
            "timeout": timeout or None, "command": {"exec": spec.command, "mode": s["mode"]} if spec.command else None,
            "org": {"id": s["org"], "name": ""} if s["org"] else None,
        })

    def sandbox_get(self, sandbox_id: str, *, org_id=None, include_deleted=False) -> dict:
        with self.lock:
            return self._info(self._sbx(sandbox_id, org_id, include_deleted))

    def sandbox_status(self, sandbox_id: str, *, wait_for=None, wait_ms=None, org_id=None) -> dict:
        deadline = time.monotonic() + (wait_ms or 0) / 1000.0
        with self.changed:
            while True:
                s = self._sbx(sandbox_id, org_id)
                status = "deleted" if s["deleted"] and s["status"] not in ("terminated", "failed") else s["status"]
                if not wait_for or status in wait_for:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return omit_none({"sandboxId": sandbox_id, "status": status, "exitCode": s["exitCode"]})

    def sandbox_list(self, *, org_id=None, project_id=None, name=None, mode=None, status=None, snapshot_id=None,
                     limit=50, offset=0, sort="created", direction="desc", include_deleted=False,
                     deleted_only=False, live=False) -> dict:
        with self.lock:
            rows = [s for s in self.sandboxes.values()
                    if (s["deleted"] if deleted_only else (include_deleted or not s["deleted"]))
                    and (not live or (s["status"] in SANDBOX_LIVE and not s["deleted"]))
                    and (org_id is None or s["org"] == org_id)
                    and (name is None or s["spec"].name == name) and (mode is None or s["mode"] == mode)
                    and (status is None or s["status"] == status)
                    and (project_id is None or s["spec"].project_id == project_id)
                    and (snapshot_id is None or s["spec"].snapshot == snapshot_id)]
            key = {"name": lambda s: s["spec"].name or "", "status": lambda s: s["status"],
                   "mode": lambda s: s["mode"], "execution_count": lambda s: s["executions"]}.get(
                sort, lambda s: s["createdAt"])
            rows.sort(key=key, reverse=direction == "desc")
            page = rows[offset:offset + limit]
            return {"sandboxes": [{"id": s["id"], "name": s["spec"].name, "description": s["spec"].description,
                                   "status": s["status"], "region": "usc", "createdAt": s["createdAt"],
                                   "orgId": s["org"], "orgName": None, "projectId": s["spec"].project_id}
                                  for s in page], "total": len(rows)}

    def sandbox_destroy(self, sandbox_id: str, *, org_id=None) -> None:
        with self.changed:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            s["deleted"] = True
            if s["status"] not in ("terminated", "failed"):
                s["status"] = "terminated"
            procs = [x["proc"] for x in list(self.executions.values()) + list(self.jobs.values())
                     if x["sandboxId"] == sandbox_id and x.get("proc") is not None]
            self._event(s, "destroy")
            self.changed.notify_all()
        for p in procs:
            _kill(p, signal.SIGKILL)

    def sandbox_pause(self, sandbox_id: str, *, org_id=None) -> dict:
        with self.changed:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            s["status"] = check_transition(sandbox_id, s["status"], "pause")
            self._event(s, "pause")
            self.changed.notify_all()
            out = {"sandboxId": sandbox_id, "status": s["status"]}
            if s["spec"].paused_timeout and parse_duration(s["spec"].paused_timeout) > 0:
                out["terminatesAt"] = now_iso(time.time() + parse_duration(s["spec"].paused_timeout))
            return out

    def sandbox_resume(self, sandbox_id: str, *, org_id=None) -> dict:
        with self.changed:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            s["status"] = check_transition(sandbox_id, s["status"], "resume")
            self._event(s, "resume")
            self.changed.notify_all()
            return {"sandboxId": sandbox_id, "status": s["status"]}

    def sandbox_env(self, sandbox_id: str, set_vars: dict, delete: list, *, org_id=None) -> dict:
        with self.lock:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            if s["status"] in SANDBOX_GONE:
                raise E.SandboxTerminated(sandbox_id, s["status"])
            for k in list(set_vars) + list(delete):
                if not isinstance(k, str) or not k or not (k[0].isalpha() or k[0] == "_") or \
                        not k.replace("_", "a").isalnum():
                    raise E.ValidationError(f"Invalid environment variable format: {k}. Use KEY=VALUE format.")
            s["env"].update(set_vars)
            for k in delete:
                s["env"].pop(k, None)
            self._event(s, "env", set=sorted(set_vars), deleted=sorted(delete))
            return {"env": dict(s["env"])}

    # executions ----------------------------------------------------------------------------------
    def _start(self, s: dict, command: list[str], timeout, *, stdin=None, stdin_path=None, stdin_done_path=None,
               oneshot=False, timestamps=False) -> dict:
        eid = new_id("execution")
        ex = {"executionId": eid, "sandboxId": s["id"], "type": "exec", "status": "running",
              "command": list(command), "startedAt": now_iso(), "_t0": time.monotonic(), "org": s["org"],
              "proc": None}
        with self.changed:
            self.executions[eid] = ex
            s["executions"] += 1
            s["busy"] = eid
            if not oneshot:
                s["status"] = "running"
            self.changed.notify_all()
        base = self._out("execution", eid)
        out, err = open(base + ".stdout", "wb"), open(base + ".stderr", "wb")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.join(self._root(s), "home/agentuity"),
               **s["env"]}
        try:
            proc = subprocess.Popen(command, cwd=os.path.join(self._root(s), WORKSPACE.lstrip("/")), env=env,
                                    stdin=subprocess.PIPE if (stdin or stdin_path) else subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
        except OSError as e:
            err.write(f"{command[0]}: {e.strerror}\n".encode())
            out.close()
            err.close()
            self._finish(s, ex, 127, "failed", base, oneshot)
            return dict(ex, proc=None)
        ex["proc"] = proc
        limit = parse_duration(timeout) if timeout else None

        def feed():
            try:
                if stdin:
                    proc.stdin.write(stdin)
                elif stdin_path:
                    with open(stdin_path, "rb") as fh:
                        while True:
                            chunk = fh.read(65536)
                            if chunk:
                                proc.stdin.write(chunk)
                                proc.stdin.flush()
                            elif os.path.exists(stdin_done_path):
                                rest = fh.read()
                                if rest:
                                    proc.stdin.write(rest)
                                break
                            elif proc.poll() is not None:
                                break
                            else:
                                time.sleep(0.005)
            except (BrokenPipeError, OSError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        def wait():
            if proc.stdin is not None:
                threading.Thread(target=feed, daemon=True).start()
            try:
                rc = proc.wait(timeout=limit)
                status = "completed"
            except subprocess.TimeoutExpired:
                _kill(proc, signal.SIGKILL)
                proc.wait()
                rc, status = 124, "timeout"
            out.close()
            err.close()
            self._finish(s, ex, rc if rc >= 0 else 128 - rc, status, base, oneshot)

        threading.Thread(target=wait, daemon=True).start()
        return self._ex_info(ex)

    def _finish(self, s, ex, rc, status, base, oneshot) -> None:
        with self.changed:
            ex.update(status=status, exitCode=rc, completedAt=now_iso(),
                      durationMs=int((time.monotonic() - ex["_t0"]) * 1000), proc=None)
            if s["busy"] == ex["executionId"]:
                s["busy"] = None
            if oneshot:
                s["status"], s["exitCode"] = "terminated", rc
                self._event(s, "lifecycle:terminated", exitCode=rc)
            elif s["status"] == "running":
                s["status"] = "idle"
            open(base + ".done", "w").close()
            self.changed.notify_all()

    def _ex_info(self, ex: dict) -> dict:
        return omit_none({k: v for k, v in ex.items() if not k.startswith("_") and k not in ("proc", "org")})

    def execute_start(self, sandbox_id: str, command: list[str], *, timeout=None, timestamps=False, org_id=None) -> dict:
        auto = False
        with self.changed:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            if s["status"] in SANDBOX_GONE:
                raise E.SandboxTerminated(sandbox_id, s["status"])
            if s["status"] in SANDBOX_PAUSED:
                s["status"], auto = "idle", True
            if s["busy"]:
                raise E.SandboxBusy(sandbox_id)
        info = self._start(s, command, timeout, timestamps=timestamps)
        if auto:
            info["autoResumed"] = True
        return info

    def sandbox_execute(self, sandbox_id, command, *, timeout=None, timestamps=False, stdout=None, stderr=None,
                        org_id=None) -> dict:
        info = self.execute_start(sandbox_id, command, timeout=timeout, timestamps=timestamps, org_id=org_id)
        ex = self.execution_get(info["executionId"], wait=3600, org_id=org_id)
        for stream, out in (("stdout", stdout), ("stderr", stderr)):
            if out is not None:
                with open(self.output_path("execution", ex["executionId"], stream), "rb") as fh:
                    out.write(fh.read())
        return ex

    def execution_get(self, execution_id: str, *, wait=None, org_id=None) -> dict:
        deadline = time.monotonic() + (wait or 0)
        with self.changed:
            ex = self.executions.get(execution_id)
            if ex is None or (org_id is not None and ex["org"] != org_id):
                raise E.ExecutionNotFound(execution_id)
            while ex["status"] not in EXECUTION_TERMINAL and time.monotonic() < deadline:
                self.changed.wait(deadline - time.monotonic())
            return self._ex_info(ex)

    def execution_list(self, sandbox_id: str, *, limit=50, org_id=None) -> dict:
        with self.lock:
            self._sbx(sandbox_id, org_id)
            rows = [self._ex_info(e) for e in self.executions.values() if e["sandboxId"] == sandbox_id]
            return {"executions": list(reversed(rows))[:limit]}

    # jobs ----------------------------------------------------------------------------------------
    def job_create(self, sandbox_id: str, command: list[str], *, org_id=None) -> dict:
        with self.lock:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            if s["status"] in SANDBOX_GONE:
                raise E.SandboxTerminated(sandbox_id, s["status"])
        jid = new_id("job")
        base = self._out("job", jid)
        out, err = open(base + ".stdout", "wb"), open(base + ".stderr", "wb")
        job = {"jobId": jid, "sandboxId": sandbox_id, "command": list(command), "status": "running",
               "startedAt": now_iso(), "org": s["org"], "proc": None, "exitCode": None, "completedAt": None}
        try:
            proc = subprocess.Popen(command, cwd=os.path.join(self._root(s), WORKSPACE.lstrip("/")),
                                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **s["env"]},
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        except OSError as e:
            out.close()
            err.close()
            job.update(status="failed", exitCode=127, completedAt=now_iso(), error=e.strerror)
            open(base + ".done", "w").close()
            self.jobs[jid] = job
            return self._job_info(job)
        job["proc"] = proc
        self.jobs[jid] = job

        def wait():
            rc = proc.wait()
            out.close()
            err.close()
            with self.changed:
                if job["status"] != "cancelled":
                    job["status"] = "completed" if rc == 0 else "failed"
                job.update(exitCode=rc if rc >= 0 else 128 - rc, completedAt=now_iso(), proc=None)
                open(base + ".done", "w").close()
                self.changed.notify_all()

        threading.Thread(target=wait, daemon=True).start()
        return self._job_info(job)

    def _job_info(self, job: dict) -> dict:
        return {k: v for k, v in job.items() if k not in ("proc", "org")}

    def _job(self, sandbox_id, job_id, org_id) -> dict:
        self._sbx(sandbox_id, org_id)
        job = self.jobs.get(job_id)
        if job is None or job["sandboxId"] != sandbox_id:
            raise E.JobNotFound(job_id)
        return job

    def job_list(self, sandbox_id: str, *, limit=20, org_id=None) -> dict:
        with self.lock:
            self._sbx(sandbox_id, org_id)
            return {"jobs": [self._job_info(j) for j in self.jobs.values() if j["sandboxId"] == sandbox_id][:limit]}

    def job_get(self, sandbox_id: str, job_id: str, *, org_id=None) -> dict:
        with self.lock:
            return self._job_info(self._job(sandbox_id, job_id, org_id))

    def job_destroy(self, sandbox_id: str, job_id: str, *, force=False, org_id=None) -> dict:
        with self.changed:
            job = self._job(sandbox_id, job_id, org_id)
            proc = job["proc"]
            if proc is not None:
                job["status"] = "cancelled"
        if proc is not None:
            _kill(proc, signal.SIGKILL if force else signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(proc, signal.SIGKILL)
                proc.wait()
            deadline = time.monotonic() + 5
            with self.changed:
                while job["completedAt"] is None and time.monotonic() < deadline:
                    self.changed.wait(0.05)
        return self.job_get(sandbox_id, job_id, org_id=org_id)

    # events, stats, runtimes ---------------------------------------------------------------------
    def events_list(self, sandbox_id: str, *, limit=50, direction="asc", org_id=None) -> dict:
        with self.lock:
            self._sbx(sandbox_id, org_id)
            rows = [e for e in self.events if e["sandboxId"] == sandbox_id]
            if direction == "desc":
                rows.reverse()
            return {"events": rows[:limit]}

    def stats(self, *, org_id=None, start=None, end=None) -> dict:
        with self.lock:
            mine = [s for s in self.sandboxes.values() if org_id is None or s["org"] == org_id]
            live = [s for s in mine if not s["deleted"] and s["status"] in SANDBOX_LIVE]
            return {"services": {"sandbox": {
                "totalActive": len(live), "running": sum(s["status"] == "running" for s in live),
                "idle": sum(s["status"] == "idle" for s in live),
                "creating": sum(s["status"] == "creating" for s in live),
                "totalExecutions": sum(s["executions"] for s in mine), "totalCpuTimeMs": 0,
                "totalMemoryByteSec": 0, "totalNetworkEgressBytes": 0}}}

    def runtime_list(self, *, limit=50, offset=0, sort="created", direction="desc", org_id=None) -> dict:
        return {"runtimes": RUNTIMES[offset:offset + limit], "total": len(RUNTIMES)}

    # checkpoints ---------------------------------------------------------------------------------
    def checkpoint_create(self, sandbox_id: str, name: str, *, org_id=None) -> dict:
        with self.lock:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            if s["status"] in SANDBOX_PAUSED:
                raise E.InvalidState(f"Sandbox {sandbox_id} is {s['status']}: resume it before a checkpoint")
            cps = self.checkpoints.setdefault(sandbox_id, [])
            if any(c["name"] == name for c in cps):
                raise E.AlreadyExists(f"Checkpoint {name} already exists in sandbox {sandbox_id}")
            cp = {"id": new_id("checkpoint"), "name": name, "createdAt": now_iso(),
                  "parent": cps[-1]["name"] if cps else ""}
            d = os.path.join(self.state_dir, "checkpoints", cp["id"])
            shutil.copytree(self._root(s), d, symlinks=True)
            cps.append(dict(cp, dir=d))
            return cp

    def _cp(self, sandbox_id, ref, org_id) -> dict:
        self._sbx(sandbox_id, org_id)
        for c in self.checkpoints.get(sandbox_id, []):
            if ref in (c["id"], c["name"]):
                return c
        raise E.CheckpointNotFound(sandbox_id, ref)

    def checkpoint_list(self, sandbox_id: str, *, org_id=None) -> dict:
        with self.lock:
            self._sbx(sandbox_id, org_id)
            return {"checkpoints": [{k: v for k, v in c.items() if k != "dir"}
                                    for c in self.checkpoints.get(sandbox_id, [])]}

    def checkpoint_restore(self, sandbox_id: str, ref: str, *, org_id=None) -> dict:
        with self.lock:
            c = self._cp(sandbox_id, ref, org_id)
            root = self._root(self.sandboxes[sandbox_id])
            shutil.rmtree(root)
            shutil.copytree(c["dir"], root, symlinks=True)
            return {"sandboxId": sandbox_id, "checkpointId": c["id"]}

    def checkpoint_delete(self, sandbox_id: str, ref: str, *, org_id=None) -> None:
        with self.lock:
            c = self._cp(sandbox_id, ref, org_id)
            self.checkpoints[sandbox_id].remove(c)
            shutil.rmtree(c["dir"], ignore_errors=True)

    # snapshots -----------------------------------------------------------------------------------
    def _snap_info(self, p: dict) -> dict:
        return {k: v for k, v in p.items() if k not in ("dir", "org", "orgId")}

    def _snapshot_by_ref(self, ref: str, org_id) -> dict:
        for p in self.snapshots.values():
            if (org_id is None or p["org"] == org_id or p.get("public")) and ref in (
                    p["snapshotId"], p["name"], p.get("tag"), f"{p['name']}:{p.get('tag')}"):
                return p
        raise E.SnapshotNotFound(ref)

    def snapshot_create(self, sandbox_id: str, *, name=None, description=None, tag=None, public=False,
                        org_id=None) -> dict:
        with self.lock:
            s = self._sbx(sandbox_id, org_id, include_deleted=False)
            if name is not None:
                validate_snapshot_name(name)
            if tag is not None:
                validate_tag(tag)
            sid = new_id("snapshot")
            d = os.path.join(self.state_dir, "snapshots", sid)
            shutil.copytree(self._root(s), d, symlinks=True)
            size = sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(d) for f in fs)
            count = sum(len(fs) for _, _, fs in os.walk(d))
            p = {"snapshotId": sid, "name": name or sid, "description": description, "tag": tag or "latest",
                 "sizeBytes": size, "fileCount": count, "createdAt": now_iso(), "public": bool(public),
                 "org": s["org"], "dir": d}
            self.snapshots[sid] = p
            return self._snap_info(p)

    def snapshot_list(self, *, sandbox_id=None, limit=50, offset=0, sort="created", direction="desc",
                      org_id=None) -> dict:
        with self.lock:
            rows = [self._snap_info(p) for p in self.snapshots.values() if org_id is None or p["org"] == org_id]
            return {"snapshots": rows[offset:offset + limit], "total": len(rows)}

    def snapshot_get(self, snapshot_id: str, *, org_id=None) -> dict:
        with self.lock:
            p = self.snapshots.get(snapshot_id)
            if p is None or (org_id is not None and p["org"] != org_id):
                raise E.SnapshotNotFound(snapshot_id)
            return self._snap_info(p)

    def snapshot_tag(self, snapshot_id: str, tag, *, org_id=None) -> dict:
        with self.lock:
            self.snapshot_get(snapshot_id, org_id=org_id)
            self.snapshots[snapshot_id]["tag"] = tag
            return self.snapshot_get(snapshot_id, org_id=org_id)

    def snapshot_delete(self, snapshot_id: str, *, org_id=None) -> None:
        with self.lock:
            self.snapshot_get(snapshot_id, org_id=org_id)
            p = self.snapshots.pop(snapshot_id)
            shutil.rmtree(p["dir"], ignore_errors=True)

    def snapshot_public_get(self, ref: str) -> dict:
        with self.lock:
            for p in self.snapshots.values():
                if p.get("public") and ref in (p["snapshotId"], p["name"], f"{p['name']}:{p.get('tag')}"):
                    return self._snap_info(p)
            raise E.SnapshotNotFound(ref)

    def snapshot_public_list(self, *, limit=50, offset=0) -> dict:
        with self.lock:
            rows = [self._snap_info(p) for p in self.snapshots.values() if p.get("public")]
            return {"snapshots": rows[offset:offset + limit], "total": len(rows)}

    def snapshot_build_init(self, body: dict, *, org_id=None) -> dict:
        sid = new_id("snapshot")
        self.builds[sid] = {"body": body, "org": org_id}
        return {"snapshotId": sid}

    def _build(self, snapshot_id: str, org_id) -> dict:
        b = self.builds.get(snapshot_id)
        if b is None or (org_id is not None and b["org"] != org_id):
            raise E.SnapshotNotFound(snapshot_id)
        return b

    def snapshot_build_upload(self, snapshot_id: str, src, *, org_id=None) -> dict:
        self._build(snapshot_id, org_id)["archive"] = src.read()
        return {"success": True, "scanned": True}

    def snapshot_build_finalize(self, snapshot_id: str, body: dict, *, org_id=None) -> dict:
        b = self._build(snapshot_id, org_id)
        if "archive" not in b:
            raise E.ValidationError(f"Snapshot {snapshot_id}: no archive was uploaded before finalize")
        del self.builds[snapshot_id]
        d = os.path.join(self.state_dir, "snapshots", snapshot_id, WORKSPACE.lstrip("/"))
        os.makedirs(d, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(b["archive"])) as tf:
            tf.extractall(d, filter="data")
        init = b["body"]
        p = {"snapshotId": snapshot_id, "name": init.get("name") or snapshot_id, "tag": init.get("tag") or "latest",
             "description": init.get("description"), "message": init.get("message"),
             "sizeBytes": body["sizeBytes"], "fileCount": body["fileCount"], "createdAt": now_iso(),
             "public": bool(init.get("public")), "org": org_id, "dir": os.path.join(self.state_dir, "snapshots",
                                                                                    snapshot_id),
             "userMetadata": body.get("metadata")}
        self.snapshots[snapshot_id] = p
        return omit_none(self._snap_info(p))

    # files ---------------------------------------------------------------------------------------
    def _write(self, s: dict, f: FileSpec) -> None:
        host = self._host_path(s, f.path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as fh:
            fh.write(f.content)

    def _live(self, sandbox_id, org_id) -> dict:
        s = self._sbx(sandbox_id, org_id, include_deleted=False)
        if s["status"] in SANDBOX_GONE:
            raise E.SandboxTerminated(sandbox_id, s["status"])
        return s

    def fs_write(self, sandbox_id: str, files: list, *, org_id=None) -> dict:
        s = self._live(sandbox_id, org_id)
        for f in files:
            self._write(s, f)
        return {"filesWritten": len(files)}

    def fs_read(self, sandbox_id: str, path: str, out, *, org_id=None) -> int:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        if not os.path.isfile(host):
            raise E.FileNotFoundInSandbox(f"File not found: {path}")
        with open(host, "rb") as fh:
            data = fh.read()
        out.write(data)
        return len(data)

    def fs_list(self, sandbox_id: str, path: str = ".", *, org_id=None) -> dict:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        if not os.path.isdir(host):
            raise E.FileNotFoundInSandbox(f"Directory not found: {path}")
        files = []
        for name in sorted(os.listdir(host)):
            st = os.lstat(os.path.join(host, name))
            files.append({"path": name, "size": st.st_size, "isDir": os.path.isdir(os.path.join(host, name)),
                          "mode": f"{st.st_mode & 0o7777:04o}", "modTime": now_iso(st.st_mtime)})
        return {"files": files}

    def fs_mkdir(self, sandbox_id: str, path: str, *, recursive=False, org_id=None) -> None:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        try:
            os.makedirs(host, exist_ok=True) if recursive else os.mkdir(host)
        except FileExistsError:
            raise E.AlreadyExists(f"Directory already exists: {path}") from None
        except FileNotFoundError:
            raise E.FileNotFoundInSandbox(f"Parent directory not found: {path} (use -p)") from None

    def fs_rm(self, sandbox_id: str, path: str, *, org_id=None) -> bool:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        if os.path.isdir(host):
            raise E.ValidationError(f"{path} is a directory: use rmdir")
        try:
            os.unlink(host)
            return True
        except FileNotFoundError:
            return False

    def fs_rmdir(self, sandbox_id: str, path: str, *, recursive=False, org_id=None) -> bool:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        if not os.path.exists(host):
            return False
        shutil.rmtree(host) if recursive else os.rmdir(host)
        return True

    def fs_download(self, sandbox_id: str, path: str, fmt: str, out, *, org_id=None) -> int:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        if not os.path.exists(host):
            raise E.FileNotFoundInSandbox(f"Path not found: {path}")
        buf = io.BytesIO()
        if fmt == "zip":
            with zipfile.ZipFile(buf, "w") as zf:
                for a, _, fs in os.walk(host):
                    for f in fs:
                        zf.write(os.path.join(a, f), os.path.relpath(os.path.join(a, f), host))
        else:
            with tarfile.open(fileobj=buf, mode="w:gz") as tf:
                for name in sorted(os.listdir(host)) if os.path.isdir(host) else [None]:
                    src = os.path.join(host, name) if name else host
                    tf.add(src, arcname=name or os.path.basename(host))
        out.write(buf.getvalue())
        return len(buf.getvalue())

    def fs_upload(self, sandbox_id: str, path: str, fmt: str, src, *, org_id=None) -> None:
        host = self._host_path(self._live(sandbox_id, org_id), path)
        os.makedirs(host, exist_ok=True)
        try:
            if fmt == "zip":
                with zipfile.ZipFile(src) as zf:
                    for n in zf.namelist():
                        if n.startswith("/") or ".." in n.split("/"):
                            raise E.ValidationError(f"Archive member {n} leaves the target directory")
                    zf.extractall(host)
            else:
                with tarfile.open(fileobj=src, mode="r:*") as tf:
                    tf.extractall(host, filter="data")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise E.ValidationError(f"Invalid {fmt} archive: {e}") from None

    def close(self) -> None:
        with self.lock:
            procs = [x["proc"] for x in list(self.executions.values()) + list(self.jobs.values()) if x.get("proc")]
        for p in procs:
            _kill(p, signal.SIGKILL)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _kill(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

