"""Helpers every part of the engine shares: rows, events, supervisor calls, teardown and repair.

Below the parts (sandboxes, executions, jobs, snapshots, ...) and above the context: each function
takes the ``Context`` first. Nothing here imports a part or ``engine.py``.
"""
from __future__ import annotations

import os
import signal
import time

from localsb.api import errors as E
from localsb.api.models import new_id
from localsb.api.status import SANDBOX_PAUSED, check_transition, require_live

from .output import mark_done, out_paths
from .store import dumps, loads, proc_start_time, process_alive

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



# rows, events, calls ---------------------------------------------------------------------------
def sandbox_row(ctx, sandbox_id: str, org_id=None, include_deleted=False):
    row = ctx.store.one("SELECT * FROM sandboxes WHERE id=?", sandbox_id)
    if row is None or (org_id and row["org_id"] != org_id):
        raise E.SandboxNotFound(sandbox_id)
    if row["status"] == "deleted" and not include_deleted:
        raise E.SandboxNotFound(sandbox_id)
    return row


def event(ctx, sandbox_id: str, org_id: str, type_: str, payload: dict | None = None) -> None:
    ctx.store.insert("events", {"id": new_id("event"), "sandbox_id": sandbox_id, "org_id": org_id,
                                 "type": type_, "payload": dumps(payload or {}),
                                 "created_at": time.time()})


def call(ctx, sandbox_id: str, msg: dict, fds=(), timeout=None) -> dict:
    from .control import call as _call
    return _call(ctx.sock_path(sandbox_id), msg, fds=fds, timeout=timeout)


def live_row(ctx, sandbox_id, org_id):
    row = sandbox_row(ctx, sandbox_id, org_id)
    require_live(sandbox_id, row["status"])
    if row["mode"] == "oneshot" and row["supervisor_pid"] is None:
        raise E.InvalidState(f"Sandbox {sandbox_id} is a one-shot sandbox: it runs only its own command")
    if not process_alive(row["supervisor_pid"], row["supervisor_start"]):
        repair(ctx)
        raise E.SandboxTerminated(sandbox_id, "failed")
    return row


def resume(ctx, sandbox_id, org_id=None) -> dict:
    row = live_row(ctx, sandbox_id, org_id)
    target = check_transition(sandbox_id, row["status"], "resume")
    from localsb.linux.cgroups import SandboxCgroup
    cg = SandboxCgroup.from_dict(loads(row["cgroup"]))
    ctx.cgroups.thaw(cg)
    ctx.store.run("UPDATE sandboxes SET status=?, paused_at=NULL, updated_at=?, last_activity=? WHERE id=?",
                   target, time.time(), ctx.clock.now(), sandbox_id)
    event(ctx, sandbox_id, row["org_id"], "resume", {})
    return {"sandboxId": sandbox_id, "status": target}


def auto_resume(ctx, row) -> bool:
    if row["status"] in SANDBOX_PAUSED:
        resume(ctx, row["id"], row["org_id"])
        return True
    return False


def command_env(sandbox_id: str, extra: dict | None) -> dict:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": WORKSPACE,
           "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash", "LANG": "C.UTF-8",
           "HOSTNAME": hostname(sandbox_id), "TERM": "xterm", "AGENTUITY_SANDBOX_ID": sandbox_id}
    env.update(extra or {})
    return env


# usage, teardown and repair --------------------------------------------------------------------
def oom_kills(ctx, cg) -> int:
    try:
        return int(ctx.cgroups.stats(cg).get("oom_kills") or 0)
    except Exception:
        return 0


def cgroup_usage(ctx, cg, t_start, t_end) -> dict:
    try:
        st = ctx.cgroups.stats(cg)
    except Exception:
        return {}
    cpu_ms = int((st.get("cpu_usec") or 0) / 1000)
    mem = st.get("memory_peak") or st.get("memory_bytes") or 0
    return {"cpu_time_ms": cpu_ms, "memory_byte_sec": int(mem * max(0.0, t_end - t_start))}


def teardown(ctx, sandbox_id: str, final: str | None, exit_code=None, usage=None, reason=None,
              error=None, event=True) -> None:
    """Remove everything a sandbox had: processes, cgroups, mounts, volume, socket; then
    record ``final`` status (None: leave the row to the caller). Idempotent."""
    from localsb.linux import rootfs
    row = ctx.store.one("SELECT * FROM sandboxes WHERE id=?", sandbox_id)
    if row is None:
        return
    if loads(row["spec"], {}).get("network"):
        from .network import bank_egress
        bank_egress(ctx, sandbox_id)
    cgd = loads(row["cgroup"])
    if cgd:
        from localsb.linux.cgroups import SandboxCgroup
        cg = SandboxCgroup.from_dict(cgd)
        if usage is None and final:
            usage = cgroup_usage(ctx, cg, row["created_at"], time.time())
        try:
            ctx.cgroups.thaw(cg)
        except Exception:
            pass
        try:
            ctx.cgroups.remove(cg)
        except Exception as e:  # noqa: BLE001 - teardown goes on; the next repair retries
            log(f"teardown {sandbox_id}: cgroup removal failed: {e}")
    try:
        from .network import release
        release(ctx, row)  # veth, nft table, egress; gateways when it was the last user
    except Exception as e:  # noqa: BLE001 - teardown goes on; the next repair retries
        log(f"teardown {sandbox_id}: network cleanup failed: {e}")
    if row["volume"]:
        rootfs.unmount_tree(os.path.join(row["volume"], "root"))
        try:
            ctx.pool.delete_volume(row["volume"])
        except Exception:
            pass
        # volumes a checkpoint restore moved aside and had not deleted yet (supervisor.py)
        retired = os.path.join(ctx.pool.root, "retired")
        prefix = os.path.basename(row["volume"]) + "."
        for name in (os.listdir(retired) if os.path.isdir(retired) else ()):
            if name.startswith(prefix):
                try:
                    ctx.pool.delete_volume(os.path.join(retired, name))
                except Exception:  # noqa: BLE001 - the next restore's sweep retries it
                    pass
    for ck in ctx.store.all("SELECT volume FROM checkpoints WHERE sandbox_id=?", sandbox_id):
        try:
            ctx.pool.delete_volume(ck["volume"])
        except Exception:
            pass
    ctx.store.run("DELETE FROM checkpoints WHERE sandbox_id=?", sandbox_id)
    try:
        os.unlink(ctx.sock_path(sandbox_id))
    except FileNotFoundError:
        pass
    if final:
        usage = usage or {}
        ctx.store.run("UPDATE sandboxes SET status=?, exit_code=COALESCE(?, exit_code), error=COALESCE(?, error),"
                       " cpu_time_ms=COALESCE(?, cpu_time_ms), memory_byte_sec=COALESCE(?, memory_byte_sec),"
                       " terminated_at=?, updated_at=?, supervisor_pid=NULL, init_pid=NULL WHERE id=?",
                       final, exit_code, error, usage.get("cpu_time_ms"), usage.get("memory_byte_sec"),
                       time.time(), time.time(), sandbox_id)
        ctx.store.run("UPDATE jobs SET status='cancelled', completed_at=?, error=COALESCE(error,?) "
                       "WHERE sandbox_id=? AND status IN ('pending','running')", time.time(),
                       "sandbox terminated", sandbox_id)
        if event:
            if row["mode"] == "oneshot" and reason in ("completed", "oom", "timeout"):
                _event(ctx, sandbox_id, row["org_id"], "lifecycle:completed" if exit_code == 0 else "lifecycle:failed",
                           {"exitCode": exit_code, "reason": reason, "error": error})
            _event(ctx, sandbox_id, row["org_id"], "lifecycle:terminated",
                       {"reason": reason or final, "exitCode": exit_code})


def repair(ctx) -> list:
    """Finish what a killed process left: sandboxes whose creator or supervisor is gone."""
    repaired = []
    rows = ctx.store.all("SELECT * FROM sandboxes WHERE status IN ('creating','idle','running','paused',"
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
        if ctx.store.run("UPDATE sandboxes SET status='stopping', owner_pid=?, owner_start=? WHERE id=? "
                          "AND status=?", os.getpid(), proc_start_time(os.getpid()), row["id"], row["status"]) != 1:
            continue
        was_creating = row["status"] == "creating"
        teardown(ctx, row["id"], final="failed", reason="lost",
                       error="the process managing this sandbox died; localsb cleaned it up",
                       event=not was_creating)
        ctx.store.run("UPDATE executions SET status='failed', error='sandbox lost', completed_at=? "
                       "WHERE sandbox_id=? AND status IN ('queued','running')", time.time(), row["id"])
        for ex in ctx.store.all("SELECT id FROM executions WHERE sandbox_id=?", row["id"]):
            done = out_paths(ctx.out_dir(), ex["id"])[2]
            if not os.path.exists(done):
                mark_done(done)
        repaired.append(row["id"])
    return repaired


def bounded(value, lo, hi, what):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise E.ValidationError(f"Invalid {what} '{value}': must be an integer") from None
    if v < lo or v > hi:
        raise E.ValidationError(f"Invalid {what} {v}: must be between {lo} and {hi}")
    return v


def log(msg: str) -> None:
    import sys
    print(f"localsb: {msg}", file=sys.stderr)


def hostname(sandbox_id: str) -> str:
    return sandbox_id.replace("_", "-")


def fileno(stream):
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


def dest(stream):
    """Where pumped output goes: the stream's fd when it has one (no copy through Python), else the object."""
    fd = fileno(stream)
    return fd if fd is not None else stream


def copy_to(rfd, stream):
    try:
        while True:
            data = os.read(rfd, 65536)
            if not data:
                break
            stream.write(data)
    finally:
        os.close(rfd)


def close_quiet(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def kill_quiet(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def host_error(exc, what):
    if isinstance(exc, E.LocalsbError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return E.Cancelled("Cancelled")
    return E.HostError(f"Cannot {what}: {exc}")


_event = event   # teardown's own parameter is called event
