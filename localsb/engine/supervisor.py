# long: to be split along its seams (request loop, execution running, idle timer), issue 15
"""The per-sandbox supervisor: one host-side process per live interactive sandbox.

It is the parent of the sandbox's init (through the keeper), and owns what must outlive a CLI
call: the running execution (one at a time: a second gets SandboxBusy), background jobs, output
files, the idle and paused timers. Clients talk to it over a unix socket in the state directory:
one JSON line per request, with the client's stdout/stderr passed as file descriptors
(SCM_RIGHTS) so that output goes straight to the client's terminal while it is recorded.

It is forked from the creating process (a CLI call or mockcloud), never started as a new
interpreter, so that ``create`` stays in the tens of milliseconds.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from localsb.api import errors as E
from localsb.api.models import new_id
from localsb.api.units import parse_duration


from .common import command_env, teardown
from .context import Context
from .output import mark_done, out_paths, pump
from .store import dumps, loads

GRACE_TERM = 5.0  # seconds between SIGTERM and SIGKILL for job destroy


def launch(ctx, sandbox_id: str, root: str, cg, range_fd: int | None = None,
           userns_fd: int | None = None) -> tuple[int, int]:
    """Start the supervisor (double fork, new session, then a fresh interpreter) and wait until the
    sandbox's init is up. Returns (supervisor pid, init pid).

    SQLite is not fork-safe: a child of a process holding the database open fails with 'locking
    protocol'. A single-threaded caller (a CLI call) closes its connection and forks: the
    supervisor then needs no new interpreter (create stays in the tens of ms). A multi-threaded
    caller (mockcloud) cannot close every thread's connection, so its supervisor is a fresh
    interpreter started with ``-S`` and the caller's resolved sys.path.

    The supervisor inherits ``range_fd`` (the reservation of the sandbox's id range, which it and
    the keeper hold for the sandbox's life) and ``userns_fd`` (its user namespace).
    """
    keep = tuple(fd for fd in (range_fd, userns_fd) if fd is not None)
    fds = (-1 if range_fd is None else range_fd, -1 if userns_fd is None else userns_fd)
    if threading.active_count() == 1:
        from .store import Store
        Store.close_all()  # connections reopen on their next use, in each thread
        return _start_detached(lambda w: _supervisor_main(ctx.state_dir, sandbox_id, root, cg.to_dict(), w, *fds))
    # imported before the fork: another thread may hold the import lock
    from localsb.linux.spawn import close_fds
    from .interp import fresh_python

    def exec_fresh(w):
        args, env = fresh_python("localsb.engine.supervisor", ctx.state_dir, sandbox_id, root,
                                 json.dumps(cg.to_dict()), str(w), str(fds[0]), str(fds[1]))
        close_fds({w, *keep})
        for fd in (w, *keep):
            os.set_inheritable(fd, True)
        os.execve(sys.executable, args, env)
    return _start_detached(exec_fresh)


def _start_detached(body) -> tuple[int, int]:
    """Double fork into a new session and run ``body(report_fd)`` there (it never returns: it
    becomes the supervisor); wait for its one-line report. Returns (supervisor pid, init pid)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            body(w)
        except BaseException:  # noqa: BLE001
            _report_failure(w)
        os._exit(0)
    os.close(w)
    return _await_report(pid, r)


def _report_failure(fd) -> None:
    """In the starting supervisor: send the traceback up the report pipe on one line, then die."""
    try:
        import traceback
        os.write(fd, b"ERR " + traceback.format_exc().encode()[-2000:].replace(b"\n", b" | ") + b"\n")
    finally:
        os._exit(1)


def _await_report(pid, r) -> tuple[int, int]:
    try:
        os.waitpid(pid, 0)
        buf = b""
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(r)
    line = buf.decode(errors="replace").strip()
    if line.startswith("OK "):
        _, sup, init = line.split()
        return int(sup), int(init)
    raise E.HostError(f"sandbox supervisor failed to start: {line[4:] or 'no answer'}")


def main():
    """Entry point of the supervisor interpreter (argv: state_dir sandbox_id root cgroup_json fd)."""
    state_dir, sandbox_id, root, cg_json, fd, range_fd, userns_fd = sys.argv[1:8]
    report_fd = int(fd)
    try:
        _supervisor_main(state_dir, sandbox_id, root, json.loads(cg_json), report_fd, int(range_fd), int(userns_fd))
    except BaseException:  # noqa: BLE001
        _report_failure(report_fd)


# supervisor side --------------------------------------------------------------------------------
def _supervisor_main(state_dir, sandbox_id, root, cg_dict, report_fd, range_fd=-1, userns_fd=-1):
    devnull = os.open("/dev/null", os.O_RDWR)
    log_path = os.path.join(state_dir, "logs", sandbox_id + ".log")
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # Close everything inherited (a server's listening socket, the creator's database handle...).
    from localsb.linux.spawn import close_fds
    close_fds({report_fd, range_fd, userns_fd})
    for held in (range_fd, userns_fd):
        if held >= 0:
            os.set_inheritable(held, False)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    import faulthandler
    faulthandler.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sup = Supervisor(state_dir, sandbox_id, root, cg_dict)
    sup.range_fd = range_fd if range_fd >= 0 else None
    sup.userns_fd = userns_fd if userns_fd >= 0 else None
    sup.start(report_fd)
    sup.serve()
    os._exit(0)


class Supervisor:
    def __init__(self, state_dir, sandbox_id, root, cg_dict):
        from localsb.linux.cgroups import SandboxCgroup
        self.ctx = Context(state_dir)
        self.store = self.ctx.store
        self.sandbox_id = sandbox_id
        self.root = root
        self.cg = SandboxCgroup.from_dict(cg_dict)
        self.lock = threading.Lock()
        self.current = None          # execution id running now
        self.jobs = {}               # job id -> dict(waiter, cg)
        self.stopping = False
        self.sock = None
        self.started = None
        self.pidfd = None
        self.seq = 0
        self.restarting = False
        self.finishing = False
        self._ready = None           # (spawn.ReadyWaiter, its cgroup) for the next exec or job
        self._ready_lock = threading.Lock()
        self._ready_n = 0
        self._want_prime = False
        self.range_fd = None         # the id range's reservation (linux/userns.py), held for life
        self.userns_fd = None        # the sandbox's user namespace: its keepers join it, restore idmaps with it

    def _root_spec(self):
        from localsb.linux import spawn
        return spawn.RootSpec(self.root, self.sandbox_id.replace("_", "-"), userns_fd=self.userns_fd,
                              keep_fds=(self.range_fd,) if self.range_fd is not None else ())

    # lifecycle -----------------------------------------------------------------------------------
    def start(self, report_fd):
        from localsb.linux import spawn
        spawn.set_subreaper()
        row = self.store.one("SELECT * FROM sandboxes WHERE id=?", self.sandbox_id)
        self.org_id = row["org_id"]
        self.spec = loads(row["spec"], {})
        self.oneshot = row["mode"] == "oneshot"   # its one command starts on a fresh waiter
        self.seq = row["executions"]
        try:
            self.started = spawn.start(self._root_spec(), self.cg.procs_files())
            os.close(self.started.status_fd)
            self.pidfd = os.pidfd_open(self.started.init_pid)
            if self.spec.get("network"):
                # before OK: nothing runs in the sandbox until its link, routes and egress are up
                from .network import attach_pid
                attach_pid(self.ctx, self.sandbox_id, self.started.init_pid, self.root)
            path = self.ctx.sock_path(self.sandbox_id)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            os.chmod(path, 0o600)
            self.sock.listen(64)
        except BaseException as e:  # noqa: BLE001
            os.write(report_fd, f"ERR {e}\n".encode())
            os._exit(1)
        os.write(report_fd, f"OK {os.getpid()} {self.started.init_pid}\n".encode())
        os.close(report_fd)
        threading.Thread(target=self._watch, daemon=True).start()
        self._prime_later()

    def serve(self):
        # The process ends only through os._exit in the thread that tears the sandbox down:
        # returning from here while a destroy runs would kill it half-way.
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.stopping:
                    while True:
                        time.sleep(3600)
                time.sleep(0.01)
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _watch(self):
        """Init death, idle timeout, paused timeout: checked every 200 ms."""
        idle = parse_duration(self.spec["idle_timeout"]) if self.spec.get("idle_timeout") else None
        paused = parse_duration(self.spec["paused_timeout"]) if self.spec.get("paused_timeout") else None
        while not self.stopping:
            time.sleep(0.2)
            if self.restarting:
                continue
            try:
                pid, status = os.waitpid(self.started.keeper_pid, os.WNOHANG)
            except ChildProcessError:
                pid = 0 if self.restarting else self.started.keeper_pid
            if pid and not self.restarting:
                self._shutdown("failed", reason="init exited", error="the sandbox's init process exited")
                return
            row = self.store.one("SELECT status, last_activity, paused_at FROM sandboxes WHERE id=?", self.sandbox_id)
            if row is None or row["status"] in ("deleted", "terminated", "failed", "stopping"):
                continue
            now = self.ctx.clock.now()
            busy = self.current is not None or any(j.get("running") for j in self.jobs.values())
            if idle and row["status"] == "idle" and not busy and now - row["last_activity"] >= idle:
                self._shutdown("terminated", reason="idle timeout")
                return
            if paused and row["status"] in ("suspended", "paused") and row["paused_at"] and \
                    now - row["paused_at"] >= paused:
                self._shutdown("terminated", reason="paused timeout")
                return

    def _shutdown(self, final, reason, error=None):
        with self.lock:
            if self.stopping:
                return
            self.stopping = True
        self._drop_ready()
        self.store.run("UPDATE sandboxes SET status='stopping' WHERE id=? AND status NOT IN ('deleted')",
                       self.sandbox_id)
        teardown(self.ctx, self.sandbox_id, final=final, reason=reason, error=error)
        try:
            self.sock.close()
        except OSError:
            pass
        os._exit(0)

    # requests ------------------------------------------------------------------------------------
    def _handle(self, conn):
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 4)
            while not data.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    break
                data += more
            msg = json.loads(data)
            op = msg.get("op")
            handler = getattr(self, "op_" + str(op), None)
            if handler is None:
                raise E.ValidationError(f"unknown supervisor operation {op!r}")
            result = handler(msg, fds)
            reply = {"ok": True, "result": result}
        except E.LocalsbError as e:
            reply = {"ok": False, "code": e.code, "message": e.message}
            fds = locals().get("fds") or []
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            reply = {"ok": False, "code": "HOST_ERROR", "message": f"supervisor error: {e}"}
            fds = locals().get("fds") or []
        finally:
            pass
        for fd in fds or []:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            conn.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            pass
        finally:
            conn.close()
        if self._want_prime:
            self._want_prime = False
            self._prime()
        if reply.get("ok") and msg.get("op") == "destroy":
            os._exit(0)

    # starting commands ---------------------------------------------------------------------------
    def _spawn(self, proc, cg_name):
        """Start ``proc`` in the sandbox in a cgroup of its own: on the ready waiter when there is
        one (its cgroup join is already paid), else on a fresh one. Returns (waiter pid, cgroup)."""
        from localsb.linux import spawn
        ready = self._take_ready()
        try:
            if ready is not None:
                try:
                    return ready[0].launch(proc), ready[1]
                except OSError:     # socket.timeout is one
                    self._discard(ready)
            cg = self.ctx.cgroups.create_child(self.cg, cg_name)
            try:
                return spawn.enter(self.pidfd, cg.procs_files(), proc), cg
            except BaseException:
                self._remove_cgroup(cg)
                raise
        finally:
            # the next one is forked once this request is answered (_handle): forked now, it
            # would compete with this request for the GIL
            self._want_prime = True

    def _prime(self):
        """Fork the waiter of the next exec or job ahead of time (spawn.ReadyWaiter)."""
        from localsb.linux import spawn
        with self._ready_lock:
            if (self._ready is not None or self.stopping or self.restarting or self.pidfd is None
                    or getattr(self, "oneshot", False)):
                return
            self._ready_n += 1
            try:
                cg = self.ctx.cgroups.create_child(self.cg, f"proc-{self._ready_n}")
            except Exception as e:  # noqa: BLE001 - the next command forks its own waiter
                print(f"localsb: no waiter forked ahead: {e}", file=sys.stderr)
                return
            try:
                self._ready = (spawn.ReadyWaiter(self.pidfd, cg.procs_files()), cg)
            except Exception as e:  # noqa: BLE001
                print(f"localsb: no waiter forked ahead: {e}", file=sys.stderr)
                self._remove_cgroup(cg)

    def _prime_later(self):
        threading.Thread(target=self._prime, daemon=True).start()

    def _take_ready(self):
        with self._ready_lock:
            ready, self._ready = self._ready, None
        return ready

    def _drop_ready(self) -> None:
        """Before the sandbox stops or restarts: wait out a fork in progress, then end the ready
        waiter (once ``stopping`` or ``restarting`` is set, no new one is forked)."""
        ready = self._take_ready()
        if ready is not None:
            self._discard(ready)

    def _discard(self, ready) -> None:
        try:
            ready[0].discard()
        finally:
            self._remove_cgroup(ready[1])

    def _remove_cgroup(self, cg) -> None:
        try:
            self.ctx.cgroups.remove(cg)
        except Exception:  # noqa: BLE001 - the sandbox's teardown removes it with the rest
            pass

    def op_restore(self, msg, fds):
        return _restore_volume(self, msg, fds)

    def op_ping(self, msg, fds):
        return {"pid": os.getpid()}

    def op_destroy(self, msg, fds):
        with self.lock:
            self.stopping = True
        self._drop_ready()
        teardown(self.ctx, self.sandbox_id, final="terminated", reason=msg.get("reason") or "deleted")
        return {}

    def _reserve(self):
        # An execution whose command has exited is only recording its end: wait for it (briefly)
        # rather than answer busy to a client that already saw it completed.
        deadline = time.monotonic() + 10.0
        while self.finishing and self.current is not None and time.monotonic() < deadline:
            time.sleep(0.002)
        with self.lock:
            if self.stopping:
                raise E.SandboxTerminated(self.sandbox_id, "stopping")
            if self.current is not None:
                raise E.SandboxBusy(self.sandbox_id)
            self.finishing = False
            exec_id = new_id("execution")
            self.current = exec_id
            self.seq += 1
            return exec_id, self.seq

    def op_exec(self, msg, fds):
        exec_id, seq = self._reserve()
        want = msg.get("fds") or [False, False]
        it = iter(fds)
        out_fd = next(it) if want[0] else None
        err_fd = next(it) if len(want) > 1 and want[1] else None
        return self._run_exec(exec_id, seq, msg, out_fd, err_fd, None)

    def op_exec_start(self, msg, fds):
        exec_id, seq = self._reserve()
        stdin = msg.get("stdin")
        t0 = time.time()
        self._record_start(exec_id, seq, msg["command"], t0)
        threading.Thread(target=self._run_exec, args=(exec_id, seq, msg, None, None,
                                                     stdin.encode("latin-1") if stdin else None, t0),
                         daemon=True).start()
        return {"executionId": exec_id, "sandboxId": self.sandbox_id, "status": "running",
                "command": msg["command"], "type": "exec"}

    def _record_start(self, exec_id, seq, command, t0):
        with self.store.tx() as c:
            c.execute("INSERT INTO executions (id,sandbox_id,org_id,type,status,command,started_at,created_at,seq) "
                      "VALUES (?,?,?,?,?,?,?,?,?)", (exec_id, self.sandbox_id, self.org_id, "exec", "running",
                                                    dumps(command), t0, t0, seq))
            c.execute("UPDATE sandboxes SET status=CASE WHEN status='idle' THEN 'running' ELSE status END, "
                      "executions=executions+1, updated_at=?, last_activity=? WHERE id=?",
                      (t0, self.ctx.clock.now(), self.sandbox_id))

    def _run_exec(self, exec_id, seq, msg, out_fd, err_fd, stdin_data, t0=None):
        from localsb.linux import spawn
        from localsb.engine import render
        command = msg["command"]
        destroy_after = bool(msg.get("destroy_after"))
        try:
            if t0 is None:
                t0 = time.time()
                self._record_start(exec_id, seq, command, t0)
            env = command_env(self.sandbox_id, loads(self.store.one(
                "SELECT env FROM sandboxes WHERE id=?", self.sandbox_id)["env"], {}))
            timeout = parse_duration(msg["timeout"]) if msg.get("timeout") else \
                (parse_duration(self.spec["execution_timeout"]) if self.spec.get("execution_timeout") else None)
            so, se, done = out_paths(self.ctx.out_dir(), exec_id)
            o_r, o_w = os.pipe2(os.O_CLOEXEC)
            e_r, e_w = os.pipe2(os.O_CLOEXEC)
            in_r = in_w = None
            if stdin_data or msg.get("stdin_path"):
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
            waiter, child_cg = self._spawn(spawn.ProcSpec(list(command), env=env, cwd="/home/agentuity",
                                                          stdin=in_r, stdout=o_w, stderr=e_w), f"exec-{seq}")
            for fd in (o_w, e_w, in_r):
                if fd is not None:
                    os.close(fd)
            if in_w is not None:
                # started after the fork, so no other process holds the write end
                threading.Thread(target=_feed, args=(in_w, stdin_data, msg.get("stdin_path"),
                                                     msg.get("stdin_done_path")), daemon=True).start()
            state = {"status": None, "timed_out": False}
            deadline = time.monotonic() + timeout if timeout else None

            def check_deadline():
                if deadline and not state["timed_out"] and time.monotonic() >= deadline:
                    state["timed_out"] = True
                    self.ctx.cgroups.kill(child_cg)

            def exited():
                if state["status"] is None:
                    try:
                        pid, st = os.waitpid(waiter, os.WNOHANG)
                    except ChildProcessError:
                        pid, st = waiter, None
                    if pid:
                        state["status"] = st if st is not None else 9
                return state["status"] is not None

            res = pump([(o_r, so, out_fd, bool(msg.get("timestamps"))),
                        (e_r, se, err_fd, bool(msg.get("timestamps")))],
                       deadline_cb=check_deadline, done_cb=exited)
            while not exited():
                spawn.await_exit(waiter, check_deadline)
            self.finishing = True
            code = spawn.status_to_exit_code(state["status"])
            oom = self._oom_delta()
            if state["timed_out"]:
                status, code, error = "timeout", 124, f"execution timed out after {msg.get('timeout') or self.spec.get('execution_timeout')}"
            elif oom and code == 137:
                status, error = "failed", f"killed: out of memory (memory limit {self.spec.get('memory')})"
            elif code == 0:
                status, error = "completed", None
            else:
                status, error = "failed", None
            t1 = time.time()
            with self.store.tx() as c:
                c.execute("UPDATE executions SET status=?, exit_code=?, error=?, completed_at=?, duration_ms=?, "
                          "output_truncated=? WHERE id=?", (status, code, error, t1, int((t1 - t0) * 1000),
                                                           int(res["truncated"]), exec_id))
                c.execute("UPDATE sandboxes SET status=CASE WHEN status='running' THEN 'idle' ELSE status END, "
                          "updated_at=?, last_activity=?, exit_code=? WHERE id=?",
                          (t1, self.ctx.clock.now(), code, self.sandbox_id))
            mark_done(done)
            # Processes the command left in the background (nohup server &) keep running in their
            # sub-cgroup; it goes with the sandbox. An empty one is removed now.
            try:
                if not self.ctx.cgroups.populated(child_cg):
                    self.ctx.cgroups.remove(child_cg)
            except Exception:
                pass
            info = render.execution_info(self.store.one("SELECT * FROM executions WHERE id=?", exec_id))
        except BaseException as exc:
            import traceback
            traceback.print_exc()   # into the sandbox's log
            self.store.run("UPDATE executions SET status='failed', error=?, completed_at=? WHERE id=? AND "
                           "status IN ('queued','running')", f"could not start the command: {exc}",
                           time.time(), exec_id)
            self.store.run("UPDATE sandboxes SET status=CASE WHEN status='running' THEN 'idle' ELSE status END "
                           "WHERE id=?", self.sandbox_id)
            mark_done(out_paths(self.ctx.out_dir(), exec_id)[2])
            raise
        finally:
            for fd in (out_fd, err_fd):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            with self.lock:
                self.current = None
        if destroy_after:
            reason = "completed"
            if info.get("status") == "timeout":
                reason = "timeout"
            elif "out of memory" in (info.get("error") or ""):
                reason = "oom"
            threading.Thread(target=self._finish_oneshot, args=(info, reason), daemon=True).start()
        return info

    def _finish_oneshot(self, info, reason):
        with self.lock:
            if self.stopping:
                return
            self.stopping = True
        self._drop_ready()
        teardown(self.ctx, self.sandbox_id, final="terminated", exit_code=info.get("exitCode"),
                              reason=reason, error=info.get("error"))
        os._exit(0)

    _oom_seen = 0

    def _oom_delta(self) -> int:
        try:
            n = int(self.ctx.cgroups.stats(self.cg).get("oom_kills") or 0)
        except Exception:
            return 0
        delta = n - self._oom_seen
        self._oom_seen = n
        return delta

    # jobs ----------------------------------------------------------------------------------------
    def op_job_create(self, msg, fds):
        from localsb.linux import spawn
        command = msg["command"]
        job_id = new_id("job")
        t0 = time.time()
        with self.store.tx() as c:
            seq = c.execute("SELECT COUNT(*) FROM jobs WHERE sandbox_id=?", (self.sandbox_id,)).fetchone()[0] + 1
            c.execute("INSERT INTO jobs (id,sandbox_id,org_id,command,status,started_at,created_at,seq) VALUES "
                      "(?,?,?,?,?,?,?,?)", (job_id, self.sandbox_id, self.org_id, dumps(command), "running", t0, t0, seq))
            c.execute("UPDATE sandboxes SET last_activity=? WHERE id=?", (self.ctx.clock.now(), self.sandbox_id))
        env = command_env(self.sandbox_id, loads(self.store.one(
            "SELECT env FROM sandboxes WHERE id=?", self.sandbox_id)["env"], {}))
        so, se, done = out_paths(self.ctx.out_dir(), job_id)
        o_r, o_w = os.pipe2(os.O_CLOEXEC)
        e_r, e_w = os.pipe2(os.O_CLOEXEC)
        try:
            waiter, child_cg = self._spawn(spawn.ProcSpec(list(command), env=env, cwd="/home/agentuity",
                                                          stdout=o_w, stderr=e_w), f"job-{job_id}")
        except BaseException:
            self.store.run("UPDATE jobs SET status='failed', error='could not start', completed_at=? WHERE id=?",
                           time.time(), job_id)
            mark_done(done)
            raise
        finally:
            os.close(o_w)
            os.close(e_w)
        job = {"waiter": waiter, "cg": child_cg, "running": True, "cancelled": False, "status": None}
        self.jobs[job_id] = job
        threading.Thread(target=self._job_wait, args=(job_id, job, o_r, e_r, so, se, done), daemon=True).start()
        from localsb.engine import render
        return render.job_info(self.store.one("SELECT * FROM jobs WHERE id=?", job_id))

    def _job_wait(self, job_id, job, o_r, e_r, so, se, done):
        def exited():
            if job["status"] is None:
                try:
                    pid, st = os.waitpid(job["waiter"], os.WNOHANG)
                except ChildProcessError:
                    pid, st = job["waiter"], 9
                if pid:
                    job["status"] = st
            return job["status"] is not None
        from localsb.linux import spawn
        pump([(o_r, so, None, False), (e_r, se, None, False)], done_cb=exited)
        while not exited():
            spawn.await_exit(job["waiter"])
        code = spawn.status_to_exit_code(job["status"])
        if job["cancelled"]:
            status = "cancelled"
        else:
            status = "completed" if code == 0 else "failed"
        t1 = time.time()
        self.store.run("UPDATE jobs SET status=?, exit_code=?, completed_at=? WHERE id=?", status, code, t1, job_id)
        self.store.run("UPDATE sandboxes SET last_activity=? WHERE id=?", self.ctx.clock.now(), self.sandbox_id)
        mark_done(done)
        job["running"] = False
        try:
            self.ctx.cgroups.remove(job["cg"])
        except Exception:
            pass

    def op_job_destroy(self, msg, fds):
        job_id = msg["job_id"]
        job = self.jobs.get(job_id)
        from localsb.engine import render
        row = self.store.one("SELECT * FROM jobs WHERE id=? AND sandbox_id=?", job_id, self.sandbox_id)
        if row is None:
            raise E.JobNotFound(job_id)
        if job is None or not job["running"]:
            return render.job_info(row)
        job["cancelled"] = True
        if not msg.get("force"):
            for pid in self.ctx.cgroups.pids(job["cg"]):
                if pid != job["waiter"]:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + float(msg.get("grace") or GRACE_TERM)
            while job["running"] and time.monotonic() < deadline:
                time.sleep(0.02)
        if job["running"]:
            self.ctx.cgroups.kill(job["cg"])
        deadline = time.monotonic() + 5
        while job["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        return render.job_info(self.store.one("SELECT * FROM jobs WHERE id=?", job_id))


def _feed(fd, data, path=None, done_path=None, limit=600.0):
    """Write stdin bytes, or tail a file that grows until ``done_path`` exists, then close."""
    try:
        if data:
            os.write(fd, data)
        if path:
            pos, deadline = 0, time.monotonic() + limit
            while time.monotonic() < deadline:
                finished = done_path is None or os.path.exists(done_path)
                try:
                    with open(path, "rb") as fh:
                        fh.seek(pos)
                        chunk = fh.read()
                except FileNotFoundError:
                    chunk = b""
                if chunk:
                    os.write(fd, chunk)
                    pos += len(chunk)
                elif finished:
                    break
                else:
                    time.sleep(0.01)
    except OSError:
        pass
    finally:
        os.close(fd)


RETIRED_MAX_AGE = 600.0   # a retired volume older than this was left by a supervisor that died


def _retire_volume(pool, volume: str) -> str | None:
    """Move the sandbox's old volume aside (a rename) for deletion after the restore has answered.

    Deleting a btrfs subvolume evicts its cached inodes first: ~220 ms for a just-used tree of
    30,000 files here, against ~0.3 ms for the rename. Other drivers delete at once."""
    if pool.name != "btrfs":
        pool.delete_volume(volume)
        return None
    trash = os.path.join(pool.root, "retired")
    os.makedirs(trash, exist_ok=True)
    now = time.time()
    for name in os.listdir(trash):
        old = os.path.join(trash, name)
        try:
            if now - os.lstat(old).st_mtime > RETIRED_MAX_AGE:
                pool.delete_volume(old)
        except OSError:
            pass
    dest = os.path.join(trash, f"{os.path.basename(volume)}.{os.urandom(4).hex()}")
    os.rename(volume, dest)
    os.utime(dest)   # its age in the retired directory counts from now
    return dest


def _delete_retired(pool, path: str) -> None:
    """Delete a retired volume in a child process: the ioctl holds the GIL for its whole length,
    which in a thread would stall every request of this supervisor meanwhile."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            pool.delete_volume(path)
        except BaseException as e:  # noqa: BLE001 - a later restore's sweep or teardown retries it
            os.write(2, f"localsb: cannot delete retired volume {path}: {e}\n".encode())
            code = 1
        os._exit(code)
    threading.Thread(target=_reap_quietly, args=(pid,), daemon=True).start()


def _reap_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _restore_volume(sup: "Supervisor", msg, fds):
    """Stop every process of the sandbox, put the checkpoint's tree back, start a fresh init."""
    from localsb.linux import rootfs, spawn
    with sup.lock:
        if sup.current is not None:
            raise E.SandboxBusy(sup.sandbox_id)
        sup.restarting = True
        sup.current = "restore"
    try:
        sup._drop_ready()    # it entered the namespaces of the init about to go
        if sup.spec.get("network"):
            from .network import bank_egress
            bank_egress(sup.ctx, sup.sandbox_id)   # the old link goes with the old init
        cgd = sup.ctx.cgroups
        cgd.kill(sup.cg)
        try:
            cgd.thaw(sup.cg)
        except Exception:
            pass
        try:
            os.waitpid(sup.started.keeper_pid, 0)
        except ChildProcessError:
            pass
        os.close(sup.pidfd)
        for job in sup.jobs.values():
            job["cancelled"] = True
        row = sup.store.one("SELECT * FROM sandboxes WHERE id=?", sup.sandbox_id)
        volume = row["volume"]
        rootfs.unmount_tree(os.path.join(volume, "root"))
        retired = _retire_volume(sup.ctx.pool, volume)
        sup.ctx.pool.snapshot(msg["volume"], volume, read_only=False)
        rootfs.mount_root(volume, sup.userns_fd)
        sup.started = spawn.start(sup._root_spec(), sup.cg.procs_files())
        os.close(sup.started.status_fd)
        sup.pidfd = os.pidfd_open(sup.started.init_pid)
        if sup.spec.get("network"):
            from .network import reattach  # the new init has a new netns: link it anew
            reattach(sup.ctx, sup.sandbox_id, sup.started.init_pid, sup.root)
        sup.store.run("UPDATE sandboxes SET init_pid=?, status='idle', paused_at=NULL, updated_at=?, last_activity=? "
                      "WHERE id=?", sup.started.init_pid, time.time(), sup.ctx.clock.now(), sup.sandbox_id)
        if retired:
            _delete_retired(sup.ctx.pool, retired)
        return {}
    finally:
        with sup.lock:
            sup.current = None
            sup.restarting = False
        sup._prime_later()

