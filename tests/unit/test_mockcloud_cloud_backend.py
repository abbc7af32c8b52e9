"""localsb's cloud backend (localsb/backends/cloud.py) against a real mockcloud on the fake engine:
every call goes over HTTP, and errors come back as the same localsb.api.errors class and message
the engine raised."""
from __future__ import annotations

import io
import socket
import subprocess
import sys
import tarfile

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec, FileSpec
from localsb.backends.cloud import CloudBackend
from mockcloud.app import ThreadedServer, make_app
from mockcloud.store import Store
from tests.fakes.memory_engine import MemoryEngine

# a hang (a stream that never ends) must fail the test, not the run
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path):
    state = str(tmp_path / "mc")
    store = Store(state)
    a, b = store.key_create("acme"), store.key_create("globex")
    engine = MemoryEngine(str(tmp_path / "engine"))
    with ThreadedServer(make_app(state, engine=engine)) as srv:
        def backend(key=a, **extra):
            e = {"AGENTUITY_API_URL": srv.url, "AGENTUITY_CATALYST_URL": srv.url, "AGENTUITY_STREAM_URL": srv.url,
                 "AGENTUITY_API_KEY": key["key"], **extra}
            return CloudBackend.from_env(e)
        srv.backend, srv.a, srv.b, srv.engine = backend, a, b, engine
        yield srv


def test_from_env_reads_the_official_variables():
    b = CloudBackend.from_env({"AGENTUITY_CLI_API_KEY": "k", "AGENTUITY_REGION": "use",
                               "AGENTUITY_CLOUD_ORG_ID": "org_1", "AGENTUITY_TRANSPORT_URL": "http://t:1/"})
    assert (b.api_url, b.catalyst_url, b.stream_url) == ("https://api.agentuity.com", "http://t:1",
                                                         "https://streams-use.agentuity.cloud")
    assert (b.api_key, b.default_org, b.region) == ("k", "org_1", "use")
    b = CloudBackend.from_env({"AGENTUITY_API_KEY": "k2", "AGENTUITY_CLI_API_KEY": "k",
                               "AGENTUITY_CATALYST_URL": "http://c", "AGENTUITY_TRANSPORT_URL": "http://t"})
    assert (b.api_key, b.catalyst_url, b.default_org) == ("k2", "http://c", None)
    assert b.catalyst_url == "http://c"
    with pytest.raises(E.Unauthorized, match="AGENTUITY_API_KEY"):
        CloudBackend.from_env({})


def test_import_stays_light():
    code = "import sys, localsb.backends.cloud; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_run_streams_stdout_stderr_and_exit_code(env):
    be = env.backend()
    out, err = io.BytesIO(), io.BytesIO()
    r = be.sandbox_run(CreateSpec(mode="oneshot", command=["sh", "-c", "echo out; echo err >&2; exit 7"]),
                       None, out, err)
    assert r["exitCode"] == 7 and r["sandboxId"].startswith("sbx_") and r["durationMs"] >= 0
    assert (out.getvalue(), err.getvalue()) == (b"out\n", b"err\n")
    # stdin goes through the stream service before the sandbox starts
    out = io.BytesIO()
    r = be.sandbox_run(CreateSpec(mode="oneshot", command=["cat"]), io.BytesIO(b"fed\n"), out, io.BytesIO())
    assert r["exitCode"] == 0 and out.getvalue() == b"fed\n"
    # the key's only org is found without AGENTUITY_CLOUD_ORG_ID
    assert be.default_org == env.a["orgId"]


def test_run_timeout_reports_124(env):
    out = io.BytesIO()
    r = env.backend().sandbox_run(CreateSpec(mode="oneshot", command=["sleep", "5"], execution_timeout="1s"),
                                  None, out, None)
    assert r["exitCode"] == 124


def test_interactive_lifecycle(env):
    be = env.backend()
    sid = be.sandbox_create(CreateSpec(name="box", env={"A": "1"}))["sandboxId"]
    assert be.sandbox_get(sid)["name"] == "box"
    assert [s["id"] for s in be.sandbox_list()["sandboxes"]] == [sid]
    out = io.BytesIO()
    ex = be.sandbox_execute(sid, ["sh", "-c", "echo $A; exit 2"], stdout=out, stderr=io.BytesIO())
    assert ex["exitCode"] == 2 and ex["status"] == "completed" and out.getvalue() == b"1\n"
    assert be.sandbox_env(sid, {"B": "2"}, ["A"]) == {"env": {"B": "2"}}
    assert be.sandbox_pause(sid)["status"] == "suspended"
    ex = be.sandbox_execute(sid, ["true"])
    assert ex.get("autoResumed") is True
    be.sandbox_pause(sid)
    assert be.sandbox_resume(sid) == {"sandboxId": sid, "status": "idle"}
    assert be.execution_list(sid)["executions"][0]["executionId"] == ex["executionId"]
    assert be.execution_get(ex["executionId"], wait="1s")["status"] == "completed"
    be.sandbox_destroy(sid)
    with pytest.raises(E.SandboxNotFound) as got:
        be.sandbox_get(sid)
    with pytest.raises(E.SandboxNotFound) as local:
        env.engine.sandbox_get(sid, org_id=env.a["orgId"])
    assert str(got.value) == str(local.value)


def test_errors_keep_class_and_message(env):
    be = env.backend()
    sid = be.sandbox_create(CreateSpec())["sandboxId"]
    with pytest.raises(E.SandboxNotFound):
        env.backend(env.b).sandbox_get(sid)
    with pytest.raises(E.InvalidState, match="cannot be resumed"):
        be.sandbox_resume(sid)
    with pytest.raises(E.ExecutionNotFound, match="exec_nope"):
        be.execution_get("exec_nope")
    with pytest.raises(E.ValidationError, match="Invalid memory"):
        be._c("POST", "/sandbox", body={"resources": {"memory": "lots"}})
    with pytest.raises(E.Unauthorized):
        CloudBackend.from_env({"AGENTUITY_API_URL": env.url, "AGENTUITY_CATALYST_URL": env.url,
                               "AGENTUITY_API_KEY": "mck_wrong"}).sandbox_list()
    with pytest.raises(E.Forbidden):
        be.sandbox_get(sid, org_id=env.b["orgId"])
    # busy: a second execute while one runs
    first = be._c("POST", f"/sandbox/{sid}/execute", body={"command": ["sleep", "1"]})["data"]
    with pytest.raises(E.SandboxBusy):
        be.sandbox_execute(sid, ["true"])
    be.execution_get(first["executionId"], wait="5s")
    be.sandbox_destroy(sid)


def test_connection_refused_is_a_network_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}"
    be = CloudBackend.from_env({"AGENTUITY_API_URL": url, "AGENTUITY_CATALYST_URL": url, "AGENTUITY_API_KEY": "k",
                                "AGENTUITY_CLOUD_ORG_ID": "org_x"})
    with pytest.raises(E.NetworkError, match="connection refused"):
        be.sandbox_get("sbx_x")


def test_files_jobs_checkpoints_snapshots_stats(env):
    be = env.backend()
    sid = be.sandbox_create(CreateSpec())["sandboxId"]
    assert be.fs_write(sid, [FileSpec("a/b.txt", b"hello")]) == {"filesWritten": 1}
    out = io.BytesIO()
    assert be.fs_read(sid, "a/b.txt", out) == 5 and out.getvalue() == b"hello"
    with pytest.raises(E.FileNotFoundInSandbox):
        be.fs_read(sid, "missing.txt", io.BytesIO())
    assert be.fs_list(sid, "a")["files"][0]["path"] == "b.txt"
    be.fs_mkdir(sid, "d/e", recursive=True)
    assert be.fs_rm(sid, "a/b.txt") is True and be.fs_rm(sid, "a/b.txt") is False
    assert be.fs_rmdir(sid, "d", recursive=True) is True
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("x.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    be.fs_upload(sid, "up", "tar.gz", buf)
    arch = io.BytesIO()
    assert be.fs_download(sid, "up", "tar.gz", arch) > 0
    with tarfile.open(fileobj=io.BytesIO(arch.getvalue())) as tf:
        assert tf.extractfile("x.txt").read() == b"x"
    job = be.job_create(sid, ["sh", "-c", "echo job"])
    logs = io.BytesIO()
    assert be.job_logs(sid, job["jobId"], logs, follow=True)["status"] == "completed"
    assert logs.getvalue() == b"job\n"
    assert be.job_list(sid)["jobs"][0]["jobId"] == job["jobId"]
    cp = be.checkpoint_create(sid, "one")
    assert be.checkpoint_list(sid)["checkpoints"][0]["id"] == cp["id"]
    assert be.checkpoint_restore(sid, "one")["checkpointId"] == "one"
    be.checkpoint_delete(sid, cp["id"])
    snap = be.snapshot_create(sid, name="s1", tag="v1")
    assert be.snapshot_get(snap["snapshotId"])["name"] == "s1"
    assert be.snapshot_tag(snap["snapshotId"], "v2")["tag"] == "v2"
    assert be.snapshot_list()["total"] == 1
    be.snapshot_delete(snap["snapshotId"])
    st = be.stats()["services"]["sandbox"]
    assert st["totalActive"] == 1
    assert be.runtime_list()["total"] >= 1
    assert [e["type"] for e in be.events_list(sid)["events"]][0] == "create"
    built = be.snapshot_build({"init": {"runtime": "base", "name": "b"}, "archive": arch.getvalue(),
                               "finalize": {"sizeBytes": 1, "fileCount": 1}})
    assert built["name"] == "b"
    be.sandbox_destroy(sid)
