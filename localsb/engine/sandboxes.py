"""The sandboxes part: create (interactive, or a one-shot run in this process), list, get, pause, destroy.

Each method checks state, calls a mechanism of localsb.linux, records state and an event. An
interactive sandbox has a supervisor process (supervisor.py) that owns its init, executions,
jobs and idle timer; a one-shot ``run`` is driven by the calling process itself.
"""
from __future__ import annotations

import os
import time

from localsb.api import errors as E
from localsb.api.models import new_id, parse_iso
from localsb.api.status import SANDBOX_LIVE, check_transition, require_live
from localsb.api.units import parse_cpu, parse_duration, parse_size

TYPE_CHECKING = False  # annotations only: exec, get, list, ... never load specs.py (dataclasses)
if TYPE_CHECKING:
    from localsb.api.specs import CreateSpec

from . import render, runtimes
from .common import (DEFAULT_ORG, WORKSPACE, bounded, call, close_quiet, cgroup_usage, command_env, default_limits,
                     dest, event, fileno, host_error, hostname, kill_quiet, live_row, oom_kills, resume, sandbox_row,
                     teardown)
from .output import mark_done, out_paths, pump
from .store import dumps, loads, proc_start_time, process_alive


class Sandboxes:
    def __init__(self, ctx, snapshots, network):
        self.ctx = ctx
        self.snapshots = snapshots      # a snapshot is a sandbox's source
        self.network = network          # a sandbox with --port has a URL

    # create --------------------------------------------------------------------------------------
    def _check_features(self, spec: CreateSpec) -> dict:
        spec.validate()
        if spec.packages:
            raise E.NotAvailableYet("packages are not available yet in localsb")
        if spec.network or spec.port is not None:
            from localsb.linux.netns import nft_available
            if not nft_available():
                raise E.NotSupported("--network and --port need nftables on this machine (libnftables or nft: "
                                     "apt-get install nftables)")
            from .network import EgressPolicy
            EgressPolicy.from_env()   # a bad $LOCALSB_NETWORK_ALLOW fails here, before anything is made
        if spec.snapshot:
            source = self.snapshots._snapshot_source(spec.snapshot, spec.org_id)
        else:
            # --dependency without --runtime: Debian 12, since apt cannot install into base
            default = runtimes.DEFAULT_WITH_DEPENDENCIES if spec.dependencies else None
            rt = runtimes.resolve(spec.runtime or (None if spec.runtime_id else default), spec.runtime_id)
            runtimes.require_buildable(rt)
            source = {"runtime": rt, "snapshot": None}
        if spec.dependencies:
            source["dependencies"] = runtimes.check_dependencies(source["runtime"], spec.dependencies)
        return source

    def _limits(self, spec: CreateSpec):
        from localsb.linux.cgroups import Limits
        # The devices allowlist needs the v1 devices controller (v2 would need a BPF program):
        # where it is missing, seccomp and the dropped CAP_MKNOD still keep device nodes out.
        caps = self.ctx.cgroups.capabilities()
        dflt = default_limits()
        return Limits(memory_bytes=parse_size(spec.memory or dflt["memory"], "memory"),
                      cpu_millicores=parse_cpu(spec.cpu) if spec.cpu else None,
                      pids=dflt["pids"], devices_allowlist=caps.get("devices") is not None)

    def _id_range(self):
        """Reserve a host id range and make the sandbox's user namespace (linux/userns.py).
        Returns (IdRange, userns fd or None); a host without user namespaces is refused with one
        line, unless the user opted out of them explicitly."""
        from localsb.linux import userns
        rng = userns.reserve()
        if rng.fd is None:
            return rng, None
        try:
            return rng, userns.make_userns(rng.base)
        except OSError as exc:
            rng.close()
            raise E.NotSupported(f"This host cannot give sandboxes a user namespace ({exc.strerror}): localsb "
                                 f"will not run untrusted code as host root. Set {userns.NO_USERNS_ENV}=1 to run "
                                 "sandboxes without one anyway (unsafe: root inside is root on the host)") from None

    def _effective_limits(self, spec) -> dict:
        """What is enforced, defaults included (the row's spec keeps what the user asked)."""
        dflt = default_limits()
        return {"memory_bytes": parse_size(spec.memory or dflt["memory"], "memory"),
                "pids": dflt["pids"], "cpu_millicores": parse_cpu(spec.cpu) if spec.cpu else None,
                "disk_bytes": parse_size(spec.disk or dflt["disk"], "disk"),
                "disk_enforced": self.ctx.pool.name == "btrfs"}

    def _insert_sandbox(self, spec: CreateSpec, source: dict, sandbox_id: str, uid_base: int = 0) -> None:
        rt = source["runtime"]
        t = time.time()
        stored = {
            "command": spec.command or None, "memory": spec.memory, "cpu": spec.cpu, "disk": spec.disk,
            "network": spec.network, "port": spec.port, "idle_timeout": spec.idle_timeout,
            "execution_timeout": spec.execution_timeout, "paused_timeout": spec.paused_timeout,
            "dependencies": spec.dependencies, "packages": spec.packages, "metadata": spec.metadata,
            "scopes": spec.scopes, "usr_overlay": bool(rt.get("usr_overlay")),
            "image": source.get("image"), "snapshot_info_json": source.get("snapshot_info_json"),
            "uid_base": uid_base, "limits": self._effective_limits(spec),
        }
        self.ctx.store.insert("sandboxes", {
            "id": sandbox_id, "org_id": spec.org_id or DEFAULT_ORG, "project_id": spec.project_id,
            "name": spec.name, "description": spec.description, "mode": spec.mode, "status": "creating",
            "runtime_id": rt["id"], "runtime_name": rt["name"],
            "snapshot_id": (source.get("snapshot") or {}).get("id") if source.get("snapshot") else None,
            "spec": dumps(stored), "env": dumps({**(source.get("env") or {}), **(spec.env or {})}),
            "owner_pid": os.getpid(), "owner_start": proc_start_time(os.getpid()),
            "created_at": t, "updated_at": t, "last_activity": self.ctx.clock.now(),
        })

    def _image_for(self, source: dict) -> str:
        """The image volume a sandbox snapshots: a snapshot's, or its runtime's (built on first use),
        or the cached dependency layer over either."""
        from . import images
        logs = os.path.join(self.ctx.state_dir, "logs")
        deps = source.get("dependencies")
        if source.get("volume"):
            if deps:
                return images.ensure_deps(self.ctx.pool, source["runtime"]["name"], deps, base_volume=source["volume"],
                                          key=source["snapshot"]["id"], log_dir=logs)
            return source["volume"]
        if deps:
            return images.ensure_deps(self.ctx.pool, source["runtime"]["name"], deps, log_dir=logs)
        return images.ensure_image(self.ctx.pool, source["runtime"]["name"], log_dir=logs)

    def _prepare(self, sandbox_id: str, spec: CreateSpec, source: dict, rng, userns_fd):
        """Storage, overlay root, files, cgroups. Returns (volume, root, cgroup); undone by _teardown.

        The volume holds only the sandbox's own writable layers (owned by its id range) and the
        list of read-only lowers they sit on (layers.json: its runtime image, the host's /usr);
        the lowers reach it through idmapped mounts, so nothing is chowned on the way. From a
        snapshot, the volume is a writable copy of the snapshot's, its layers moved to this
        sandbox's range (linux/userns.shift_tree: as much work as the snapshot holds changes)."""
        from localsb.linux import rootfs, userns
        image = self._image_for(source)
        volume = os.path.join(self.ctx.pool.root, "sandboxes", sandbox_id)
        os.makedirs(os.path.dirname(volume), exist_ok=True)
        self.ctx.store.run("UPDATE sandboxes SET volume=? WHERE id=?", volume, sandbox_id)
        if source.get("volume") and image == source["volume"] and \
                os.path.exists(os.path.join(image, rootfs.LAYERS_FILE)):
            self.ctx.pool.snapshot(image, volume, read_only=False)
            for d in rootfs.VOLUME_DIRS:
                p = os.path.join(volume, d)
                if os.path.isdir(p):
                    userns.shift_tree(p, rng.base)
            rootfs.make_volume_dirs(volume, rng.base)
        else:
            if source.get("volume") and image == source["volume"]:
                layers = rootfs.read_layers(image)     # a whole tree of its own (older snapshots)
            else:
                layers = {"root": [os.path.join(image, "root")],
                          "usr": ["/usr"] if source["runtime"].get("usr_overlay") else []}
            self.ctx.pool.create_volume(volume)
            rootfs.make_volume_dirs(volume, rng.base)
            rootfs.write_layers(volume, layers)
        if spec.disk:
            self.ctx.pool.set_quota(volume, parse_size(spec.disk, "disk"))
        elif self.ctx.pool.name == "btrfs":
            # the default: where the pool cannot limit (overlay driver) doctor says so
            self.ctx.pool.set_quota(volume, parse_size(default_limits()["disk"], "disk"))
        root = os.path.join(volume, "root")
        rootfs.mount_root(volume, userns_fd)
        if spec.files:
            from .fileio import fs_write
            fs_write(root, spec.files)
        cg = self.ctx.cgroups.create(self.ctx.cgroup_name(sandbox_id), self._limits(spec))
        self.ctx.store.run("UPDATE sandboxes SET cgroup=? WHERE id=?", dumps(cg.to_dict()), sandbox_id)
        return volume, root, cg

    def sandbox_create(self, spec: CreateSpec, stdin: bytes | None = None, stdin_path: str | None = None,
                       stdin_done_path: str | None = None) -> dict:
        """Interactive, or one-shot started in the background (mockcloud's run). A one-shot's stdin is
        ``stdin`` bytes, or a file ``stdin_path`` that grows until ``stdin_done_path`` exists."""
        source = self._check_features(spec)
        sandbox_id = new_id("sandbox")
        spec.org_id = spec.org_id or DEFAULT_ORG
        oneshot = spec.mode == "oneshot"
        rng, userns_fd = self._id_range()
        try:
            self._insert_sandbox(spec, source, sandbox_id, rng.base)
            try:
                volume, root, cg = self._prepare(sandbox_id, spec, source, rng, userns_fd)
                from .network import on_create
                on_create(self.ctx, sandbox_id, spec)
                from .supervisor import launch
                sup_pid, init_pid = launch(self.ctx, sandbox_id, root, cg, rng.fd, userns_fd)
            except BaseException as exc:
                teardown(self.ctx, sandbox_id, final=None)
                self.ctx.store.run("DELETE FROM sandboxes WHERE id=?", sandbox_id)
                self.ctx.store.run("DELETE FROM events WHERE sandbox_id=?", sandbox_id)
                raise host_error(exc, "create sandbox") from exc
        finally:
            # the supervisor (and its keeper) hold the range and the namespace from here
            rng.close()
            if userns_fd is not None:
                os.close(userns_fd)
        self.ctx.store.run("UPDATE sandboxes SET status='idle', supervisor_pid=?, supervisor_start=?, init_pid=?, "
                       "updated_at=? WHERE id=? AND status='creating'",
                       sup_pid, proc_start_time(sup_pid), init_pid, time.time(), sandbox_id)
        event(self.ctx, sandbox_id, spec.org_id, "create", {"mode": spec.mode, "runtime": source["runtime"]["name"],
                                                       "resources": spec.resources(), "name": spec.name})
        event(self.ctx, sandbox_id, spec.org_id, "lifecycle:started", {"initPid": init_pid})
        result = {"sandboxId": sandbox_id, "status": "idle"}
        if spec.port:
            result["url"] = self.network.sandbox_url(sandbox_id)
        if oneshot:
            info = call(self.ctx, sandbox_id, {"op": "exec_start", "command": spec.command,
                                           "timeout": spec.execution_timeout, "timestamps": spec.timestamps,
                                           "destroy_after": True, "stdin": (stdin or b"").decode("latin-1"),
                                           "stdin_path": stdin_path, "stdin_done_path": stdin_done_path})
            result.update({"status": "running", "executionId": info["executionId"]})
        return result

    # one-shot run, in this process ---------------------------------------------------------------
    def sandbox_run(self, spec: CreateSpec, stdin=None, stdout=None, stderr=None) -> dict:
        spec.mode = "oneshot"
        source = self._check_features(spec)
        spec.org_id = spec.org_id or DEFAULT_ORG
        sandbox_id = new_id("sandbox")
        exec_id = new_id("execution")
        t0 = time.time()
        rng, userns_fd = self._id_range()
        try:
            return self._run(spec, source, sandbox_id, exec_id, t0, rng, userns_fd, stdin, stdout, stderr)
        finally:
            rng.close()
            if userns_fd is not None:
                os.close(userns_fd)

    def _run(self, spec, source, sandbox_id, exec_id, t0, rng, userns_fd, stdin, stdout, stderr) -> dict:
        from localsb.linux import spawn
        self._insert_sandbox(spec, source, sandbox_id, rng.base)
        started = None
        pipes = []
        netns_fd = None
        try:
            volume, root, cg = self._prepare(sandbox_id, spec, source, rng, userns_fd)
            o_r, o_w = os.pipe2(os.O_CLOEXEC)
            e_r, e_w = os.pipe2(os.O_CLOEXEC)
            pipes = [o_r, e_r]
            env = command_env(sandbox_id, {**(source.get("env") or {}), **(spec.env or {})})
            stdin_fd = fileno(stdin)
            proc = spawn.ProcSpec(list(spec.command), env=env, cwd=WORKSPACE, stdin=stdin_fd,
                                  stdout=o_w, stderr=e_w)
            if spec.network:
                # wired before the command starts: its first connect already has a route; the
                # descriptor keeps the namespace (and the link's byte counters) until teardown
                from .network import prepare_run
                netns_fd = prepare_run(self.ctx, sandbox_id, root, userns_fd)
            started = spawn.start(spawn.RootSpec(root, hostname(sandbox_id), netns_fd=netns_fd,
                                                 userns_fd=userns_fd,
                                                 keep_fds=(rng.fd,) if rng.fd is not None else ()),
                                  cg.procs_files(), proc)
            os.close(o_w)
            os.close(e_w)
        except BaseException as exc:
            for fd in pipes + ([netns_fd] if netns_fd is not None else []):
                close_quiet(fd)
            teardown(self.ctx, sandbox_id, final=None)
            self.ctx.store.run("DELETE FROM sandboxes WHERE id=?", sandbox_id)
            raise host_error(exc, "start sandbox") from exc
        t_start = time.time()
        with self.ctx.store.tx() as c:
            c.execute("UPDATE sandboxes SET status='running', init_pid=?, executions=1, updated_at=? WHERE id=?",
                      (started.init_pid, t_start, sandbox_id))
            c.execute("INSERT INTO executions (id,sandbox_id,org_id,type,status,command,started_at,created_at,seq)"
                      " VALUES (?,?,?,?,?,?,?,?,1)", (exec_id, sandbox_id, spec.org_id, "exec", "running",
                                                       dumps(spec.command), t_start, t_start))
        event(self.ctx, sandbox_id, spec.org_id, "create", {"mode": "oneshot", "runtime": source["runtime"]["name"],
                                                       "resources": spec.resources()})
        event(self.ctx, sandbox_id, spec.org_id, "lifecycle:started", {"executionId": exec_id})
        timeout = parse_duration(spec.execution_timeout, "timeout") if spec.execution_timeout else None
        deadline = t_start + timeout if timeout else None
        timed_out = []

        def check_deadline():
            if deadline and not timed_out and time.time() >= deadline:
                timed_out.append(True)
                self.ctx.cgroups.kill(cg)

        so, se, done = out_paths(self.ctx.out_dir(), exec_id)
        result_pump = pump([(pipes[0], so, dest(stdout), spec.timestamps),
                            (pipes[1], se, dest(stderr), spec.timestamps)], deadline_cb=check_deadline)
        status = spawn.read_exit_status(started)
        code = spawn.status_to_exit_code(status)
        oom = oom_kills(self.ctx, cg) > 0
        t_end = time.time()
        if timed_out:
            ex_status, code, error = "timeout", 124, f"execution timed out after {spec.execution_timeout}"
        elif oom and code == 137:
            ex_status, error = "failed", "killed: out of memory (memory limit %s)" % spec.memory
        elif code == 0:
            ex_status, error = "completed", None
        else:
            ex_status, error = "failed", None
        usage = cgroup_usage(self.ctx, cg, t_start, t_end)
        with self.ctx.store.tx() as c:
            c.execute("UPDATE executions SET status=?, exit_code=?, error=?, completed_at=?, duration_ms=?, "
                      "output_truncated=? WHERE id=?", (ex_status, code, error, t_end, int((t_end - t_start) * 1000),
                                                       int(result_pump["truncated"]), exec_id))
        mark_done(done)
        try:
            teardown(self.ctx, sandbox_id, final="terminated", exit_code=code, usage=usage,
                           reason="oom" if oom and code == 137 else ("timeout" if timed_out else "completed"),
                           error=error)
        finally:
            if netns_fd is not None:
                close_quiet(netns_fd)
        return {"sandboxId": sandbox_id, "exitCode": code, "durationMs": int((time.time() - t0) * 1000),
                "executionId": exec_id, "status": ex_status, "error": error}

    # Backend: sandboxes --------------------------------------------------------------------------
    def sandbox_list(self, *, org_id=None, project_id=None, name=None, mode=None, status=None,
                     snapshot_id=None, limit=50, offset=0, sort="created", direction="desc",
                     include_deleted=False, deleted_only=False, live=False) -> dict:
        """Every filter is in the query, so ``total`` counts all matches and a page is a page of them
        (GET /sandbox: ``live``, ``deletedOnly``, ``includeDeleted``, ``snapshotId``)."""
        where, args = [], []
        if deleted_only:
            where.append("status='deleted'")
        elif not include_deleted:
            where.append("status != 'deleted'")
        if live:
            where.append("status IN (%s)" % ",".join("?" * len(SANDBOX_LIVE)))
            args.extend(sorted(SANDBOX_LIVE))
        for column, value in (("org_id", org_id), ("project_id", project_id), ("name", name), ("mode", mode),
                              ("status", status), ("snapshot_id", snapshot_id)):
            if value:
                where.append(f"{column}=?"); args.append(value)
        col = {"name": "name", "created": "created_at", "updated": "updated_at", "status": "status",
               "mode": "mode", "execution_count": "executions"}.get(sort)
        if col is None:
            raise E.ValidationError(f"Invalid sort field '{sort}': expected name, created, updated, status, mode or execution_count")
        if direction not in ("asc", "desc"):
            raise E.ValidationError(f"Invalid direction '{direction}': expected asc or desc")
        limit = bounded(limit, 1, 100, "limit")
        offset = bounded(offset, 0, 10 ** 9, "offset")
        w = " AND ".join(where) or "1"
        total = self.ctx.store.one(f"SELECT COUNT(*) FROM sandboxes WHERE {w}", *args)[0]
        rows = self.ctx.store.all(f"SELECT * FROM sandboxes WHERE {w} ORDER BY {col} {direction}, rowid {direction} "
                              f"LIMIT ? OFFSET ?", *args, limit, offset)
        return {"sandboxes": [render.sandbox_summary(r, self.ctx.org_names) for r in rows], "total": total}

    def sandbox_get(self, sandbox_id, *, org_id=None, include_deleted=False) -> dict:
        row = sandbox_row(self.ctx, sandbox_id, org_id, include_deleted)
        return render.sandbox_info(row, self.ctx.org_names, url=self.network.sandbox_url(row))

    def sandbox_status(self, sandbox_id, *, wait_for=None, wait_ms=None, org_id=None) -> dict:
        deadline = time.monotonic() + (wait_ms or 0) / 1000.0
        while True:
            row = sandbox_row(self.ctx, sandbox_id, org_id, include_deleted=True)
            if not wait_for or row["status"] in wait_for or time.monotonic() >= deadline:
                d = {"sandboxId": sandbox_id, "status": row["status"]}
                if row["exit_code"] is not None and row["status"] in ("terminated", "failed", "deleted"):
                    d["exitCode"] = row["exit_code"]
                return d
            time.sleep(0.02)

    def sandbox_destroy(self, sandbox_id, *, org_id=None) -> None:
        row = sandbox_row(self.ctx, sandbox_id, org_id, include_deleted=False)
        if row["status"] in ("terminated", "failed"):
            self.ctx.store.run("UPDATE sandboxes SET status='deleted', updated_at=? WHERE id=?", time.time(), sandbox_id)
            event(self.ctx, sandbox_id, row["org_id"], "destroy", {"previousStatus": row["status"]})
            return
        if row["supervisor_pid"] and process_alive(row["supervisor_pid"], row["supervisor_start"]):
            try:
                call(self.ctx, sandbox_id, {"op": "destroy"}, timeout=30)
            except (E.SandboxTerminated, E.HostError, OSError):
                pass
            # the supervisor exits right after answering: return only once it is gone
            deadline = time.monotonic() + 2.0
            while process_alive(row["supervisor_pid"], row["supervisor_start"]) and time.monotonic() < deadline:
                time.sleep(0.002)
            if process_alive(row["supervisor_pid"], row["supervisor_start"]):
                kill_quiet(row["supervisor_pid"])
                teardown(self.ctx, sandbox_id, final="terminated", reason="deleted")
        else:
            if self.ctx.store.run("UPDATE sandboxes SET status='stopping', owner_pid=?, owner_start=? WHERE id=? AND "
                              "status=?", os.getpid(), proc_start_time(os.getpid()), sandbox_id, row["status"]) == 1:
                teardown(self.ctx, sandbox_id, final="terminated", reason="deleted", event=True)
        self.ctx.store.run("UPDATE sandboxes SET status='deleted', updated_at=? WHERE id=?", time.time(), sandbox_id)
        event(self.ctx, sandbox_id, row["org_id"], "destroy", {})

    def sandbox_pause(self, sandbox_id, *, org_id=None) -> dict:
        row = live_row(self.ctx, sandbox_id, org_id)
        target = check_transition(sandbox_id, row["status"], "pause")
        from localsb.linux.cgroups import SandboxCgroup
        cg = SandboxCgroup.from_dict(loads(row["cgroup"]))
        self.ctx.cgroups.freeze(cg)
        t = self.ctx.clock.now()
        self.ctx.store.run("UPDATE sandboxes SET status=?, paused_at=?, updated_at=? WHERE id=?", target, t, time.time(),
                       sandbox_id)
        event(self.ctx, sandbox_id, row["org_id"], "pause", {"previousStatus": row["status"]})
        d = {"sandboxId": sandbox_id, "status": target}
        spec = loads(row["spec"], {})
        if spec.get("paused_timeout") and parse_duration(spec["paused_timeout"]) > 0:
            from localsb.api.models import now_iso
            d["terminatesAt"] = now_iso(time.time() + parse_duration(spec["paused_timeout"]))
        return d

    def sandbox_resume(self, sandbox_id, *, org_id=None) -> dict:
        return resume(self.ctx, sandbox_id, org_id)

    def sandbox_env(self, sandbox_id, set_vars, delete, *, org_id=None) -> dict:
        row = sandbox_row(self.ctx, sandbox_id, org_id)
        require_live(sandbox_id, row["status"])
        for k in list(set_vars or {}) + list(delete or []):
            if not isinstance(k, str) or not k or not k.replace("_", "a").isalnum() or k[0].isdigit():
                raise E.ValidationError(f"Invalid environment variable format: {k}. Use KEY=VALUE format.")
        with self.ctx.store.tx() as c:
            env = loads(c.execute("SELECT env FROM sandboxes WHERE id=?", (sandbox_id,)).fetchone()[0], {})
            env.update(set_vars or {})
            for k in delete or []:
                env.pop(k, None)
            c.execute("UPDATE sandboxes SET env=?, updated_at=? WHERE id=?", (dumps(env), time.time(), sandbox_id))
        event(self.ctx, sandbox_id, row["org_id"], "env", {"set": sorted(set_vars or {}), "deleted": sorted(delete or [])})
        return {"env": env}

    # events --------------------------------------------------------------------------------------
    def events_list(self, sandbox_id, *, limit=50, direction="asc", org_id=None) -> dict:
        row = sandbox_row(self.ctx, sandbox_id, org_id, include_deleted=True)
        if direction not in ("asc", "desc"):
            raise E.ValidationError(f"Invalid direction '{direction}': expected asc or desc")
        limit = bounded(limit, 1, 100, "limit")
        rows = self.ctx.store.all(f"SELECT * FROM events WHERE sandbox_id=? ORDER BY seq {direction} LIMIT ?",
                              row["id"], limit)
        return {"events": [render.event_info(r) for r in rows]}

    # stats ---------------------------------------------------------------------------------------
    def stats(self, *, org_id=None, start=None, end=None) -> dict:
        where, args = ["1=1"], []
        if org_id:
            where.append("org_id=?"); args.append(org_id)
        t0 = parse_iso(start) if start else None
        t1 = parse_iso(end) if end else None
        w = " AND ".join(where)
        counts = {r[0]: r[1] for r in self.ctx.store.all(
            f"SELECT status, COUNT(*) FROM sandboxes WHERE {w} GROUP BY status", *args)}
        ew, eargs = list(where), list(args)
        if t0 is not None:
            ew.append("created_at>=?"); eargs.append(t0)
        if t1 is not None:
            ew.append("created_at<?"); eargs.append(t1)
        total_exec = self.ctx.store.one(f"SELECT COUNT(*) FROM executions WHERE {' AND '.join(ew)}", *eargs)[0]
        sw, sargs = list(where), list(args)
        if t0 is not None:
            sw.append("COALESCE(terminated_at, 1e18)>=?"); sargs.append(t0)
        if t1 is not None:
            sw.append("created_at<?"); sargs.append(t1)
        agg = self.ctx.store.one(f"SELECT COALESCE(SUM(cpu_time_ms),0), COALESCE(SUM(memory_byte_sec),0), "
                             f"COALESCE(SUM(network_egress_bytes),0) FROM sandboxes WHERE {' AND '.join(sw)}", *sargs)
        cpu_ms, mem_bs, egress = int(agg[0]), int(agg[1]), int(agg[2])
        # live sandboxes: add what their cgroups have used so far
        for r in self.ctx.store.all(f"SELECT * FROM sandboxes WHERE {w} AND status IN ('idle','running','paused',"
                                f"'suspended')", *args):
            if r["cgroup"]:
                from localsb.linux.cgroups import SandboxCgroup
                u = cgroup_usage(self.ctx, SandboxCgroup.from_dict(loads(r["cgroup"])), r["created_at"], time.time())
                cpu_ms += u.get("cpu_time_ms", 0)
                mem_bs += u.get("memory_byte_sec", 0)
            if loads(r["spec"], {}).get("network"):
                from .network import egress_bytes
                egress += egress_bytes(self.ctx, r) - (r["network_egress_bytes"] or 0)   # the live link's
        running, idle, creating = counts.get("running", 0), counts.get("idle", 0), counts.get("creating", 0)
        active = running + idle + creating + counts.get("paused", 0) + counts.get("suspended", 0)
        return {"services": {"sandbox": {"totalActive": active, "running": running, "idle": idle,
                                         "creating": creating, "totalExecutions": total_exec,
                                         "totalCpuTimeMs": cpu_ms, "totalMemoryByteSec": mem_bs,
                                         "totalNetworkEgressBytes": egress}}}
