"""Issues 2, 3, 5: interactive sandboxes through their supervisor: exec, busy, pause/resume,
checkpoints, snapshots, jobs, env, events, repair after SIGKILL."""
from __future__ import annotations

import io
import os
import signal
import secrets
import subprocess
import sys
import threading
import time

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec
from localsb.engine import Engine


def ex(engine, sid, *cmd, **kw):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_execute(sid, list(cmd), stdout=out, stderr=err, **kw)
    return r, out.getvalue().decode(), err.getvalue().decode()


@pytest.fixture
def sbx(engine):
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    yield sid
    try:
        engine.sandbox_destroy(sid)
    except E.NotFound:
        pass


def test_state_persists_between_execs_and_exit_codes(engine, sbx):
    r, out, _ = ex(engine, sbx, "sh", "-c", "echo persisted > state.txt; exit 4")
    assert r["exitCode"] == 4 and r["status"] == "failed"
    r, out, _ = ex(engine, sbx, "cat", "/home/agentuity/state.txt")
    assert out == "persisted\n" and r["exitCode"] == 0 and r["status"] == "completed"
    assert engine.sandbox_get(sbx)["executions"] == 2


def test_busy_gets_error_immediately_then_works(engine, sbx):
    t = threading.Thread(target=ex, args=(engine, sbx, "sleep", "2"))
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    with pytest.raises(E.SandboxBusy):
        ex(engine, sbx, "true")
    assert time.monotonic() - t0 < 0.5
    t.join()
    r, _, _ = ex(engine, sbx, "true")
    assert r["exitCode"] == 0


def test_exec_timeout_kills_only_that_execution(engine, sbx):
    # a duration no other process on the machine uses, so `ps` finds only ours
    marker = f"sleep {60 + secrets.randbelow(10**6) / 10**7:.7f}"
    r, _, _ = ex(engine, sbx, "sh", "-c", f"{marker} & {marker}", timeout="1s")
    assert r["status"] == "timeout" and r["exitCode"] == 124
    assert marker not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    r, out, _ = ex(engine, sbx, "echo", "alive")
    assert out == "alive\n"


def test_output_readable_after_client_killed(engine, sbx, state_dir):
    code = ("import sys,io; from localsb.engine import Engine; e=Engine(sys.argv[1]);"
            "e.sandbox_execute(sys.argv[2], ['sh','-c','echo first; sleep 2; echo second; exit 5'],"
            " stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)")
    p = subprocess.Popen([sys.executable, "-c", code, state_dir, sbx], stdout=subprocess.PIPE)
    time.sleep(1.0)
    p.kill()
    p.wait()
    time.sleep(2.0)
    execs = engine.execution_list(sbx)["executions"]
    info = engine.execution_get(execs[0]["executionId"], wait=10)
    assert info["status"] == "failed" and info["exitCode"] == 5
    buf = io.BytesIO()
    engine.execution_output(info["executionId"], "stdout", buf)
    assert buf.getvalue() == b"first\nsecond\n"


def test_pause_resume_keeps_files_and_processes(engine, sbx):
    ex(engine, sbx, "sh", "-c", "head -c 1000000 /dev/urandom > data.bin; sha256sum data.bin > sum.txt")
    ex(engine, sbx, "sh", "-c", "nohup sh -c 'while :; do date +%s%N >> ticks; sleep 0.05; done' >/dev/null 2>&1 &")
    time.sleep(0.3)
    p = engine.sandbox_pause(sbx)
    assert p["status"] == "suspended"
    assert engine.sandbox_get(sbx)["status"] == "suspended"
    root = engine.store.one("SELECT volume FROM sandboxes WHERE id=?", sbx)["volume"] + "/root/home/agentuity/ticks"
    n1 = len(open(root).read().splitlines())
    time.sleep(0.5)
    assert len(open(root).read().splitlines()) == n1, "a frozen sandbox must not run"
    engine.sandbox_resume(sbx)
    time.sleep(0.3)
    r, out, _ = ex(engine, sbx, "sh", "-c", "sha256sum -c sum.txt && wc -l < ticks")
    assert "data.bin: OK" in out
    assert int(out.split()[-1]) > n1, "the process started before the pause still runs"
    with pytest.raises(E.InvalidState):
        engine.sandbox_resume(sbx)


def test_exec_on_paused_sandbox_auto_resumes(engine, sbx):
    engine.sandbox_pause(sbx)
    r, out, _ = ex(engine, sbx, "echo", "woke")
    assert out == "woke\n" and r.get("autoResumed") is True
    types = [e["type"] for e in engine.events_list(sbx)["events"]]
    assert types[:2] == ["create", "lifecycle:started"] and "pause" in types and "resume" in types


def test_checkpoint_restore_round_trip(engine, sbx):
    ex(engine, sbx, "sh", "-c", "mkdir -p tree && cd tree && for i in $(seq 1 2000); do echo $i > f$i; done;"
                                "ln -s f1 link; chmod 600 f2; head -c 5000000 /dev/urandom > big;"
                                "echo keep > changed; echo gone-later > deleted")
    r, before, _ = ex(engine, sbx, "sh", "-c", "cd tree && find . -printf '%p %m %l\\n' | sort | sha256sum;"
                                              " cat $(ls | sort) | sha256sum")
    ck = engine.checkpoint_create(sbx, "base")
    assert ck["id"].startswith("ckpt_") and ck["parent"] == ""
    with pytest.raises(E.AlreadyExists):
        engine.checkpoint_create(sbx, "base")
    ex(engine, sbx, "sh", "-c", "cd tree && echo new > added && echo different > changed && rm deleted f5")
    ck2 = engine.checkpoint_create(sbx, "after")
    assert ck2["parent"] == "base"
    engine.checkpoint_restore(sbx, "base")
    r, after, _ = ex(engine, sbx, "sh", "-c", "cd tree && find . -printf '%p %m %l\\n' | sort | sha256sum;"
                                             " cat $(ls | sort) | sha256sum")
    assert after == before
    names = [c["name"] for c in engine.checkpoint_list(sbx)["checkpoints"]]
    assert names == ["base", "after"]
    engine.checkpoint_restore(sbx, ck2["id"])
    r, out, _ = ex(engine, sbx, "cat", "tree/added")
    assert out == "new\n"
    engine.checkpoint_delete(sbx, "after")
    with pytest.raises(E.CheckpointNotFound):
        engine.checkpoint_restore(sbx, "after")


def test_checkpoint_name_race_one_wins(engine, sbx, state_dir):
    results = []

    def take():
        e = Engine(state_dir)
        try:
            e.checkpoint_create(sbx, "same")
            results.append("ok")
        except E.AlreadyExists:
            results.append("dup")
        finally:
            e.close()
    ts = [threading.Thread(target=take) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert sorted(results) == ["dup", "ok"]


def test_snapshot_then_new_sandbox_from_each_reference(engine, sbx):
    ex(engine, sbx, "sh", "-c", "echo from-snapshot > marker; mkdir -p d; echo x > d/y")
    snap = engine.snapshot_create(sbx, name="myenv", tag="v1")
    assert snap["snapshotId"].startswith("snp_") and snap["fileCount"] > 0 and snap["sizeBytes"] > 0
    for ref in (snap["snapshotId"], "myenv:v1", "v1", "myenv"):
        r = engine.sandbox_run(CreateSpec(mode="oneshot", command=["cat", "marker", "d/y"], snapshot=ref),
                               None, out := io.BytesIO(), io.BytesIO())
        assert out.getvalue() == b"from-snapshot\nx\n", ref
    child = engine.sandbox_create(CreateSpec(snapshot="v1"))["sandboxId"]
    snap2 = engine.snapshot_create(child, name="derived")
    assert snap2["parentSnapshotId"] == snap["snapshotId"]
    engine.snapshot_delete(snap["snapshotId"])
    r, out, _ = ex(engine, child, "cat", "marker")   # deleting a snapshot in use is safe
    assert out == "from-snapshot\n"
    with pytest.raises(E.SnapshotNotFound):
        engine.sandbox_create(CreateSpec(snapshot="myenv:v1"))
    engine.sandbox_destroy(child)


def test_env_applies_to_later_execs(engine, sbx):
    assert engine.sandbox_env(sbx, {"A": "1", "B": "x=y"}, [])["env"] == {"A": "1", "B": "x=y"}
    r, out, _ = ex(engine, sbx, "sh", "-c", "echo $A $B")
    assert out == "1 x=y\n"
    assert engine.sandbox_env(sbx, {}, ["A"])["env"] == {"B": "x=y"}
    assert engine.sandbox_get(sbx)["env"] == {"B": "x=y"}


def test_jobs_run_in_background_and_destroy_ends_them(engine, sbx):
    job = engine.job_create(sbx, ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done"])
    assert job["status"] == "running"
    stubborn = engine.job_create(sbx, ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    r, out, _ = ex(engine, sbx, "echo", "exec-while-jobs")
    assert out == "exec-while-jobs\n"
    deadline = time.monotonic() + 10
    while engine.job_get(sbx, job["jobId"])["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    done = engine.job_get(sbx, job["jobId"])
    assert done["status"] == "completed" and done["exitCode"] == 0
    buf = io.BytesIO()
    engine.job_logs(sbx, job["jobId"], buf)
    assert buf.getvalue() == b"line1\nline2\nline3\n"
    t = time.monotonic()
    killed = engine.job_destroy(sbx, stubborn["jobId"], force=True)
    assert killed["status"] == "cancelled" and time.monotonic() - t < 5
    assert [j["jobId"] for j in engine.job_list(sbx)["jobs"]] == [stubborn["jobId"], job["jobId"]]


def test_delete_removes_everything(engine):
    sid = engine.sandbox_create(CreateSpec(memory="128Mi"))["sandboxId"]
    row = engine.store.one("SELECT * FROM sandboxes WHERE id=?", sid)
    import json
    paths = list(json.loads(row["cgroup"])["paths"].values())
    assert all(os.path.isdir(p) for p in paths)
    engine.sandbox_destroy(sid)
    assert not any(os.path.exists(p) for p in paths)
    assert not os.path.exists(row["volume"])
    assert not os.path.exists(engine.sock_path(sid))
    assert not _alive(row["supervisor_pid"]) and not _alive(row["init_pid"])
    with pytest.raises(E.SandboxNotFound):
        engine.sandbox_get(sid)
    assert engine.sandbox_get(sid, include_deleted=True)["status"] == "deleted"


def _alive(pid):
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_supervisor_sigkill_is_repaired_by_next_command(engine, state_dir):
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    row = engine.store.one("SELECT * FROM sandboxes WHERE id=?", sid)
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.2)
    e2 = Engine(state_dir)
    assert e2.store.one("SELECT status FROM sandboxes WHERE id=?", sid)["status"] == "failed"
    import json
    assert not any(os.path.exists(p) for p in json.loads(row["cgroup"])["paths"].values())
    assert not os.path.exists(row["volume"])
    e2.close()


def test_sigkill_during_create_leaves_nothing(state_dir):
    code = ("import sys; from localsb.engine import Engine; from localsb.api.specs import CreateSpec;"
            "e=Engine(sys.argv[1]); print('ready', flush=True); e.sandbox_create(CreateSpec())")
    for delay in (0.0, 0.01, 0.03, 0.06):
        p = subprocess.Popen([sys.executable, "-c", code, state_dir], stdout=subprocess.PIPE)
        p.stdout.readline()
        time.sleep(delay)
        p.kill()
        p.wait()
    time.sleep(0.3)
    e = Engine(state_dir)
    live = e.store.all("SELECT id, supervisor_pid FROM sandboxes WHERE status NOT IN ('failed','deleted','terminated')")
    for r in live:  # a create that completed before the kill is a healthy sandbox
        e.sandbox_destroy(r["id"])
    vols = os.path.join(e.pool.root, "sandboxes")
    assert not os.path.isdir(vols) or os.listdir(vols) == []
    e.close()


def _v2_cgroup(out: str) -> str:
    return [line for line in out.splitlines() if line.startswith("0::")][0][3:]


def _ready_waiters(engine, sid) -> dict:
    """{cgroup name: pids} of the supervisor's waiters forked ahead (v2 cgroups proc-N)."""
    from localsb.linux.cgroups import SandboxCgroup
    from localsb.engine.store import loads
    cg = SandboxCgroup.from_dict(loads(engine.store.one("SELECT cgroup FROM sandboxes WHERE id=?", sid)["cgroup"]))
    base = cg.paths["v2"]
    found = {}
    for name in os.listdir(base):
        if name.startswith("proc-"):
            with open(os.path.join(base, name, "cgroup.procs")) as fh:
                found[name] = [int(p) for p in fh.read().split()]
    return found


def _wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_execs_run_on_a_waiter_forked_ahead_and_survive_its_loss(engine, sbx):
    """The supervisor keeps one waiter ready (its cgroup join paid ahead): each exec runs in the
    ready waiter's cgroup, and a new one is forked after each answer. A ready waiter that dies
    (killed from outside) costs nothing but the head start; after a restore (new init, new
    namespaces) the stale one is dropped and a new one enters the new init's namespaces."""
    _wait_for(lambda: any(_ready_waiters(engine, sbx).values()))
    (name, pids), = _ready_waiters(engine, sbx).items()
    assert len(pids) == 1
    r, out, _ = ex(engine, sbx, "cat", "/proc/self/cgroup")
    assert r["exitCode"] == 0 and _v2_cgroup(out) == "/" + name   # ran on the ready waiter
    _wait_for(lambda: any(_ready_waiters(engine, sbx).values()))
    (name2, pids2), = _ready_waiters(engine, sbx).items()
    assert name2 != name
    os.kill(pids2[0], signal.SIGKILL)
    r, out, _ = ex(engine, sbx, "cat", "/proc/self/cgroup")
    assert r["exitCode"] == 0 and _v2_cgroup(out).startswith("/exec-"), out   # fell back to a fresh waiter
    _wait_for(lambda: any(_ready_waiters(engine, sbx).values()))
    ex(engine, sbx, "sh", "-c", "echo before > /home/agentuity/f")
    engine.checkpoint_create(sbx, "c1")
    ex(engine, sbx, "sh", "-c", "echo after > /home/agentuity/f")
    engine.checkpoint_restore(sbx, "c1")
    r, out, _ = ex(engine, sbx, "sh", "-c", "cat /home/agentuity/f; cat /proc/self/cgroup")
    assert r["exitCode"] == 0 and out.startswith("before\n"), out
    _wait_for(lambda: any(_ready_waiters(engine, sbx).values()))
    r, out, _ = ex(engine, sbx, "sh", "-c", "cat /home/agentuity/f; echo $$")
    assert r["exitCode"] == 0 and out.startswith("before\n"), out
    # the command sees the restored init's pid namespace: its shell is a small pid, not a host one
    assert int(out.split()[1]) < 1000


def test_restore_moves_the_old_volume_aside_and_deletes_it_after(engine, sbx):
    """Restore renames the replaced volume into <pool>/retired and deletes it once the sandbox
    runs again (deleting a just-used subvolume costs ~200 ms of inode eviction for 30,000 files);
    nothing stays behind, after the restore or after delete."""
    retired = os.path.join(engine.pool.root, "retired")
    ex(engine, sbx, "sh", "-c", "mkdir -p d && for i in $(seq 200); do echo $i > d/f$i; done")
    engine.checkpoint_create(sbx, "c1")
    ex(engine, sbx, "sh", "-c", "rm -r d; echo new > n")
    engine.checkpoint_restore(sbx, "c1")
    r, out, _ = ex(engine, sbx, "sh", "-c", "ls d | wc -l; test -e n && echo n-exists || echo n-gone")
    assert out.split() == ["200", "n-gone"]
    _wait_for(lambda: not os.listdir(retired))
    engine.checkpoint_restore(sbx, "c1")
    engine.sandbox_destroy(sbx)
    assert os.listdir(retired) == []
    assert not os.path.exists(os.path.join(engine.pool.root, "sandboxes", sbx))
