"""mockcloud's wire contract, on the in-memory fake engine: routes, envelopes, status codes, auth and
tenancy, streams, and the shapes the official CLI's schemas need (reference/official-cli-wire.md).

The server runs for real on a loopback port; requests are plain HTTP (http.client), so what is
checked is exactly what a client receives.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.parse

import pytest

from localsb.api.errors import HostError
from mockcloud.app import ThreadedServer, make_app
from mockcloud.routes import ROUTES
from mockcloud.store import Store
from tests.fakes.memory_engine import MemoryEngine

# a hang (a stream that never ends) must fail the test, not the run
pytestmark = pytest.mark.timeout(120)


class Client:
    def __init__(self, url: str, key: str | None):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.key = u.hostname, u.port, key

    def req(self, method, path, body=None, *, raw: bytes | None = None, headers=None, key="default",
            query=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        k = self.key if key == "default" else key
        if k:
            h["Authorization"] = f"Bearer {k}"
        h.update(headers or {})
        if query:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        if method in ("POST", "PUT", "PATCH", "DELETE") or data:
            h["Content-Length"] = str(len(data))
        conn.request(method, path, body=data if data or method != "GET" else None, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        ctype = resp.getheader("Content-Type", "")
        conn.close()
        obj = json.loads(payload) if "application/json" in ctype and payload else None
        return resp.status, obj, payload, ctype

    def ok(self, method, path, body=None, status=200, **kw):
        st, obj, payload, ctype = self.req(method, path, body, **kw)
        assert st == status, (st, payload)
        assert obj is not None and obj["success"] is True, payload
        return obj

    def err(self, method, path, body=None, status=400, **kw):
        st, obj, payload, ctype = self.req(method, path, body, **kw)
        assert st == status, (st, payload)
        assert "application/json" in ctype, ctype
        assert obj["success"] is False and isinstance(obj["message"], str) and obj["message"], obj
        return obj


def get_url(url: str) -> tuple[int, bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path + "?" + (u.query + "&" if u.query else "") + "v=2")
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.fixture
def server(tmp_path):
    state = str(tmp_path / "mc")
    engine = MemoryEngine(str(tmp_path / "engine"))
    store = Store(state)
    a = store.key_create("acme")
    b = store.key_create("globex")
    app = make_app(state, engine=engine)
    with ThreadedServer(app) as srv:
        srv.engine, srv.keys = engine, {"a": a, "b": b}
        srv.client = Client(srv.url, a["key"])
        srv.other = Client(srv.url, b["key"])
        yield srv


def _create(c: Client, body=None) -> str:
    return c.ok("POST", "/sandbox", body or {}, status=201)["data"]["sandboxId"]


def _wait_status(c: Client, sid: str, statuses: str) -> dict:
    return c.ok("GET", f"/sandbox/status/{sid}", query={"waitForStatus": statuses, "waitMs": 10000})["data"]


# auth and tenancy --------------------------------------------------------------------------------
def test_every_protected_route_answers_401_envelope_without_a_key(server):
    c = Client(server.url, None)
    for route in ROUTES:
        if route.public:
            continue
        path = route.path
        for name in ("sandboxId", "executionId", "snapshotId", "checkpointId", "jobId", "projectId", "orgId"):
            path = path.replace("{" + name + "}", "x_1")
        path = path.replace("{stream_id:strm_[a-z0-9]+}", "strm_abcdefgh")
        obj = c.err(route.method, path, status=401)
        assert obj["code"] == "UNAUTHORIZED"


def test_invalid_key_is_401_and_wrong_org_is_403(server):
    server.client.err("GET", "/cli/organization", status=401, key="mck_nope")
    server.client.err("GET", "/cli/sandbox", status=401, headers={"Authorization": "Basic abc"}, key=None)
    obj = server.client.err("GET", "/cli/sandbox", status=403, query={"orgId": server.keys["b"]["orgId"]})
    assert obj["code"] == "FORBIDDEN"
    server.client.ok("GET", "/cli/sandbox", query={"orgId": server.keys["a"]["orgId"]})


def test_public_routes_need_no_key(server):
    c = Client(server.url, None)
    st, obj, _, ctype = c.req("GET", "/openapi.json")
    assert st == 200 and "application/json" in ctype and obj["openapi"].startswith("3.")
    assert c.ok("POST", "/cli/validate/apt-dependencies", {"packages": ["curl", "Bad Name"]})["data"] == {
        "valid": ["curl"], "invalid": [{"package": "Bad Name", "error": "invalid package name",
                                        "searchUrl": "https://packages.debian.org/search?keywords=Bad Name"}]}
    assert c.ok("GET", "/sandbox/snapshots/public")["data"] == {"snapshots": [], "total": 0}


def test_another_orgs_sandbox_is_404_everywhere(server):
    sid = _create(server.client)
    o = server.other
    for method, path in (("GET", f"/sandbox/{sid}"), ("GET", f"/cli/sandbox/{sid}"),
                         ("GET", f"/sandbox/status/{sid}"), ("DELETE", f"/sandbox/{sid}"),
                         ("POST", f"/sandbox/{sid}/pause"), ("POST", f"/sandbox/{sid}/resume")):
        assert o.err(method, path, status=404)["code"] == "SANDBOX_NOT_FOUND"
    o.err("POST", f"/sandbox/{sid}/execute", {"command": ["true"]}, status=404)
    assert o.ok("GET", "/cli/sandbox")["data"] == {"sandboxes": [], "total": 0}
    assert [s["id"] for s in server.client.ok("GET", "/cli/sandbox")["data"]["sandboxes"]] == [sid]
    server.client.ok("DELETE", f"/sandbox/{sid}")


def test_cli_region_and_organization(server):
    assert server.client.ok("GET", "/cli/region")["data"] == [{"region": "usc", "description": "US Central"}]
    assert server.client.ok("GET", "/cli/organization")["data"] == [
        {"id": server.keys["a"]["orgId"], "name": "acme"}]
    server.client.err("GET", "/cli/project/proj_abc", status=404, query={"mask": "true"})


# envelopes and bad input -------------------------------------------------------------------------
def test_bad_requests_get_4xx_envelopes(server):
    c = server.client
    assert c.err("POST", "/sandbox", raw=b"{nope")["code"] == "INVALID_ARGUMENT"
    c.err("POST", "/sandbox", raw=b"[1,2]")
    c.err("POST", "/sandbox", {"resources": {"memory": 512}})
    c.err("POST", "/sandbox", {"resources": {"memory": "lots"}})
    c.err("POST", "/sandbox", {"network": {"port": 80}})
    c.err("POST", "/sandbox", {"env": {"A": 1}})
    c.err("POST", "/sandbox", {"command": {"exec": "echo hi"}})
    c.err("POST", "/sandbox", {"snapshot": "snp_x", "runtime": "base"})
    sid = _create(c)
    c.err("POST", f"/sandbox/{sid}/execute", {})
    c.err("POST", f"/sandbox/{sid}/execute", {"command": []})
    c.err("POST", f"/sandbox/{sid}/execute", {"command": ["true"], "timeout": "soon"})
    c.err("POST", f"/sandbox/{sid}/execute", {"command": [1]})
    c.err("PATCH", f"/sandbox/env/{sid}", {"env": {"A": 5}})
    c.err("PATCH", f"/sandbox/env/{sid}", {"env": {"1BAD": "x"}})
    c.err("GET", "/cli/sandbox", query={"limit": "many"})
    c.err("GET", "/cli/sandbox", query={"limit": "0"})
    c.err("GET", "/cli/sandbox", query={"mode": "weird"})
    c.err("GET", f"/sandbox/status/{sid}", query={"waitForStatus": "sleeping"})
    c.err("GET", "/sandbox/execution/exec_x", query={"wait": "forever"})
    c.err("POST", f"/fs/mkdir/{sid}", {"path": "../../../../etc"})
    c.err("POST", f"/fs/{sid}", {"files": [{"path": "a.txt", "content": "!!notbase64"}]})
    assert c.err("GET", "/sandbox/execution/exec_nope", status=404)["code"] == "EXECUTION_NOT_FOUND"
    assert c.err("GET", "/no/such/route", status=404)["code"] == "NOT_FOUND"
    assert c.err("PUT", "/cli/region", status=405)["code"] == "METHOD_NOT_ALLOWED"
    big = b'{"files":[{"path":"a","content":"' + b"A" * (65 << 20) + b'"}]}'
    assert c.err("POST", f"/fs/{sid}", raw=big, status=413)["code"] == "PAYLOAD_TOO_LARGE"
    c.ok("DELETE", f"/sandbox/{sid}")


def test_engine_failure_is_a_generic_500_without_traceback(server, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail /etc/shadow")
    monkeypatch.setattr(server.engine, "sandbox_list", boom)
    obj = server.client.err("GET", "/cli/sandbox", status=500)
    assert obj == {"success": False, "message": "Internal server error", "code": "INTERNAL_ERROR"}
    monkeypatch.setattr(server.engine, "sandbox_list", lambda **k: (_ for _ in ()).throw(HostError("x")))
    assert server.client.err("GET", "/cli/sandbox", status=500)["message"] == "Internal server error"


def test_bodiless_posts_and_deletes_answer_json(server):
    c = server.client
    sid = _create(c)
    st, obj, payload, ctype = c.req("POST", f"/sandbox/{sid}/pause")
    assert st == 200 and ctype.startswith("application/json")
    assert obj["success"] is True and obj["sandboxId"] == sid and obj["status"] == "suspended" and "data" not in obj
    assert c.ok("POST", f"/sandbox/{sid}/resume") == {"success": True}
    assert c.ok("DELETE", f"/sandbox/{sid}") == {"success": True}
    assert c.err("DELETE", f"/sandbox/{sid}", status=404)["code"] == "SANDBOX_NOT_FOUND"


def test_legacy_version_segment_routes(server):
    c = server.client
    sid = c.ok("POST", "/sandbox/2025-03-17", {}, status=201)["data"]["sandboxId"]
    assert c.ok("GET", f"/sandbox/2025-03-17/{sid}")["data"]["sandboxId"] == sid
    assert c.ok("PATCH", f"/sandbox/env/2025-03-17/{sid}", {"env": {"A": "1"}})["data"] == {"env": {"A": "1"}}
    assert c.ok("GET", f"/fs/2025-03-17/list/{sid}")["data"] == {"files": []}
    org = server.keys["a"]["orgId"]
    assert "services" in c.ok("GET", f"/services/stats/2026-02-26/{org}")["data"]
    assert c.ok("GET", "/sandbox/2025-03-17/runtimes")["data"]["total"] >= 1
    c.ok("DELETE", f"/sandbox/2025-03-17/{sid}")


# sandboxes ---------------------------------------------------------------------------------------
def test_interactive_lifecycle_and_shapes(server):
    c = server.client
    created = c.ok("POST", "/sandbox", {"name": "demo", "env": {"A": "1"}, "timeout": {"paused": "1h"}},
                   status=201)["data"]
    sid = created["sandboxId"]
    assert created["status"] in ("creating", "idle") and "stdoutStreamUrl" not in created
    info = c.ok("GET", f"/sandbox/{sid}", query={"includeDeleted": "true"})["data"]
    assert info["sandboxId"] == sid and info["status"] == "idle" and info["executions"] == 0
    assert info["org"] == {"id": server.keys["a"]["orgId"], "name": "acme"} and info["region"] == "usc"
    assert all(v is not None for v in info.values()), "optional SandboxInfo fields must be absent, not null"
    row = c.ok("GET", "/cli/sandbox", query={"limit": 50, "sort": "created", "direction": "desc"})["data"]
    assert row["total"] == 1
    assert row["sandboxes"][0] == {"id": sid, "name": "demo", "description": None, "status": "idle",
                                   "region": "usc", "createdAt": info["createdAt"], "orgId": server.keys["a"]["orgId"],
                                   "orgName": "acme", "projectId": None}
    assert c.ok("GET", f"/cli/sandbox/{sid}")["data"] == {"id": sid, "name": "demo", "region": "usc",
                                                         "status": "idle", "orgId": server.keys["a"]["orgId"],
                                                         "projectId": None}
    sdk = c.ok("GET", "/sandbox")["data"]
    assert sdk["total"] == 1 and sdk["sandboxes"][0]["org"]["name"] == "acme"
    paused = c.req("POST", f"/sandbox/{sid}/pause")[1]
    assert paused["status"] == "suspended" and paused["terminatesAt"].endswith("Z")
    assert c.err("POST", f"/sandbox/{sid}/pause", status=409)["code"] == "INVALID_STATE"
    c.ok("POST", f"/sandbox/{sid}/resume")
    assert c.err("POST", f"/sandbox/{sid}/resume", status=409)["code"] == "INVALID_STATE"
    assert c.ok("PATCH", f"/sandbox/env/{sid}", {"env": {"B": "x=y", "A": None}})["data"] == {"env": {"B": "x=y"}}
    c.ok("DELETE", f"/sandbox/{sid}")
    assert c.ok("GET", f"/sandbox/{sid}", query={"includeDeleted": "true"})["data"]["status"] == "deleted"
    c.err("GET", f"/sandbox/{sid}", status=404)


def test_sdk_list_filters_deleted_live_and_pages(server):
    """GET /sandbox: deletedOnly / includeDeleted / live are filters of the query, total counts them all."""
    c = server.client
    sids = [_create(c, {"name": f"n{i}"}) for i in range(5)]
    for sid in sids[:2]:
        c.ok("DELETE", f"/sandbox/{sid}")
    deleted = c.ok("GET", "/sandbox", query={"deletedOnly": "true", "limit": 1})["data"]
    assert deleted["total"] == 2 and len(deleted["sandboxes"]) == 1
    assert deleted["sandboxes"][0]["status"] == "deleted" and deleted["sandboxes"][0]["sandboxId"] in sids[:2]
    assert c.ok("GET", "/sandbox", query={"includeDeleted": "true"})["data"]["total"] == 5
    live = c.ok("GET", "/sandbox", query={"live": "true", "limit": 2, "offset": 2})["data"]
    assert live["total"] == 3 and len(live["sandboxes"]) == 1
    assert c.ok("GET", "/sandbox", query={"name": "n0", "includeDeleted": "true"})["data"]["total"] == 1
    for query in ({"limit": "0"}, {"limit": "100000"}, {"offset": "-1"}, {"limit": "ten"}, {"live": "maybe"},
                  {"status": "sleeping"}, {"sort": "size"}, {"direction": "up"},
                  {"live": "true", "deletedOnly": "true"}):
        obj = c.err("GET", "/sandbox", status=400, query=query)
        assert obj["code"] == "INVALID_ARGUMENT", (query, obj)


def test_get_wait_for_status_long_polls(server):
    c = server.client
    created = c.ok("POST", "/sandbox", {"command": {"exec": ["sleep", "0.3"], "mode": "oneshot"}}, status=201)
    sid = created["data"]["sandboxId"]
    t0 = time.monotonic()
    info = c.ok("GET", f"/sandbox/{sid}", query={"waitForStatus": "terminated,failed", "waitMs": 5000})["data"]
    assert info["status"] == "terminated" and info["exitCode"] == 0
    assert 0.2 < time.monotonic() - t0 < 4


# run and exec ------------------------------------------------------------------------------------
def test_oneshot_run_streams_end_and_exit_codes_agree(server):
    c = server.client
    body = {"stream": {"timestamps": False}, "command": {
        "exec": ["sh", "-c", "echo out; echo err >&2; exit 3"], "mode": "oneshot"}}
    data = c.ok("POST", "/sandbox", body, status=201)["data"]
    assert set(data) >= {"sandboxId", "status", "executionId", "stdoutStreamUrl", "stderrStreamUrl"}
    assert data["stdoutStreamUrl"] != data["stderrStreamUrl"]
    results = {}

    def read(name):
        results[name] = get_url(data[name])

    threads = [threading.Thread(target=read, args=(n,)) for n in ("stdoutStreamUrl", "stderrStreamUrl")]
    for t in threads:
        t.start()
    ex = c.ok("GET", f"/sandbox/execution/{data['executionId']}", query={"wait": "5m"})["data"]
    st = _wait_status(c, data["sandboxId"], "idle,terminated,failed")
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a stream GET did not end"
    assert results["stdoutStreamUrl"] == (200, b"out\n")
    assert results["stderrStreamUrl"] == (200, b"err\n")
    assert ex["status"] == "completed" and ex["exitCode"] == 3
    assert st == {"sandboxId": data["sandboxId"], "status": "terminated", "exitCode": 3}


def test_run_ignored_streams_have_no_urls(server):
    body = {"stream": {"stdout": "ignore", "stderr": "ignore", "stdin": "ignore"},
            "command": {"exec": ["true"], "mode": "oneshot"}}
    data = server.client.ok("POST", "/sandbox", body, status=201)["data"]
    assert "stdoutStreamUrl" not in data and "stderrStreamUrl" not in data
    _wait_status(server.client, data["sandboxId"], "terminated")


def test_stdin_stream_uploaded_before_create_reaches_the_command(server):
    c = server.client
    org = server.keys["a"]["orgId"]
    st, made, _, _ = c.req("POST", "/", {"name": "sandbox-stdin-1"}, query={"orgId": org})
    assert 200 <= st < 300 and made["id"].startswith("strm_") and set(made) == {"id"}
    assert 200 <= c.req("PUT", f"/{made['id']}", raw=b"piped input\n", query={"orgId": org})[0] < 300
    data = c.ok("POST", "/sandbox", {"stream": {"stdin": made["id"]},
                                     "command": {"exec": ["cat"], "mode": "oneshot"}}, status=201)["data"]
    assert get_url(data["stdoutStreamUrl"]) == (200, b"piped input\n")
    # another org cannot write to it, nor use it
    server.other.err("PUT", f"/{made['id']}", raw=b"x", status=404)


def test_stdin_stream_arriving_after_create_is_fed_when_the_engine_takes_a_path(server):
    """The official CLI PUTs stdin only after the create answer (run.ts)."""
    c = server.client
    made = c.req("POST", "/", {"name": "s"})[1]
    data = c.ok("POST", "/sandbox", {"stream": {"stdin": made["id"]},
                                     "command": {"exec": ["cat"], "mode": "oneshot"}}, status=201)["data"]
    time.sleep(0.1)
    c.req("PUT", f"/{made['id']}", raw=b"late bytes\n")
    assert get_url(data["stdoutStreamUrl"]) == (200, b"late bytes\n")


def test_stream_urls_are_capabilities(server):
    data = server.client.ok("POST", "/sandbox", {"command": {"exec": ["echo", "x"], "mode": "oneshot"}},
                            status=201)["data"]
    url = data["stdoutStreamUrl"]
    parts = url.split("/")
    assert parts[-1] == "stdout" and len(parts[-2]) >= 32
    tampered = "/".join(parts[:-2] + ["0" * len(parts[-2]), "stdout"])
    assert get_url(tampered)[0] == 404
    other_id = url.replace(data["executionId"], "exec_aaaaaaaaaaaa")
    assert get_url(other_id)[0] == 404
    assert get_url(url) == (200, b"x\n")


def test_execute_streams_busy_and_auto_resume(server):
    c = server.client
    sid = _create(c)
    r = c.ok("POST", f"/sandbox/{sid}/execute", {"command": ["sh", "-c", "echo one; sleep 0.5; echo two"],
                                                 "stream": {"timestamps": False}})
    ex = r["data"]
    assert ex["status"] in ("queued", "running") and ex["executionId"].startswith("exec_") and "autoResumed" not in r
    busy = c.err("POST", f"/sandbox/{sid}/execute", {"command": ["true"]}, status=409)
    assert busy["code"] == "SANDBOX_BUSY"
    assert get_url(ex["stdoutStreamUrl"]) == (200, b"one\ntwo\n")
    done = c.ok("GET", f"/sandbox/execution/{ex['executionId']}", query={"wait": "5m"})["data"]
    assert done["status"] == "completed" and done["exitCode"] == 0 and done["sandboxId"] == sid
    assert done["stdoutStreamUrl"] == ex["stdoutStreamUrl"]
    c.req("POST", f"/sandbox/{sid}/pause")
    r = c.ok("POST", f"/sandbox/{sid}/execute", {"command": ["true"], "stream": {"stdout": "ignore"}})
    assert r["autoResumed"] is True and "stdoutStreamUrl" not in r["data"] and "stderrStreamUrl" in r["data"]
    c.ok("GET", f"/sandbox/execution/{r['data']['executionId']}", query={"wait": "10s"})
    listed = c.ok("GET", f"/sandbox/sandboxes/{sid}/executions", query={"limit": 5})["data"]["executions"]
    assert [e["executionId"] for e in listed] == [r["data"]["executionId"], ex["executionId"]]
    assert c.ok("GET", f"/sandbox/{sid}")["data"]["executions"] == 2
    c.ok("DELETE", f"/sandbox/{sid}")


def test_execution_of_another_org_is_404(server):
    sid = _create(server.client)
    ex = server.client.ok("POST", f"/sandbox/{sid}/execute", {"command": ["true"]})["data"]
    server.other.err("GET", f"/sandbox/execution/{ex['executionId']}", status=404)
    server.client.ok("DELETE", f"/sandbox/{sid}")


# jobs, events, checkpoints, snapshots, fs, stats -------------------------------------------------
def test_jobs_events_runtimes_stats(server):
    c = server.client
    sid = _create(c)
    job = c.ok("POST", f"/sandbox/sandboxes/{sid}/jobs", {"command": ["sh", "-c", "echo j; sleep 30"]})["data"]
    assert job["jobId"].startswith("job_") and job["status"] == "running" and job["stdoutStreamUrl"]
    assert c.ok("GET", f"/sandbox/sandboxes/{sid}/jobs")["data"]["jobs"][0]["jobId"] == job["jobId"]
    time.sleep(0.2)
    t0 = time.monotonic()
    assert get_url(job["stdoutStreamUrl"]) == (200, b"j\n")  # without follow: what is there, then EOF
    assert time.monotonic() - t0 < 2
    done = c.ok("DELETE", f"/sandbox/sandboxes/{sid}/jobs/{job['jobId']}", query={"force": "true"})["data"]
    assert done["status"] == "cancelled"
    events = c.ok("GET", f"/sandbox/sandboxes/{sid}/events", query={"direction": "desc", "limit": 5})["data"]
    assert events["events"][-1]["type"] == "create"
    org = server.keys["a"]["orgId"]
    stats = c.ok("GET", f"/services/stats/{org}", query={"service": "sandbox"})["data"]["services"]["sandbox"]
    assert stats["totalActive"] == 1 and stats["idle"] == 1
    c.err("GET", f"/services/stats/{server.keys['b']['orgId']}", status=403)
    c.err("GET", f"/services/stats/{org}", query={"start": "yesterday"})
    rts = c.ok("GET", "/sandbox/runtimes", query={"limit": 10})["data"]
    assert rts["total"] == len(rts["runtimes"]) >= 1
    c.ok("DELETE", f"/sandbox/{sid}")


def test_checkpoints_by_id_and_name(server):
    c = server.client
    sid = _create(c)
    cp = c.ok("POST", f"/sandbox/{sid}/checkpoint", {"name": "name with space"}, status=201)["data"]
    assert set(cp) == {"id", "name", "createdAt", "parent"} and cp["id"].startswith("ckpt_")
    assert c.err("POST", f"/sandbox/{sid}/checkpoint", {"name": "name with space"}, status=409)["code"] == \
        "ALREADY_EXISTS"
    assert c.ok("GET", f"/sandbox/checkpoints/{sid}")["data"]["checkpoints"] == [cp]
    c.ok("POST", f"/sandbox/{sid}/checkpoint/{urllib.parse.quote(cp['name'])}/restore")
    c.ok("DELETE", f"/sandbox/{sid}/checkpoint/{urllib.parse.quote('name with space')}")
    c.err("DELETE", f"/sandbox/{sid}/checkpoint/{cp['id']}", status=404)
    c.ok("DELETE", f"/sandbox/{sid}")


def test_snapshots_private_and_public(server):
    c = server.client
    sid = _create(c)
    c.err("POST", f"/sandbox/{sid}/snapshot", {"name": "bad name"})
    snap = c.ok("POST", f"/sandbox/{sid}/snapshot", {"name": "snap1", "tag": "v1", "public": False},
                status=201)["data"]
    assert snap["snapshotId"].startswith("snp_") and snap["name"] == "snap1"
    assert c.ok("GET", "/sandbox/snapshots")["data"]["total"] == 1
    assert c.ok("PATCH", f"/sandbox/snapshots/{snap['snapshotId']}", {"tag": None})["data"].get("tag") is None
    server.other.err("GET", f"/sandbox/snapshots/{snap['snapshotId']}", status=404)
    anon = Client(server.url, None)
    anon.err("GET", f"/sandbox/snapshots/public/{snap['snapshotId']}", status=404)
    pub = c.ok("POST", f"/sandbox/{sid}/snapshot", {"name": "pub", "public": True}, status=201)["data"]
    assert anon.ok("GET", f"/sandbox/snapshots/public/{pub['snapshotId']}")["data"]["name"] == "pub"
    assert anon.ok("GET", "/sandbox/snapshots/public")["data"]["total"] == 1
    assert c.ok("DELETE", f"/sandbox/snapshots/{snap['snapshotId']}") == {"success": True}
    c.ok("DELETE", f"/sandbox/{sid}")


def test_snapshot_build_flow_with_presigned_upload(server, tmp_path):
    import io
    import tarfile
    c = server.client
    init = c.ok("POST", "/sandbox/snapshots/build", {"runtime": "base", "name": "built", "tag": "v3",
                                                     "contentHash": "00", "encrypt": True, "public": False})["data"]
    assert "publicKey" not in init and init["uploadUrl"].startswith(server.url + "/uploads/")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("index.js")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"1+1"))
    u = urllib.parse.urlsplit(init["uploadUrl"])
    anon = Client(server.url, None)
    assert anon.req("PUT", u.path, raw=buf.getvalue(), headers={"Content-Type": "application/gzip"})[0] == 200
    assert anon.req("PUT", u.path[:-4] + "0000", raw=b"x")[0] == 404
    snap = c.ok("POST", f"/sandbox/snapshots/{init['snapshotId']}/finalize",
                {"sizeBytes": 3, "fileCount": 1, "files": [], "metadata": {"v": "1"}})["data"]
    assert snap["snapshotId"] == init["snapshotId"] and snap["name"] == "built" and snap["fileCount"] == 1


def test_fs_round_trip(server):
    import base64
    import io
    import tarfile
    c = server.client
    sid = _create(c)
    w = c.ok("POST", f"/fs/{sid}", {"files": [{"path": "app/a.txt", "content": base64.b64encode(b"hello").decode()}]})
    assert w["data"] == {"filesWritten": 1}
    st, _, payload, ctype = c.req("GET", f"/fs/{sid}", query={"path": "/home/agentuity/app/a.txt"})
    assert (st, payload, ctype) == (200, b"hello", "application/octet-stream")
    c.err("GET", f"/fs/{sid}", query={"path": "/nope.txt"}, status=404)
    files = c.ok("GET", f"/fs/list/{sid}", query={"path": "app"})["data"]["files"]
    assert files[0]["path"] == "a.txt" and files[0]["size"] == 5 and files[0]["mode"] == "0644"
    c.ok("POST", f"/fs/mkdir/{sid}", {"path": "/home/agentuity/x/y", "recursive": True})
    assert c.ok("POST", f"/fs/rm/{sid}", {"path": "app/a.txt"}) == {"success": True, "found": True}
    assert c.ok("POST", f"/fs/rm/{sid}", {"path": "app/a.txt"}) == {"success": True, "found": False}
    assert c.ok("POST", f"/fs/rmdir/{sid}", {"path": "x", "recursive": True})["found"] is True
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("sub/b.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    c.ok("POST", f"/fs/upload/{sid}", raw=buf.getvalue(), headers={"Content-Type": "application/octet-stream"},
         query={"path": "up", "format": "tar.gz"})
    st, _, payload, ctype = c.req("GET", f"/fs/download/{sid}", query={"path": "up", "format": "tar.gz"})
    assert st == 200 and ctype == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(payload)) as tf:
        assert tf.extractfile("sub/b.txt").read() == b"hi"
    c.ok("DELETE", f"/sandbox/{sid}")


def test_openapi_lists_every_route(server):
    spec = Client(server.url, None).req("GET", "/openapi.json")[1]
    for route in ROUTES:
        path = route.path.replace("{stream_id:strm_[a-z0-9]+}", "{stream_id}")
        op = spec["paths"][path][route.method.lower()]
        assert str(route.status) in op["responses"]
        for name in ("sandboxId", "executionId", "jobId"):
            if "{" + name + "}" in path:
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])
    ops = [op["operationId"] for p in spec["paths"].values() for op in p.values()]
    assert len(ops) == len(set(ops)) == len(ROUTES) + 1


def test_state_persists_across_restart(tmp_path):
    state = str(tmp_path / "mc")
    key = Store(state).key_create("acme")["key"]
    engine = MemoryEngine(str(tmp_path / "engine"))
    with ThreadedServer(make_app(state, engine=engine)) as srv:
        sid = _create(Client(srv.url, key))
        url1 = srv.url
    with ThreadedServer(make_app(state, engine=engine)) as srv:
        c = Client(srv.url, key)
        assert c.ok("GET", f"/sandbox/{sid}")["data"]["status"] == "idle"
        c.ok("DELETE", f"/sandbox/{sid}")
    assert url1


def test_keys_cli(tmp_path, capsys):
    from mockcloud.__main__ import main
    state = str(tmp_path / "mc")
    assert main(["keys", "create", "--org", "acme", "--state-dir", state, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith("mck_") and made["orgId"].startswith("org_") and made["orgName"] == "acme"
    assert main(["keys", "create", "--org", "acme", "--state-dir", state]) == 0
    second = capsys.readouterr().out.strip()
    assert Store(state).key_org(second) == (made["orgId"], "acme")
    assert main(["keys", "list", "--state-dir", state]) == 0
    assert capsys.readouterr().out.count(made["orgId"]) == 2
    assert main(["keys", "create", "--org", " ", "--state-dir", state]) == 2
    assert "Invalid organization name" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(state, "engine"))
