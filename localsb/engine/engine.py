"""The engine: sandbox lifecycle on the local machine, implementing the Backend ABC.

Each method checks state, calls a mechanism of localsb.linux, records state and an event.
An interactive sandbox has a supervisor process (supervisor.py) that owns its init, executions,
jobs and idle timer; a one-shot ``run`` is driven by the calling process itself.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from localsb.api import errors as E
from localsb.api.backend import Backend
from localsb.api.models import new_id, parse_iso
from localsb.api.status import EXECUTION_TERMINAL, SANDBOX_LIVE, SANDBOX_PAUSED, check_transition, require_live
from localsb.api.units import parse_cpu, parse_duration, parse_size
from localsb.linux.private import private_dir

TYPE_CHECKING = False  # annotations only: exec, get, list, ... never load specs.py (dataclasses)
if TYPE_CHECKING:
    from localsb.api.specs import CreateSpec

from . import render, runtimes
from .builds import BuildsMixin
from .checkpoints import CheckpointsMixin
from .clock import Clock
from .fsops import FsMixin
from .jobs import JobsMixin
from .network import NetworkMixin
from .snapshots import SnapshotsMixin
from .output import mark_done, out_paths, pump
from .store import Store, dumps, loads, proc_start_time, process_alive

DEFAULT_ORG = "org_local"
DEFAULT_PIDS = 4096
# Limits every sandbox gets when its create names none (docs/security.md): one sandbox must not be
# able to take the host's memory or fill the shared pool. Overridable per host by the environment.
DEFAULT_MEMORY = "2Gi"
DEFAULT_DISK = "10Gi"


def default_limits() -> dict:
    """{'memory', 'disk', 'pids'}: LOCALSB_DEFAULT_MEMORY / _DISK / _PIDS, else the constants above."""
    return {"memory": os.environ.get("LOCALSB_DEFAULT_MEMORY") or DEFAULT_MEMORY,
            "disk": os.environ.get("LOCALSB_DEFAULT_DISK") or DEFAULT_DISK,
            "pids": int(os.environ.get("LOCALSB_DEFAULT_PIDS") or DEFAULT_PIDS)}
DEFAULT_EXEC_TIMEOUT = 300.0  # hosted: 5 minutes
WORKSPACE = "/home/agentuity"
LIVE_STATUSES = ("creating", "idle", "running", "paused", "suspended", "stopping")


def default_state_dir() -> str:
    return os.environ.get("LOCALSB_HOME") or ("/var/lib/localsb" if os.geteuid() == 0
                                              else os.path.expanduser("~/.local/share/localsb"))


class Engine(CheckpointsMixin, SnapshotsMixin, BuildsMixin, JobsMixin, FsMixin, NetworkMixin, Backend):
    name = "local"

    def __init__(self, state_dir: str | None = None, clock: Clock | None = None, repair: bool = True):
        self.state_dir = os.path.abspath(state_dir or default_state_dir())
        for sub in ("", "run", "out", "logs"):     # 0700: other users' reach ends here
            private_dir(os.path.join(self.state_dir, sub))
        self.store = Store(os.path.join(self.state_dir, "state.db"))
        self.clock = clock or Clock()
        import hashlib
        self.tag = hashlib.sha256(self.state_dir.encode()).hexdigest()[:8]
        self._pool = None
        self._cg = None
        self.org_names: dict = {}
        if repair:
            self.repair()

    # mechanisms, opened lazily (the pool mount costs ~0.1 s the first time on a machine) ---------
    @property
    def pool(self):
        if self._pool is None:
            from localsb.linux.storage import open_pool
            self._pool = open_pool(self.state_dir)
        return self._pool

    @property
    def cgroups(self):
        if self._cg is None:
            from localsb.linux.cgroups import detect
            self._cg = detect()
        return self._cg

    def out_dir(self) -> str:
        return os.path.join(self.state_dir, "out")

    def sock_path(self, sandbox_id: str) -> str:
        return os.path.join(self.state_dir, "run", sandbox_id + ".sock")

    def cgroup_name(self, sandbox_id: str) -> str:
        return f"localsb-{self.tag}-{sandbox_id}"

    # rows ----------------------------------------------------------------------------------------
    def _row(self, sandbox_id: str, org_id=None, include_deleted=False):
        row = self.store.one("SELECT * FROM sandboxes WHERE id=?", sandbox_id)
        if row is None or (org_id and row["org_id"] != org_id):
            raise E.SandboxNotFound(sandbox_id)
        if row["status"] == "deleted" and not include_deleted:
            raise E.SandboxNotFound(sandbox_id)
        return row

    def event(self, sandbox_id: str, org_id: str, type_: str, payload: dict | None = None) -> None:
        self.store.insert("events", {"id": new_id("event"), "sandbox_id": sandbox_id, "org_id": org_id,
                                     "type": type_, "payload": dumps(payload or {}),
                                     "created_at": time.time()})

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
            source = self._snapshot_source(spec.snapshot, spec.org_id)
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
        caps = self.cgroups.capabilities()
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
                "disk_enforced": self.pool.name == "btrfs"}

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
        self.store.insert("sandboxes", {
            "id": sandbox_id, "org_id": spec.org_id or DEFAULT_ORG, "project_id": spec.project_id,
            "name": spec.name, "description": spec.description, "mode": spec.mode, "status": "creating",
            "runtime_id": rt["id"], "runtime_name": rt["name"],
            "snapshot_id": (source.get("snapshot") or {}).get("id") if source.get("snapshot") else None,
            "spec": dumps(stored), "env": dumps({**(source.get("env") or {}), **(spec.env or {})}),
            "owner_pid": os.getpid(), "owner_start": proc_start_time(os.getpid()),
            "created_at": t, "updated_at": t, "last_activity": self.clock.now(),
        })

    def _image_for(self, source: dict) -> str:
        """The image volume a sandbox snapshots: a snapshot's, or its runtime's (built on first use),
        or the cached dependency layer over either."""
        from . import images
        logs = os.path.join(self.state_dir, "logs")
        deps = source.get("dependencies")
        if source.get("volume"):
            if deps:
                return images.ensure_deps(self.pool, source["runtime"]["name"], deps, base_volume=source["volume"],
                                          key=source["snapshot"]["id"], log_dir=logs)
            return source["volume"]
        if deps:
            return images.ensure_deps(self.pool, source["runtime"]["name"], deps, log_dir=logs)
        return images.ensure_image(self.pool, source["runtime"]["name"], log_dir=logs)

    def _prepare(self, sandbox_id: str, spec: CreateSpec, source: dict, rng, userns_fd):
        """Storage, overlay root, files, cgroups. Returns (volume, root, cgroup); undone by _teardown.

        The volume holds only the sandbox's own writable layers (owned by its id range) and the
        list of read-only lowers they sit on (layers.json: its runtime image, the host's /usr);
        the lowers reach it through idmapped mounts, so nothing is chowned on the way. From a
        snapshot, the volume is a writable copy of the snapshot's, its layers moved to this
        sandbox's range (linux/userns.shift_tree: as much work as the snapshot holds changes)."""
        from localsb.linux import rootfs, userns
        image = self._image_for(source)
        volume = os.path.join(self.pool.root, "sandboxes", sandbox_id)
        os.makedirs(os.path.dirname(volume), exist_ok=True)
        self.store.run("UPDATE sandboxes SET volume=? WHERE id=?", volume, sandbox_id)
        if source.get("volume") and image == source["volume"] and \
                os.path.exists(os.path.join(image, rootfs.LAYERS_FILE)):
            self.pool.snapshot(image, volume, read_only=False)
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
            self.pool.create_volume(volume)
            rootfs.make_volume_dirs(volume, rng.base)
            rootfs.write_layers(volume, layers)
        if spec.disk:
            self.pool.set_quota(volume, parse_size(spec.disk, "disk"))
        elif self.pool.name == "btrfs":
            # the default: where the pool cannot limit (overlay driver) doctor says so
            self.pool.set_quota(volume, parse_size(default_limits()["disk"], "disk"))
        root = os.path.join(volume, "root")
        rootfs.mount_root(volume, userns_fd)
        if spec.files:
            from .files import fs_write
            fs_write(root, spec.files)
        cg = self.cgroups.create(self.cgroup_name(sandbox_id), self._limits(spec))
        self.store.run("UPDATE sandboxes SET cgroup=? WHERE id=?", dumps(cg.to_dict()), sandbox_id)
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
                on_create(self, sandbox_id, spec)
                from .supervisor import launch
                sup_pid, init_pid = launch(self, sandbox_id, root, cg, rng.fd, userns_fd)
            except BaseException as exc:
                self._teardown(sandbox_id, final=None)
                self.store.run("DELETE FROM sandboxes WHERE id=?", sandbox_id)
                self.store.run("DELETE FROM events WHERE sandbox_id=?", sandbox_id)
                raise _host_error(exc, "create sandbox") from exc
        finally:
            # the supervisor (and its keeper) hold the range and the namespace from here
            rng.close()
            if userns_fd is not None:
                os.close(userns_fd)
        self.store.run("UPDATE sandboxes SET status='idle', supervisor_pid=?, supervisor_start=?, init_pid=?, "
                       "updated_at=? WHERE id=? AND status='creating'",
                       sup_pid, proc_start_time(sup_pid), init_pid, time.time(), sandbox_id)
        self.event(sandbox_id, spec.org_id, "create", {"mode": spec.mode, "runtime": source["runtime"]["name"],
                                                       "resources": spec.resources(), "name": spec.name})
        self.event(sandbox_id, spec.org_id, "lifecycle:started", {"initPid": init_pid})
        result = {"sandboxId": sandbox_id, "status": "idle"}
        if spec.port:
            result["url"] = self.sandbox_url(sandbox_id)
        if oneshot:
            info = self._call(sandbox_id, {"op": "exec_start", "command": spec.command,
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
            env = self._command_env(sandbox_id, {**(source.get("env") or {}), **(spec.env or {})})
            stdin_fd = _fileno(stdin)
            proc = spawn.ProcSpec(list(spec.command), env=env, cwd=WORKSPACE, stdin=stdin_fd,
                                  stdout=o_w, stderr=e_w)
            if spec.network:
                # wired before the command starts: its first connect already has a route; the
                # descriptor keeps the namespace (and the link's byte counters) until teardown
                from .network import prepare_run
                netns_fd = prepare_run(self, sandbox_id, root, userns_fd)
            started = spawn.start(spawn.RootSpec(root, _hostname(sandbox_id), netns_fd=netns_fd,
                                                 userns_fd=userns_fd,
                                                 keep_fds=(rng.fd,) if rng.fd is not None else ()),
                                  cg.procs_files(), proc)
            os.close(o_w)
            os.close(e_w)
        except BaseException as exc:
            for fd in pipes + ([netns_fd] if netns_fd is not None else []):
                _close(fd)
            self._teardown(sandbox_id, final=None)
            self.store.run("DELETE FROM sandboxes WHERE id=?", sandbox_id)
            raise _host_error(exc, "start sandbox") from exc
        t_start = time.time()
        with self.store.tx() as c:
            c.execute("UPDATE sandboxes SET status='running', init_pid=?, executions=1, updated_at=? WHERE id=?",
                      (started.init_pid, t_start, sandbox_id))
            c.execute("INSERT INTO executions (id,sandbox_id,org_id,type,status,command,started_at,created_at,seq)"
                      " VALUES (?,?,?,?,?,?,?,?,1)", (exec_id, sandbox_id, spec.org_id, "exec", "running",
                                                       dumps(spec.command), t_start, t_start))
        self.event(sandbox_id, spec.org_id, "create", {"mode": "oneshot", "runtime": source["runtime"]["name"],
                                                       "resources": spec.resources()})
        self.event(sandbox_id, spec.org_id, "lifecycle:started", {"executionId": exec_id})
        timeout = parse_duration(spec.execution_timeout, "timeout") if spec.execution_timeout else None
        deadline = t_start + timeout if timeout else None
        timed_out = []

        def check_deadline():
            if deadline and not timed_out and time.time() >= deadline:
                timed_out.append(True)
                self.cgroups.kill(cg)

        so, se, done = out_paths(self.out_dir(), exec_id)
        result_pump = pump([(pipes[0], so, _dest(stdout), spec.timestamps),
                            (pipes[1], se, _dest(stderr), spec.timestamps)], deadline_cb=check_deadline)
        status = spawn.read_exit_status(started)
        code = spawn.status_to_exit_code(status)
        oom = self._oom_kills(cg) > 0
        t_end = time.time()
        if timed_out:
            ex_status, code, error = "timeout", 124, f"execution timed out after {spec.execution_timeout}"
        elif oom and code == 137:
            ex_status, error = "failed", "killed: out of memory (memory limit %s)" % spec.memory
        elif code == 0:
            ex_status, error = "completed", None
        else:
            ex_status, error = "failed", None
        usage = self._usage(cg, t_start, t_end)
        with self.store.tx() as c:
            c.execute("UPDATE executions SET status=?, exit_code=?, error=?, completed_at=?, duration_ms=?, "
                      "output_truncated=? WHERE id=?", (ex_status, code, error, t_end, int((t_end - t_start) * 1000),
                                                       int(result_pump["truncated"]), exec_id))
        mark_done(done)
        try:
            self._teardown(sandbox_id, final="terminated", exit_code=code, usage=usage,
                           reason="oom" if oom and code == 137 else ("timeout" if timed_out else "completed"),
                           error=error)
        finally:
            if netns_fd is not None:
                _close(netns_fd)
        return {"sandboxId": sandbox_id, "exitCode": code, "durationMs": int((time.time() - t0) * 1000),
                "executionId": exec_id, "status": ex_status, "error": error}

    def _command_env(self, sandbox_id: str, extra: dict | None) -> dict:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": WORKSPACE,
               "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash", "LANG": "C.UTF-8",
               "HOSTNAME": _hostname(sandbox_id), "TERM": "xterm", "AGENTUITY_SANDBOX_ID": sandbox_id}
        env.update(extra or {})
        return env

    def _oom_kills(self, cg) -> int:
        try:
            return int(self.cgroups.stats(cg).get("oom_kills") or 0)
        except Exception:
            return 0

    def _usage(self, cg, t_start, t_end) -> dict:
        try:
            st = self.cgroups.stats(cg)
        except Exception:
            return {}
        cpu_ms = int((st.get("cpu_usec") or 0) / 1000)
        mem = st.get("memory_peak") or st.get("memory_bytes") or 0
        return {"cpu_time_ms": cpu_ms, "memory_byte_sec": int(mem * max(0.0, t_end - t_start))}

    # teardown and repair -------------------------------------------------------------------------
    def _teardown(self, sandbox_id: str, final: str | None, exit_code=None, usage=None, reason=None,
                  error=None, event=True) -> None:
        """Remove everything a sandbox had: processes, cgroups, mounts, volume, socket; then
        record ``final`` status (None: leave the row to the caller). Idempotent."""
        from localsb.linux import rootfs
        row = self.store.one("SELECT * FROM sandboxes WHERE id=?", sandbox_id)
        if row is None:
            return
        if loads(row["spec"], {}).get("network"):
            from .network import bank_egress
            bank_egress(self, sandbox_id)
        cgd = loads(row["cgroup"])
        if cgd:
            from localsb.linux.cgroups import SandboxCgroup
            cg = SandboxCgroup.from_dict(cgd)
            if usage is None and final:
                usage = self._usage(cg, row["created_at"], time.time())
            try:
                self.cgroups.thaw(cg)
            except Exception:
                pass
            try:
                self.cgroups.remove(cg)
            except Exception as e:  # noqa: BLE001 - teardown goes on; the next repair retries
                _log(f"teardown {sandbox_id}: cgroup removal failed: {e}")
        try:
            from .network import release
            release(self, row)  # veth, nft table, egress; gateways when it was the last user
        except Exception as e:  # noqa: BLE001 - teardown goes on; the next repair retries
            _log(f"teardown {sandbox_id}: network cleanup failed: {e}")
        if row["volume"]:
            rootfs.unmount_tree(os.path.join(row["volume"], "root"))
            try:
                self.pool.delete_volume(row["volume"])
            except Exception:
                pass
            # volumes a checkpoint restore moved aside and had not deleted yet (supervisor.py)
            retired = os.path.join(self.pool.root, "retired")
            prefix = os.path.basename(row["volume"]) + "."
            for name in (os.listdir(retired) if os.path.isdir(retired) else ()):
                if name.startswith(prefix):
                    try:
                        self.pool.delete_volume(os.path.join(retired, name))
                    except Exception:  # noqa: BLE001 - the next restore's sweep retries it
                        pass
        for ck in self.store.all("SELECT volume FROM checkpoints WHERE sandbox_id=?", sandbox_id):
            try:
                self.pool.delete_volume(ck["volume"])
            except Exception:
                pass
        self.store.run("DELETE FROM checkpoints WHERE sandbox_id=?", sandbox_id)
        try:
            os.unlink(self.sock_path(sandbox_id))
        except FileNotFoundError:
            pass
        if final:
            usage = usage or {}
            self.store.run("UPDATE sandboxes SET status=?, exit_code=COALESCE(?, exit_code), error=COALESCE(?, error),"
                           " cpu_time_ms=COALESCE(?, cpu_time_ms), memory_byte_sec=COALESCE(?, memory_byte_sec),"
                           " terminated_at=?, updated_at=?, supervisor_pid=NULL, init_pid=NULL WHERE id=?",
                           final, exit_code, error, usage.get("cpu_time_ms"), usage.get("memory_byte_sec"),
                           time.time(), time.time(), sandbox_id)
            self.store.run("UPDATE jobs SET status='cancelled', completed_at=?, error=COALESCE(error,?) "
                           "WHERE sandbox_id=? AND status IN ('pending','running')", time.time(),
                           "sandbox terminated", sandbox_id)
            if event:
                if row["mode"] == "oneshot" and reason in ("completed", "oom", "timeout"):
                    self.event(sandbox_id, row["org_id"], "lifecycle:completed" if exit_code == 0 else "lifecycle:failed",
                               {"exitCode": exit_code, "reason": reason, "error": error})
                self.event(sandbox_id, row["org_id"], "lifecycle:terminated",
                           {"reason": reason or final, "exitCode": exit_code})

    def repair(self) -> list:
        """Finish what a killed process left: sandboxes whose creator or supervisor is gone."""
        repaired = []
        rows = self.store.all("SELECT * FROM sandboxes WHERE status IN ('creating','idle','running','paused',"
                              "'suspended','stopping')")
        for row in rows:
            owner_alive = process_alive(row["owner_pid"], row["owner_start"])
            sup_alive = process_alive(row["supervisor_pid"], row["supervisor_start"])
            if row["mode"] == "oneshot" and row["supervisor_pid"] is None:
                alive = owner_alive
            elif row["status"] == "creating":
                alive = owner_alive or sup_alive
            else:
                alive = sup_alive
            if alive:
                continue
            # claim it, so that two repairing processes do not both tear down
            if self.store.run("UPDATE sandboxes SET status='stopping', owner_pid=?, owner_start=? WHERE id=? "
                              "AND status=?", os.getpid(), proc_start_time(os.getpid()), row["id"], row["status"]) != 1:
                continue
            was_creating = row["status"] == "creating"
            self._teardown(row["id"], final="failed", reason="lost",
                           error="the process managing this sandbox died; localsb cleaned it up",
                           event=not was_creating)
            self.store.run("UPDATE executions SET status='failed', error='sandbox lost', completed_at=? "
                           "WHERE sandbox_id=? AND status IN ('queued','running')", time.time(), row["id"])
            for ex in self.store.all("SELECT id FROM executions WHERE sandbox_id=?", row["id"]):
                done = out_paths(self.out_dir(), ex["id"])[2]
                if not os.path.exists(done):
                    mark_done(done)
            repaired.append(row["id"])
        return repaired

    # supervisor calls ----------------------------------------------------------------------------
    def _call(self, sandbox_id: str, msg: dict, fds=(), timeout=None) -> dict:
        from .supervisor import call
        return call(self.sock_path(sandbox_id), msg, fds=fds, timeout=timeout)

    def _live_row(self, sandbox_id, org_id):
        row = self._row(sandbox_id, org_id)
        require_live(sandbox_id, row["status"])
        if row["mode"] == "oneshot" and row["supervisor_pid"] is None:
            raise E.InvalidState(f"Sandbox {sandbox_id} is a one-shot sandbox: it runs only its own command")
        if not process_alive(row["supervisor_pid"], row["supervisor_start"]):
            self.repair()
            raise E.SandboxTerminated(sandbox_id, "failed")
        return row

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
        limit = _bounded(limit, 1, 100, "limit")
        offset = _bounded(offset, 0, 10 ** 9, "offset")
        w = " AND ".join(where) or "1"
        total = self.store.one(f"SELECT COUNT(*) FROM sandboxes WHERE {w}", *args)[0]
        rows = self.store.all(f"SELECT * FROM sandboxes WHERE {w} ORDER BY {col} {direction}, rowid {direction} "
                              f"LIMIT ? OFFSET ?", *args, limit, offset)
        return {"sandboxes": [render.sandbox_summary(r, self.org_names) for r in rows], "total": total}

    def sandbox_get(self, sandbox_id, *, org_id=None, include_deleted=False) -> dict:
        row = self._row(sandbox_id, org_id, include_deleted)
        return render.sandbox_info(row, self.org_names, url=self.sandbox_url(row))

    def sandbox_status(self, sandbox_id, *, wait_for=None, wait_ms=None, org_id=None) -> dict:
        deadline = time.monotonic() + (wait_ms or 0) / 1000.0
        while True:
            row = self._row(sandbox_id, org_id, include_deleted=True)
            if not wait_for or row["status"] in wait_for or time.monotonic() >= deadline:
                d = {"sandboxId": sandbox_id, "status": row["status"]}
                if row["exit_code"] is not None and row["status"] in ("terminated", "failed", "deleted"):
                    d["exitCode"] = row["exit_code"]
                return d
            time.sleep(0.02)

    def sandbox_destroy(self, sandbox_id, *, org_id=None) -> None:
        row = self._row(sandbox_id, org_id, include_deleted=False)
        if row["status"] in ("terminated", "failed"):
            self.store.run("UPDATE sandboxes SET status='deleted', updated_at=? WHERE id=?", time.time(), sandbox_id)
            self.event(sandbox_id, row["org_id"], "destroy", {"previousStatus": row["status"]})
            return
        if row["supervisor_pid"] and process_alive(row["supervisor_pid"], row["supervisor_start"]):
            try:
                self._call(sandbox_id, {"op": "destroy"}, timeout=30)
            except (E.SandboxTerminated, E.HostError, OSError):
                pass
            # the supervisor exits right after answering: return only once it is gone
            deadline = time.monotonic() + 2.0
            while process_alive(row["supervisor_pid"], row["supervisor_start"]) and time.monotonic() < deadline:
                time.sleep(0.002)
            if process_alive(row["supervisor_pid"], row["supervisor_start"]):
                _kill_quiet(row["supervisor_pid"])
                self._teardown(sandbox_id, final="terminated", reason="deleted")
        else:
            if self.store.run("UPDATE sandboxes SET status='stopping', owner_pid=?, owner_start=? WHERE id=? AND "
                              "status=?", os.getpid(), proc_start_time(os.getpid()), sandbox_id, row["status"]) == 1:
                self._teardown(sandbox_id, final="terminated", reason="deleted", event=True)
        self.store.run("UPDATE sandboxes SET status='deleted', updated_at=? WHERE id=?", time.time(), sandbox_id)
        self.event(sandbox_id, row["org_id"], "destroy", {})

    def sandbox_pause(self, sandbox_id, *, org_id=None) -> dict:
        row = self._live_row(sandbox_id, org_id)
        target = check_transition(sandbox_id, row["status"], "pause")
        from localsb.linux.cgroups import SandboxCgroup
        cg = SandboxCgroup.from_dict(loads(row["cgroup"]))
        self.cgroups.freeze(cg)
        t = self.clock.now()
        self.store.run("UPDATE sandboxes SET status=?, paused_at=?, updated_at=? WHERE id=?", target, t, time.time(),
                       sandbox_id)
        self.event(sandbox_id, row["org_id"], "pause", {"previousStatus": row["status"]})
        d = {"sandboxId": sandbox_id, "status": target}
        spec = loads(row["spec"], {})
        if spec.get("paused_timeout") and parse_duration(spec["paused_timeout"]) > 0:
            from localsb.api.models import now_iso
            d["terminatesAt"] = now_iso(time.time() + parse_duration(spec["paused_timeout"]))
        return d

    def sandbox_resume(self, sandbox_id, *, org_id=None) -> dict:
        row = self._live_row(sandbox_id, org_id)
        target = check_transition(sandbox_id, row["status"], "resume")
        from localsb.linux.cgroups import SandboxCgroup
        cg = SandboxCgroup.from_dict(loads(row["cgroup"]))
        self.cgroups.thaw(cg)
        self.store.run("UPDATE sandboxes SET status=?, paused_at=NULL, updated_at=?, last_activity=? WHERE id=?",
                       target, time.time(), self.clock.now(), sandbox_id)
        self.event(sandbox_id, row["org_id"], "resume", {})
        return {"sandboxId": sandbox_id, "status": target}

    def sandbox_env(self, sandbox_id, set_vars, delete, *, org_id=None) -> dict:
        row = self._row(sandbox_id, org_id)
        require_live(sandbox_id, row["status"])
        for k in list(set_vars or {}) + list(delete or []):
            if not isinstance(k, str) or not k or not k.replace("_", "a").isalnum() or k[0].isdigit():
                raise E.ValidationError(f"Invalid environment variable format: {k}. Use KEY=VALUE format.")
        with self.store.tx() as c:
            env = loads(c.execute("SELECT env FROM sandboxes WHERE id=?", (sandbox_id,)).fetchone()[0], {})
            env.update(set_vars or {})
            for k in delete or []:
                env.pop(k, None)
            c.execute("UPDATE sandboxes SET env=?, updated_at=? WHERE id=?", (dumps(env), time.time(), sandbox_id))
        self.event(sandbox_id, row["org_id"], "env", {"set": sorted(set_vars or {}), "deleted": sorted(delete or [])})
        return {"env": env}

    # executions ----------------------------------------------------------------------------------
    def _auto_resume(self, row) -> bool:
        if row["status"] in SANDBOX_PAUSED:
            self.sandbox_resume(row["id"], org_id=row["org_id"])
            return True
        return False

    def sandbox_execute(self, sandbox_id, command, *, timeout=None, timestamps=False, stdout=None,
                        stderr=None, org_id=None) -> dict:
        if not command:
            raise E.ValidationError("No command given: use -- <command> [args...]")
        if timeout:
            parse_duration(timeout, "timeout")
        row = self._live_row(sandbox_id, org_id)
        resumed = self._auto_resume(row)
        fds, closers = [], []
        threads = []
        for stream in (stdout, stderr):
            fd = _fileno(stream)
            if fd is None and stream is not None:
                r, w = os.pipe()
                t = threading.Thread(target=_copy_to, args=(r, stream), daemon=True)
                t.start()
                threads.append(t)
                closers.append(w)
                fd = w
            fds.append(fd)
        send = [fd for fd in fds if fd is not None]
        msg = {"op": "exec", "command": list(command), "timeout": timeout, "timestamps": bool(timestamps),
               "fds": [fd is not None for fd in fds]}
        try:
            info = self._call(sandbox_id, msg, fds=send)
        finally:
            for w in closers:
                _close(w)
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
        row = self._live_row(sandbox_id, org_id)
        resumed = self._auto_resume(row)
        info = self._call(sandbox_id, {"op": "exec_start", "command": list(command), "timeout": timeout,
                                       "timestamps": bool(timestamps)})
        if resumed:
            info["autoResumed"] = True
        return info

    def execution_list(self, sandbox_id, *, limit=50, org_id=None) -> dict:
        row = self._row(sandbox_id, org_id, include_deleted=True)
        limit = _bounded(limit, 1, 1000, "limit")
        rows = self.store.all("SELECT * FROM executions WHERE sandbox_id=? ORDER BY seq DESC LIMIT ?", row["id"], limit)
        return {"executions": [render.execution_info(r) for r in rows]}

    def _exec_row(self, execution_id, org_id=None):
        r = self.store.one("SELECT * FROM executions WHERE id=?", execution_id)
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
        so, se, _ = out_paths(self.out_dir(), ident)
        return so if stream == "stdout" else se

    def output_done(self, kind: str, ident: str) -> bool:
        return os.path.exists(out_paths(self.out_dir(), ident)[2])

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

    # events --------------------------------------------------------------------------------------
    def events_list(self, sandbox_id, *, limit=50, direction="asc", org_id=None) -> dict:
        row = self._row(sandbox_id, org_id, include_deleted=True)
        if direction not in ("asc", "desc"):
            raise E.ValidationError(f"Invalid direction '{direction}': expected asc or desc")
        limit = _bounded(limit, 1, 100, "limit")
        rows = self.store.all(f"SELECT * FROM events WHERE sandbox_id=? ORDER BY seq {direction} LIMIT ?",
                              row["id"], limit)
        return {"events": [render.event_info(r) for r in rows]}

    # runtimes ------------------------------------------------------------------------------------
    def runtime_list(self, *, limit=50, offset=0, sort="created", direction="desc", org_id=None) -> dict:
        if sort not in ("name", "created"):
            raise E.ValidationError(f"Invalid sort field '{sort}': expected name or created")
        if direction not in ("asc", "desc"):
            raise E.ValidationError(f"Invalid direction '{direction}': expected asc or desc")
        limit = _bounded(limit, 1, 100, "limit")
        offset = _bounded(offset, 0, 10 ** 9, "offset")
        items = sorted(runtimes.CATALOGUE, key=lambda r: r["name"] if sort == "name" else r["created"],
                       reverse=direction == "desc")
        from .images import is_built
        page = items[offset:offset + limit]
        return {"runtimes": [runtimes.wire(r, is_built(self.state_dir, r["name"])) for r in page],
                "total": len(items)}

    def runtime_build(self, name: str) -> dict:
        """Build a runtime's image ahead of its first use."""
        rt = runtimes.resolve_ref(name)
        runtimes.require_buildable(rt)
        from . import images
        t = time.monotonic()
        path = images.ensure_image(self.pool, rt["name"], log_dir=os.path.join(self.state_dir, "logs"))
        info = images.image_info(path)
        return {**runtimes.wire(rt, True), "image": path, "version": info.get("version"),
                "sizeBytes": info.get("sizeBytes"), "durationMs": int((time.monotonic() - t) * 1000)}

    # stats ---------------------------------------------------------------------------------------
    def stats(self, *, org_id=None, start=None, end=None) -> dict:
        where, args = ["1=1"], []
        if org_id:
            where.append("org_id=?"); args.append(org_id)
        t0 = parse_iso(start) if start else None
        t1 = parse_iso(end) if end else None
        w = " AND ".join(where)
        counts = {r[0]: r[1] for r in self.store.all(
            f"SELECT status, COUNT(*) FROM sandboxes WHERE {w} GROUP BY status", *args)}
        ew, eargs = list(where), list(args)
        if t0 is not None:
            ew.append("created_at>=?"); eargs.append(t0)
        if t1 is not None:
            ew.append("created_at<?"); eargs.append(t1)
        total_exec = self.store.one(f"SELECT COUNT(*) FROM executions WHERE {' AND '.join(ew)}", *eargs)[0]
        sw, sargs = list(where), list(args)
        if t0 is not None:
            sw.append("COALESCE(terminated_at, 1e18)>=?"); sargs.append(t0)
        if t1 is not None:
            sw.append("created_at<?"); sargs.append(t1)
        agg = self.store.one(f"SELECT COALESCE(SUM(cpu_time_ms),0), COALESCE(SUM(memory_byte_sec),0), "
                             f"COALESCE(SUM(network_egress_bytes),0) FROM sandboxes WHERE {' AND '.join(sw)}", *sargs)
        cpu_ms, mem_bs, egress = int(agg[0]), int(agg[1]), int(agg[2])
        # live sandboxes: add what their cgroups have used so far
        for r in self.store.all(f"SELECT * FROM sandboxes WHERE {w} AND status IN ('idle','running','paused',"
                                f"'suspended')", *args):
            if r["cgroup"]:
                from localsb.linux.cgroups import SandboxCgroup
                u = self._usage(SandboxCgroup.from_dict(loads(r["cgroup"])), r["created_at"], time.time())
                cpu_ms += u.get("cpu_time_ms", 0)
                mem_bs += u.get("memory_byte_sec", 0)
            if loads(r["spec"], {}).get("network"):
                from .network import egress_bytes
                egress += egress_bytes(self, r) - (r["network_egress_bytes"] or 0)   # the live link's
        running, idle, creating = counts.get("running", 0), counts.get("idle", 0), counts.get("creating", 0)
        active = running + idle + creating + counts.get("paused", 0) + counts.get("suspended", 0)
        return {"services": {"sandbox": {"totalActive": active, "running": running, "idle": idle,
                                         "creating": creating, "totalExecutions": total_exec,
                                         "totalCpuTimeMs": cpu_ms, "totalMemoryByteSec": mem_bs,
                                         "totalNetworkEgressBytes": egress}}}

    # doctor --------------------------------------------------------------------------------------
    def doctor(self) -> dict:
        from .doctor import report
        return report(self)

    def close(self) -> None:
        self.store.close()


# helpers -----------------------------------------------------------------------------------------
def _bounded(value, lo, hi, what):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise E.ValidationError(f"Invalid {what} '{value}': must be an integer") from None
    if v < lo or v > hi:
        raise E.ValidationError(f"Invalid {what} {v}: must be between {lo} and {hi}")
    return v


def _log(msg: str) -> None:
    import sys
    print(f"localsb: {msg}", file=sys.stderr)


def _hostname(sandbox_id: str) -> str:
    return sandbox_id.replace("_", "-")


def _fileno(stream):
    if stream is None:
        return None
    if isinstance(stream, int):
        return stream
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        stream.flush()
    except Exception:
        pass
    return fd


def _dest(stream):
    """Where pumped output goes: the stream's fd when it has one (no copy through Python), else the object."""
    fd = _fileno(stream)
    return fd if fd is not None else stream


def _copy_to(rfd, stream):
    try:
        while True:
            data = os.read(rfd, 65536)
            if not data:
                break
            stream.write(data)
    finally:
        os.close(rfd)


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def _kill_quiet(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _host_error(exc, what):
    if isinstance(exc, E.LocalsbError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return E.Cancelled("Cancelled")
    return E.HostError(f"Cannot {what}: {exc}")


__all__ = ["Engine", "default_state_dir", "DEFAULT_ORG"]
