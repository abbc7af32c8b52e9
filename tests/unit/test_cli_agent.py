"""Agent detection (cli/agent.py) and what it changes in the output: the official CLI's rules."""
import io
import os
import subprocess
import sys

import pytest

from localsb.cli import agent
from localsb.cli.output import Output
from tests.unit.cli_fake_backend import cli


@pytest.mark.parametrize("mode, expected", [("none", None), ("false", None), ("0", None),
                                            ("claude-code", "claude-code"), ("mybot", "mybot")])
def test_agentuity_agent_mode_decides_alone(mode, expected, monkeypatch):
    monkeypatch.setattr(agent, "agent_in_ancestors", lambda: pytest.fail("the variable decides"))
    assert agent.executing_agent({"AGENTUITY_AGENT_MODE": mode}, stdin_is_tty=False) == expected


def test_warp_variable_and_terminal_stdin(monkeypatch):
    monkeypatch.setattr(agent, "agent_in_ancestors", lambda: "codex")
    assert agent.executing_agent({"WARP_AGENT_MODE": "true"}, stdin_is_tty=True) == "warp"
    assert agent.executing_agent({}, stdin_is_tty=True) is None   # a human at a terminal
    assert agent.executing_agent({}, stdin_is_tty=False) == "codex"


@pytest.mark.parametrize("path, expected", [
    ("/usr/local/bin/claude", "claude-code"), ("/opt/cursor-agent", "cursor"),
    ("/home/u/.opencode/bin/opencode", "opencode"), ("/usr/bin/amp-cli", "amp"),
    ("/usr/bin/python3", None), ("/usr/bin/bash", None), ("/usr/bin/pipx", None),
])
def test_match_path(path, expected):
    assert agent.match_path(path) == expected


@pytest.mark.parametrize("cmdline, expected", [
    ("node /usr/local/bin/claude --print", "claude-code"),   # an agent run as a node script
    ("node --no-warnings /usr/local/bin/amp", "amp"),
    ("pi --mode rpc", "pi"),                                 # short name as argv[0]
    ("python3 compute.py pi", None),                         # ... but not as an argument
    ("bash -c echo AGENT=claude", None),                     # K=V words are skipped
    ("sh ./node_modules/.bin/codex", None),                  # relative paths are not executables
    ("bun x gemini", "gemini"),
])
def test_match_cmdline(cmdline, expected):
    assert agent.match_cmdline(cmdline) == expected


def _fake_proc(tmp_path, procs):
    """procs: {pid: (ppid, exe, argv)} as a /proc-like tree."""
    for pid, (ppid, exe, argv) in procs.items():
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} (a b) S {ppid} 1 1 0")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        os.symlink(exe, d / "exe")
    return str(tmp_path)


def test_ancestor_walk_finds_an_agent_a_few_levels_up(tmp_path):
    proc = _fake_proc(tmp_path, {
        30: (20, "/usr/bin/python3", ["python3", "-m", "pytest"]),
        20: (10, "/usr/bin/bash", ["bash", "-c", "tox"]),
        10: (1, "/usr/bin/node", ["node", "/usr/local/bin/claude"]),
    })
    assert agent.agent_in_ancestors(30, proc=proc) == "claude-code"
    assert agent.agent_in_ancestors(20, proc=proc) == "claude-code"


def test_ancestor_walk_stops_at_init_and_at_ten_levels(tmp_path):
    procs = {pid: (pid - 1, "/usr/bin/sh", ["sh"]) for pid in range(2, 14)}
    procs[2] = (1, "/usr/bin/codex", ["codex"])   # the 12th ancestor of 13: too far up
    proc = _fake_proc(tmp_path, procs)
    assert agent.agent_in_ancestors(13, proc=proc) is None
    assert agent.agent_in_ancestors(11, proc=proc) == "codex"   # the 10th: found
    assert agent.agent_in_ancestors(1, proc=proc) is None


def test_ancestor_walk_on_the_real_proc_sees_a_parent_named_like_an_agent():
    # A parent whose argv[0] is "claude" (bash started under that name) makes its child an agent's.
    code = "from localsb.cli.agent import agent_in_ancestors as a; print(a())"
    p = subprocess.run(["bash", "-c", f'exec -a claude bash -c \'"{sys.executable}" -c "{code}"; true\''],
                       capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "claude-code", p.stderr


def test_output_markers_in_agent_mode():
    err = io.StringIO()
    out = Output(io.StringIO(), err, io.StringIO(), env={"AGENTUITY_AGENT_MODE": "claude-code"},
                 color="auto")
    out.success("created sandbox sbx_1 in 5ms")
    out.info("Total: 2 runtimes")
    out.warning("careful")
    out.error("failed with exit code 3 in 9ms")
    out.bullet("item")
    assert err.getvalue() == ("[OK] created sandbox sbx_1 in 5ms\n[INFO] Total: 2 runtimes\n"
                              "[WARN] careful\n[ERROR] failed with exit code 3 in 9ms\n- item\n")


def test_human_markers_when_not_an_agent():
    err = io.StringIO()
    out = Output(io.StringIO(), err, io.StringIO(), env={"AGENTUITY_AGENT_MODE": "none"})
    out.success("ok")
    out.error("bad")
    out.bullet("item")
    assert err.getvalue() == "✓ ok\n✗ bad\n• item\n"


def test_agent_mode_through_the_cli():
    r = cli("sb", "create", env={"AGENTUITY_AGENT_MODE": "codex"})
    assert r.rc == 0 and r.err.startswith("[OK] created sandbox sbx_"), r.err
    r = cli("sb", "get", "sbx_missing", env={"AGENTUITY_AGENT_MODE": "codex"})
    assert r.rc != 0 and r.err.startswith("[ERROR] "), r.err
    r = cli("sb", "create")
    assert r.rc == 0 and r.err.startswith("✓ created sandbox sbx_"), r.err
