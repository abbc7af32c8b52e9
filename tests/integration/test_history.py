"""Issue 5: executions history, timestamps, idle timeout on a driven clock, events, stats, concurrency."""
from __future__ import annotations

import io
import re
import threading
import time

import pytest

from localsb.api.specs import CreateSpec
from localsb.engine import Engine


def test_idle_timeout_terminates_exactly_the_idle_sandboxes(engine, tmp_path, monkeypatch):
    clock = tmp_path / "clock"
    clock.write_text("0")
    monkeypatch.setenv("LOCALSB_TEST_CLOCK_FILE", str(clock))
    e = Engine(engine.state_dir)
    idle = e.sandbox_create(CreateSpec(idle_timeout="1h"))["sandboxId"]
    busy = e.sandbox_create(CreateSpec(idle_timeout="1h"))["sandboxId"]
    forever = e.sandbox_create(CreateSpec())["sandboxId"]
    job = e.job_create(busy, ["sleep", "30"])
    time.sleep(0.5)
    assert e.sandbox_get(idle)["status"] == "idle"
    clock.write_text("7200")   # two hours later, for the engine
    deadline = time.monotonic() + 5
    while e.sandbox_get(idle, include_deleted=True)["status"] != "terminated" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert e.sandbox_get(idle, include_deleted=True)["status"] == "terminated"
    ev = e.events_list(idle)["events"][-1]
    assert ev["type"] == "lifecycle:terminated" and ev["event"]["reason"] == "idle timeout"
    time.sleep(0.5)
    assert e.sandbox_get(busy)["status"] in ("idle", "running")   # a running job keeps it alive
    assert e.sandbox_get(forever)["status"] == "idle"              # no idle timeout: stays
    e.job_destroy(busy, job["jobId"], force=True)
    for sid in (busy, forever):
        e.sandbox_destroy(sid)
    e.close()


def test_timestamps_prefix_each_line(engine):
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    out = io.BytesIO()
    engine.sandbox_execute(sid, ["sh", "-c", "echo one; echo two"], timestamps=True, stdout=out, stderr=io.BytesIO())
    lines = out.getvalue().decode().splitlines()
    assert len(lines) == 2
    for line, word in zip(lines, ("one", "two")):
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z " + word + "$", line), line
    engine.sandbox_destroy(sid)


def test_history_records_are_complete_under_concurrency(engine):
    sids = [engine.sandbox_create(CreateSpec())["sandboxId"] for _ in range(4)]
    errors = []

    def client(sid, k):
        try:
            e = Engine(engine.state_dir)
            for i in range(5):
                out = io.BytesIO()
                r = e.sandbox_execute(sid, ["sh", "-c", f"echo {k}-{i}; exit {i}"], stdout=out, stderr=io.BytesIO())
                assert r["exitCode"] == i and out.getvalue() == f"{k}-{i}\n".encode()
            e.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=client, args=(sid, k)) for k, sid in enumerate(sids)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for k, sid in enumerate(sids):
        execs = engine.execution_list(sid)["executions"]
        assert len(execs) == 5
        assert sorted(x["exitCode"] for x in execs) == [0, 1, 2, 3, 4]
        for x in execs:
            assert x["status"] in ("completed", "failed") and x["durationMs"] >= 0
            assert x["startedAt"] <= x["completedAt"]
            buf = io.BytesIO()
            engine.execution_output(x["executionId"], "stdout", buf)
            assert buf.getvalue() == f"{k}-{x['exitCode']}\n".encode()
        assert engine.sandbox_get(sid)["executions"] == 5
    st = engine.stats()["services"]["sandbox"]
    assert st["totalExecutions"] >= 20 and st["totalActive"] >= 4 and st["idle"] >= 4
    for sid in sids:
        engine.sandbox_destroy(sid)


def test_events_tell_the_story(engine):
    sid = engine.sandbox_create(CreateSpec(memory="256Mi"))["sandboxId"]
    engine.sandbox_env(sid, {"A": "1"}, [])
    engine.sandbox_pause(sid)
    engine.sandbox_resume(sid)
    engine.checkpoint_create(sid, "c1")
    engine.sandbox_destroy(sid)
    events = engine.events_list(sid)["events"]
    types = [e["type"] for e in events]
    assert types == ["create", "lifecycle:started", "env", "pause", "resume", "checkpoint", "lifecycle:terminated",
                     "destroy"]
    assert events[0]["event"]["resources"] == {"memory": "256Mi"}
    assert events[-2]["event"]["reason"] == "deleted"
    newest = engine.events_list(sid, direction="desc", limit=2)["events"]
    assert [e["type"] for e in newest] == ["destroy", "lifecycle:terminated"]


def test_oneshot_events_and_cpu_accounting(engine):
    r = engine.sandbox_run(CreateSpec(mode="oneshot", command=["python3", "-c", "sum(range(3*10**7))"]),
                           None, io.BytesIO(), io.BytesIO())
    row = engine.store.one("SELECT * FROM sandboxes WHERE id=?", r["sandboxId"])
    assert row["status"] == "terminated" and row["exit_code"] == 0
    assert row["cpu_time_ms"] > 50
    types = [e["type"] for e in engine.events_list(r["sandboxId"])["events"]]
    assert types == ["create", "lifecycle:started", "lifecycle:completed", "lifecycle:terminated"]
    assert engine.stats()["services"]["sandbox"]["totalCpuTimeMs"] >= row["cpu_time_ms"]


@pytest.mark.timeout(60)
def test_execution_get_waits_for_a_running_execution(engine):
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    info = engine.execute_start(sid, ["sh", "-c", "sleep 1; echo done"])
    assert info["status"] == "running"
    t = time.monotonic()
    done = engine.execution_get(info["executionId"], wait="10s")
    assert done["status"] == "completed" and 0.5 < time.monotonic() - t < 8
    engine.sandbox_destroy(sid)
