"""Issue 2 through the real CLI process: outputs, exit codes, bad input, aliases, SIGKILL repair."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT


def test_run_hello_world_and_exit_code(cli):
    p = cli("cloud", "sandbox", "run", "--", "echo", "Hello, World!", check=0)
    assert p.stdout == b"Hello, World!\n"
    p = cli("sb", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3
    assert p.stdout == b"out\n"
    assert b"err\n" in p.stderr and b"failed with exit code 3" in p.stderr


def test_run_json_shape(cli):
    p = cli("sb", "run", "--json", "--", "sh", "-c", "echo a; echo b >&2; exit 2")
    assert p.returncode == 2
    d = json.loads(p.stdout)
    assert set(d) >= {"sandboxId", "exitCode", "durationMs", "output"}
    assert d["exitCode"] == 2 and d["sandboxId"].startswith("sbx_")
    assert "a\n" in d["output"] and "b\n" in d["output"]


def test_run_timeout_is_124(cli):
    t = time.monotonic()
    p = cli("sandbox", "run", "--timeout", "1s", "--", "sleep", "30")
    assert p.returncode == 124 and time.monotonic() - t < 15


@pytest.mark.parametrize("args", [
    ["sb", "run", "--memory", "lots", "--", "true"],
    ["sb", "run", "--cpu", "fast", "--", "true"],
    ["sb", "run", "--timeout", "soon", "--", "true"],
    ["sb", "run", "true"],
    ["sb", "run", "--"],
    ["sb", "create", "--metadata", "[1,2]"],
    ["sb", "create", "--port", "80"],
    ["sb", "exec", "sbx_x", "--timeout", "5 minutes", "--", "true"],
    ["sb", "list", "--org-id", "o", "--project-id", "p"],
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(cli, args, state_dir):
    p = cli(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr.decode()
    p = cli("sb", "list", "--json", "--all", check=0)
    assert json.loads(p.stdout)["total"] == 0


def test_unknown_id_is_not_found_exit_4(cli):
    for args in (["sb", "get", "sbx_doesnotexist"], ["sb", "exec", "sbx_doesnotexist", "--", "true"],
                 ["sb", "delete", "sbx_doesnotexist", "--confirm"]):
        p = cli(*args)
        assert p.returncode == 4, (args, p.stderr)
        assert b"sbx_doesnotexist" in p.stderr


def test_create_exec_get_list_delete_and_aliases(cli):
    p = cli("sb", "new", "--name", "box1", "--json", check=0)
    sid = json.loads(p.stdout)["sandboxId"]
    p = cli("sb", "exec", sid, "--", "sh", "-c", "echo hi; exit 6")
    assert p.returncode == 6 and p.stdout == b"hi\n"
    p = cli("sb", "show", sid, "--json", check=0)
    d = json.loads(p.stdout)
    assert d["sandboxId"] == sid and d["name"] == "box1" and d["executions"] == 1
    p = cli("sb", "ls", "--json", check=0)
    assert [s["id"] for s in json.loads(p.stdout)["sandboxes"]] == [sid]
    p = cli("sb", "info", sid, check=0)
    assert sid.encode() in p.stdout
    p = cli("sb", "rm", sid)  # no --confirm, no TTY: cancelled, nothing deleted
    assert p.returncode == 0 and b"Cancelled" in p.stdout + p.stderr
    cli("sb", "get", sid, check=0)
    p = cli("cloud", "sandbox", "terminate", sid, "--confirm", check=0)
    assert b"deleted sandbox" in p.stderr
    # like the official CLI, get asks with includeDeleted: the sandbox shows as deleted; nothing else finds it
    assert json.loads(cli("sb", "get", sid, "--json", check=0).stdout)["status"] == "deleted"
    assert cli("sb", "exec", sid, "--", "true").returncode == 4
    assert json.loads(cli("sb", "list", "--json", check=0).stdout)["total"] == 0


@pytest.mark.parametrize("phase,delay", [("create", 0.02), ("create", 0.05), ("exec", 0.5), ("delete", 0.01)])
def test_sigkill_of_the_cli_is_repaired_by_the_next_command(cli, state_dir, phase, delay):
    env = dict(os.environ, LOCALSB_HOME=state_dir, PYTHONPATH=ROOT)
    sid = None
    if phase == "create":
        args = ["sb", "create"]
    else:
        sid = json.loads(cli("sb", "create", "--json", check=0).stdout)["sandboxId"]
        args = ["sb", "exec", sid, "--", "sleep", "2"] if phase == "exec" else ["sb", "delete", sid, "--confirm"]
    p = subprocess.Popen([sys.executable, "-m", "localsb", *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    time.sleep(2.5 if phase == "exec" else 0.3)
    # the next command repairs; then every sandbox is either healthy (can exec) or gone
    listed = json.loads(cli("sb", "list", "--json", "--all", check=0).stdout)["sandboxes"]
    for s in listed:
        if s["status"] in ("idle", "running"):
            assert cli("sb", "exec", s["id"], "--", "true").returncode == 0
            cli("sb", "delete", s["id"], "--confirm", check=0)
    from localsb.engine import Engine
    e = Engine(state_dir)
    vols = os.path.join(e.pool.root, "sandboxes")
    assert not os.path.isdir(vols) or os.listdir(vols) == []
    assert e.store.one("SELECT COUNT(*) FROM sandboxes WHERE status IN ('creating','stopping')")[0] == 0
    e.close()
