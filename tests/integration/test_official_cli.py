"""The official Agentuity CLI (@agentuity/cli 2.0.21 on bun, from npm) against mockcloud on the real
engine, unchanged, with the environment recipe of reference/official-cli-wire.md §1.1: a throwaway
AGENTUITY_CONFIG_DIR and HOME, stdin from /dev/null, a working directory without agentuity.json.

Each command is run with and without --json and its output, stream placement and exit code
are checked. The CLI is installed by scripts/install-official-cli.sh (idempotent); the tests skip,
saying why, only when that install fails.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from localsb.api.errors import HostError

from mockcloud.testing import ROOT, ServerProcess

# a hang (a stream that never ends) must fail the test, not the run
pytestmark = pytest.mark.timeout(300)

INSTALL = os.path.join(ROOT, "scripts", "install-official-cli.sh")
SBX = re.compile(r"sbx_[a-z0-9]+")


@pytest.fixture(scope="module")
def cli_bin():
    r = subprocess.run(["sh", INSTALL], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip(f"the official CLI could not be installed with npm: {r.stderr.strip()[-500:]}")
    return r.stdout.strip().splitlines()[-1]


class OfficialCLI:
    def __init__(self, bin_dir: str, mc: ServerProcess, key: dict, home: str):
        self.bin_dir, self.mc, self.key, self.home = bin_dir, mc, key, home
        self.created: list[str] = []

    def env(self) -> dict:
        env = {"PATH": self.bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": self.home, "AGENTUITY_CONFIG_DIR": os.path.join(self.home, "agentuity-config"),
               "NO_COLOR": "1", "NO_PROXY": "127.0.0.1,localhost", "AGENTUITY_SKIP_VERSION_CHECK": "1",
               # human output whoever runs the suite (an AI agent among the parents changes it)
               "AGENTUITY_AGENT_MODE": "none"}
        env.update(self.mc.client_env(self.key, org=False))
        return env

    def __call__(self, *args: str, json_out: bool = False, input_bytes: bytes | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        argv = ["agentuity"] + (["--json"] if json_out else []) + ["cloud", "sandbox", *args]
        kw = {"input": input_bytes} if input_bytes is not None else {"stdin": subprocess.DEVNULL}
        r = subprocess.run(argv, capture_output=True, env=self.env(), cwd=self.home, timeout=timeout, **kw)
        r.out, r.err = r.stdout.decode(), r.stderr.decode()
        return r

    def json(self, *args: str, rc: int = 0) -> dict:
        r = self(*args, json_out=True)
        assert r.returncode == rc, (r.returncode, r.out, r.err)
        return json.loads(r.out)

    def create(self) -> str:
        sid = self.json("create")["sandboxId"]
        self.created.append(sid)
        return sid


@pytest.fixture(scope="module")
def mc(tmp_path_factory):
    import tempfile
    from tests.integration.conftest import teardown_state
    engine_state = tempfile.mkdtemp(prefix="lsbtest-ocli-", dir="/tmp")
    srv = ServerProcess(str(tmp_path_factory.mktemp("mockcloud")), engine_state=engine_state).start()
    try:
        yield srv
    finally:
        srv.stop()
        # A process that copied the host's mount table while our pool was mounted (any concurrent
        # `unshare --mount` on the machine) keeps its loop device busy until it exits: retry.
        for attempt in range(15):
            try:
                teardown_state(engine_state)
                break
            except HostError:
                if attempt == 14:
                    raise
                time.sleep(2)


@pytest.fixture
def cli(cli_bin, mc, tmp_path):
    c = OfficialCLI(cli_bin, mc, mc.key("acme"), str(tmp_path))
    yield c
    from localsb.backends.cloud import CloudBackend
    be = CloudBackend.from_env(mc.client_env(c.key))
    for s in be.sandbox_list(limit=100)["sandboxes"]:
        if s["status"] not in ("terminated", "failed", "deleted"):
            be.sandbox_destroy(s["id"])


def test_run_passes_streams_and_exit_code(cli):
    r = cli("run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3, r.err
    assert r.out == "out\n"
    assert r.err.startswith("err\n") and re.search(r"✗ failed with exit code 3 in \d+ms", r.err)
    r = cli("run", "--", "sh", "-c", "echo hello; echo warn >&2")
    assert (r.returncode, r.out, r.err) == (0, "hello\n", "warn\n")
    r = cli("run", "--", "sh", "-c", "echo hello; echo warn >&2; exit 4", json_out=True)
    assert r.returncode == 4, r.err
    data = json.loads(r.out)
    assert SBX.fullmatch(data["sandboxId"]) and data["exitCode"] == 4 and data["durationMs"] >= 0
    assert sorted(data["output"].splitlines()) == ["hello", "warn"]


def test_run_missing_command_fails_cleanly(cli):
    r = cli("run", "--", "/no/such/binary")
    assert r.returncode != 0


def test_create_get_list(cli):
    r = cli("create")
    assert r.returncode == 0, r.err
    m = re.search(r"✓ created sandbox (sbx_[a-z0-9]+) in \d+ms", r.err)
    assert m, r.err
    sid = m.group(1)
    cli.created.append(sid)
    created = cli.json("create")
    assert SBX.fullmatch(created["sandboxId"]) and created["status"] in ("creating", "idle")
    cli.created.append(created["sandboxId"])

    r = cli("get", sid)
    assert r.returncode == 0, r.err
    assert re.search(rf"Sandbox:\s+{sid}", r.out) and re.search(r"Status:\s+idle", r.out)
    assert re.search(r"Region:\s+usc", r.out) and re.search(r"Runtime:\s+base", r.out)
    info = cli.json("get", sid)
    assert info["sandboxId"] == sid and info["status"] == "idle" and info["executions"] == 0
    assert info["region"] == "usc" and info["runtime"]["name"] == "base"

    r = cli("list")
    assert r.returncode == 0, r.err
    assert sid in r.out and created["sandboxId"] in r.out and "ID" in r.out and "Status" in r.out
    assert re.search(r"ℹ Total: \d+ sandboxes", r.err)
    listed = cli.json("list")
    rows = {s["id"]: s for s in listed["sandboxes"]}
    assert rows[sid]["status"] == "idle" and rows[sid]["orgName"] == "acme" and listed["total"] >= 2
    assert set(rows[sid]) == {"id", "name", "description", "status", "createdAt", "region", "orgId", "orgName",
                              "projectId"}


def test_exec_streams_exit_codes_and_json(cli):
    sid = cli.create()
    r = cli("exec", sid, "--", "sh", "-c", "echo hello; echo oops >&2; exit 2")
    assert r.returncode == 2, r.err
    assert r.out == "hello\n" and r.err.startswith("oops\n")
    assert re.search(r"✗ failed with exit code 2 in \d+ms", r.err)
    data = cli.json("exec", sid, "--", "sh", "-c", "echo hi; pwd")
    assert data["exitCode"] == 0 and data["stdout"] == "hi\n/home/agentuity\n" and data["stderr"] == ""
    assert data["executionId"].startswith("exec_") and data["status"] == "completed"
    assert cli.json("get", sid)["executions"] == 2


def test_pause_resume(cli):
    sid = cli.create()
    r = cli("pause", sid)
    assert r.returncode == 0 and re.search(rf"✓ paused sandbox {sid} in \d+ms", r.err), r.err
    assert cli.json("get", sid)["status"] in ("suspended", "paused")
    r = cli("resume", sid)
    assert r.returncode == 0 and re.search(rf"✓ resumed sandbox {sid} in \d+ms", r.err), r.err
    data = cli.json("pause", sid)
    assert data["success"] is True and data["sandboxId"] == sid and data["durationMs"] >= 0
    data = cli.json("resume", sid)
    assert data == {"success": True, "sandboxId": sid, "durationMs": data["durationMs"]}
    assert cli.json("get", sid)["status"] == "idle"


def test_env(cli):
    sid = cli.create()
    r = cli("env", sid, "FOO=bar", "BAZ=q=x")
    assert r.returncode == 0, r.err
    assert "✓ Set 2 environment variable(s)" in r.err
    assert "Current environment:" in r.out and "  FOO=bar" in r.out and "  BAZ=q=x" in r.out
    assert cli.json("env", sid, "--delete", "FOO") == {"success": True, "env": {"BAZ": "q=x"}}
    assert cli.json("exec", sid, "--", "sh", "-c", "echo $BAZ-${FOO:-unset}")["stdout"] == "q=x-unset\n"


def test_delete(cli):
    sid = cli.create()
    r = cli("delete", sid, "--confirm")
    assert r.returncode == 0 and re.search(rf"✓ deleted sandbox {sid} in \d+ms", r.err), r.err
    sid2 = cli.create()
    data = cli.json("delete", sid2, "--confirm")
    assert data["success"] is True and data["sandboxId"] == sid2
    r = cli("delete", sid2, "--confirm", json_out=True)
    assert r.returncode == 1
    err = json.loads(r.err[r.err.index("{"):])["error"]
    assert err["message"] == f"Sandbox not found: {sid2}" and err["details"]["status"] == 404


def test_unknown_sandbox_errors(cli):
    r = cli("get", "sbx_doesnotexist")
    assert r.returncode == 1
    assert "[ERROR] APIErrorResponse: Sandbox not found: sbx_doesnotexist" in r.err
    r = cli("exec", "sbx_doesnotexist", "--", "true", json_out=True)
    assert r.returncode == 1 and "Sandbox not found" in r.err


def test_other_orgs_sandbox_is_not_found(cli, cli_bin, mc, tmp_path):
    sid = cli.create()
    other = OfficialCLI(cli_bin, mc, mc.key("globex"), str(tmp_path / "other"))
    os.makedirs(other.home)
    r = other("get", sid)
    assert r.returncode == 1 and f"Sandbox not found: {sid}" in r.err


def test_runtime_stats_events_executions(cli):
    sid = cli.create()
    r = cli("runtime", "list")
    assert r.returncode == 0 and re.search(r"ℹ Total: \d+ runtimes", r.err) and "base" in r.out, r.err
    names = [rt["name"] for rt in cli.json("runtime", "list")["runtimes"]]
    assert "base" in names
    r = cli("stats")
    assert r.returncode == 0 and "Sandbox Statistics" in r.err and re.search(r"Active:\s+\d+ \(", r.out), r.err
    stats = cli.json("stats")["services"]["sandbox"]
    assert stats["totalActive"] >= 1 and stats["idle"] >= 1
    ex = cli.json("exec", sid, "--", "true")
    r = cli("execution", "list", sid)
    assert r.returncode == 0 and ex["executionId"] in r.out and "ℹ Total: 1 execution" in r.err, r.err
    listed = cli.json("execution", "list", sid)["executions"]
    assert [e["executionId"] for e in listed] == [ex["executionId"]] and listed[0]["exitCode"] == 0
    got = cli.json("execution", "get", ex["executionId"])
    assert got["executionId"] == ex["executionId"] and got["sandboxId"] == sid and got["status"] == "completed"
    r = cli("events", sid)
    assert r.returncode == 0 and "create" in r.out and re.search(r"ℹ Total: \d+ events", r.err), r.err
    types = [e["type"] for e in cli.json("events", sid)["events"]]
    assert types[0] == "create"


def test_checkpoints_jobs_files_snapshots(cli, tmp_path):
    sid = cli.create()
    r = cli("checkpoint", "create", sid, "cp1")
    assert r.returncode == 0 and re.search(r"✓ created disk checkpoint ckpt_[a-z0-9]+ in \d+ms", r.err), r.err
    cps = cli.json("checkpoint", "list", sid)["checkpoints"]
    assert [c["name"] for c in cps] == ["cp1"]
    r = cli("job", "create", sid, "--", "sh", "-c", "echo jobout")
    assert r.returncode == 0 and re.search(r"✓ Created job job_[a-z0-9]+", r.err), r.err
    job_id = re.search(r"job_[a-z0-9]+", r.err).group(0)
    deadline = time.monotonic() + 20
    while cli.json("job", "get", sid, job_id)["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.2)
    assert [j["jobId"] for j in cli.json("job", "list", sid)["jobs"]] == [job_id]
    local = tmp_path / "f.txt"
    local.write_text("hello\n")
    r = cli("fs", "cp", str(local), f"{sid}:/home/agentuity/f.txt")
    assert r.returncode == 0 and "✓ Copied" in r.err and "(6 bytes)" in r.err, r.err
    back = tmp_path / "back.txt"
    assert cli("fs", "cp", f"{sid}:/home/agentuity/f.txt", str(back)).returncode == 0
    assert back.read_text() == "hello\n"
    files = {f["path"]: f for f in cli.json("fs", "ls", sid)["files"]}
    assert files["f.txt"]["size"] == 6 and files["f.txt"]["isDir"] is False
    r = cli("snapshot", "create", sid, "--name", "snap1", "--tag", "v1")
    assert r.returncode == 0 and re.search(r"✓ Created snapshot snp_[a-z0-9]+", r.err), r.err
    snaps = cli.json("snapshot", "list")["snapshots"]
    assert [(s["name"], s["tag"]) for s in snaps] == [("snap1", "v1")]
    assert cli.json("snapshot", "delete", snaps[0]["snapshotId"], "--confirm")["success"] is True


def test_both_clis_find_an_agent_among_their_parents(cli, tmp_path):
    """No AGENTUITY_AGENT_MODE: both CLIs walk their parent processes. Under a shell named `claude`
    (as Claude Code runs commands) both print the plain markers. (The human half is not tested this
    way: whoever runs the suite may itself be an agent, further up the same chain of parents.)"""
    import shlex
    import sys
    env = cli.env()
    del env["AGENTUITY_AGENT_MODE"]
    env.update(cli.mc.client_env(cli.key), LOCALSB_BACKEND="cloud", PYTHONPATH=ROOT)
    official = ["agentuity", "cloud", "sandbox", "create"]
    local = [sys.executable, "-m", "localsb", "cloud", "sandbox", "create"]

    def under(parent_name, argv):
        # `; true` keeps the named shell alive as the CLI's parent (no exec of the last command)
        script = f"{shlex.join(argv)} </dev/null; rc=$?; true; exit $rc"
        r = subprocess.run([parent_name, "-c", script], executable="/bin/bash", capture_output=True,
                           text=True, env=env, cwd=cli.home, timeout=120)
        assert r.returncode == 0, r.stderr
        sid = SBX.search(r.stderr).group(0)
        cli.created.append(sid)
        return r.stderr

    assert re.search(r"^\[OK\] created sandbox sbx_[a-z0-9]+ in \d+ms$", under("claude", official), re.M)
    assert re.fullmatch(r"\[OK\] created sandbox sbx_[a-z0-9]+ in \d+ms\n", under("claude", local))


def test_run_passes_piped_stdin(cli):
    """The official CLI uploads a piped stdin to the stream service only after the create answer;
    mockcloud hands the engine the growing stream file, so the command reads all of it."""
    data = b"".join(b"line %d\n" % i for i in range(2000))
    r = cli("run", "--", "sh", "-c", "wc -l; echo done", input_bytes=data)
    assert r.returncode == 0, r.err
    assert r.out.split() == ["2000", "done"], r.out
