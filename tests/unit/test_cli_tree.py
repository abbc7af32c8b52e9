"""The command tree: every command and alias parses and reaches the right backend method."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cli_fake_backend import FakeBackend, cli  # noqa: E402

from localsb.cli import tree  # noqa: E402
from localsb.cli.main import build_parser  # noqa: E402

SBX = "sbx_t1"


def fixture_backend() -> FakeBackend:
    b = FakeBackend()
    b.add_sandbox(sandboxId=SBX, name="demo")
    b.checkpoints[SBX] = [{"id": "ckpt_1", "name": "c1", "createdAt": "t", "parent": ""}]
    b.snapshots["snp_1"] = {"snapshotId": "snp_1", "name": "s", "tag": "latest", "sizeBytes": 1, "fileCount": 1,
                            "createdAt": "t"}
    b.jobs["job_1"] = {"jobId": "job_1", "sandboxId": SBX, "command": ["sleep", "1"], "status": "running"}
    b.executions["exec_1"] = {"executionId": "exec_1", "sandboxId": SBX, "status": "completed", "exitCode": 0}
    b.files[(SBX, "/home/agentuity/f.txt")] = b"data"
    return b


# (group path, names of the command incl. aliases, extra argv, backend methods called)
LEAVES = [
    ([], ["run"], ["--", "echo", "x"], ["sandbox_run"]),
    ([], ["create", "new"], [], ["sandbox_create"]),
    ([], ["exec", "execute"], [SBX, "--", "echo", "x"], ["sandbox_execute"]),
    ([], ["list", "ls"], [], ["sandbox_list"]),
    ([], ["get", "info", "show"], [SBX], ["sandbox_get"]),
    ([], ["delete", "rm", "del", "remove", "destroy", "terminate"], [SBX, "--confirm"], ["sandbox_destroy"]),
    ([], ["pause", "hibernate", "suspend"], [SBX], ["sandbox_pause"]),
    ([], ["resume", "wake", "unpause"], [SBX], ["sandbox_resume"]),
    ([], ["env"], [SBX, "A=1"], ["sandbox_env"]),
    ([], ["events", "event"], [SBX], ["events_list"]),
    ([], ["stats"], [], ["stats"]),
    (["fs", "files", "file"], ["ls", "list", "dir"], [SBX], ["fs_list"]),
    (["fs"], ["cp", "copy"], [f"{SBX}:/home/agentuity/f.txt", "{tmp}/out.txt"], ["fs_read"]),
    (["fs"], ["mkdir"], [SBX, "/a/b", "-p"], ["fs_mkdir"]),
    (["fs"], ["rm", "del", "remove"], [SBX, "/home/agentuity/f.txt"], ["fs_rm"]),
    (["fs"], ["rmdir"], [SBX, "/a", "-r"], ["fs_rmdir"]),
    (["fs"], ["download", "dl"], [SBX, "{tmp}/o.tar.gz"], ["fs_download"]),
    (["fs"], ["upload", "ul"], [SBX, "{tmp}/up.tar.gz"], ["fs_upload"]),
    (["snapshot", "snap", "snapshots"], ["create", "new"], [SBX], ["snapshot_create"]),
    (["snapshot"], ["list", "ls"], [], ["snapshot_list"]),
    (["snapshot"], ["get", "info", "show"], ["snp_1"], ["snapshot_get", "sandbox_list"]),
    (["snapshot"], ["tag"], ["snp_1", "v2"], ["snapshot_tag"]),
    (["snapshot"], ["delete", "del", "rm", "remove"], ["snp_1", "--confirm"], ["snapshot_delete"]),
    (["snapshot"], ["build"], ["{tmp}"], ["snapshot_build"]),
    (["snapshot"], ["generate", "gen", "init"], [], []),
    (["checkpoint", "ckpt"], ["create", "new"], [SBX, "c2"], ["checkpoint_create"]),
    (["checkpoint"], ["list", "ls"], [SBX], ["checkpoint_list"]),
    (["checkpoint"], ["restore"], [SBX, "c1"], ["checkpoint_restore"]),
    (["checkpoint"], ["delete", "del", "rm", "remove"], [SBX, "c1", "--confirm"], ["checkpoint_delete"]),
    (["execution", "executions"], ["list", "ls"], [SBX], ["execution_list"]),
    (["execution"], ["get", "info", "show"], ["exec_1"], ["execution_get"]),
    (["job", "jobs"], ["create", "new"], [SBX, "--", "sleep", "1"], ["job_create"]),
    (["job"], ["list", "ls"], [SBX], ["job_list"]),
    (["job"], ["get", "show", "info"], [SBX, "job_1"], ["job_get"]),
    (["job"], ["destroy", "stop", "terminate"], [SBX, "job_1"], ["job_destroy"]),
    (["job"], ["logs", "log"], [SBX, "job_1"], ["job_get", "job_logs"]),
    (["runtime", "rt"], ["list", "ls"], [], ["runtime_list"]),
    (["runtime"], ["build"], ["python:3.14"], ["runtime_build"]),
]


def _cases():
    for groups, names, extra, methods in LEAVES:
        for gi, g in enumerate(groups or [None]):
            for ni, name in enumerate(names):
                # every alias once with the canonical group; every group alias with the canonical name
                if gi and ni:
                    continue
                path = ([g] if g else []) + [name]
                yield pytest.param(path, extra, methods, id="-".join(path))


def _prepare(tmp_path, extra):
    import tarfile
    (tmp_path / "agentuity-snapshot.json").write_text('{"version": 1, "runtime": "bun:1", "env": {"A": "1"}}')
    with tarfile.open(tmp_path / "up.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "agentuity-snapshot.json", arcname="x.json")
    return [e.replace("{tmp}", str(tmp_path)) for e in extra]


@pytest.mark.parametrize("prefix", [["cloud", "sandbox"], ["sandbox"], ["sb"], ["cloud", "sb"]])
def test_prefixes_reach_the_same_tree(prefix):
    r = cli(*prefix, "list", backend=fixture_backend())
    assert r.rc == 0, r
    assert r.backend.methods() == ["sandbox_list"]


@pytest.mark.parametrize("path,extra,methods", list(_cases()))
def test_every_command_and_alias_calls_its_backend_method(tmp_path, path, extra, methods):
    r = cli("sb", *path, *_prepare(tmp_path, extra), backend=fixture_backend())
    assert r.rc == 0, r
    assert r.backend.methods() == methods


@pytest.mark.parametrize("path,extra,methods", list(_cases()))
def test_every_command_has_json_output(tmp_path, path, extra, methods):
    import json
    r = cli("--json", "sb", *path, *_prepare(tmp_path, extra), backend=fixture_backend())
    assert r.rc == 0, r
    if path[-1] in ("logs", "log"):
        # job logs writes NDJSON lines, then one object (as the official CLI).
        r.out = r.out[r.out.index("{\n"):]
    json.loads(r.out)


def test_ssh_show_prints_the_backend_command():
    r = cli("cloud", "ssh", SBX, "ls -la /workspace", "--show", backend=fixture_backend())
    assert r.rc == 0, r
    assert r.out == f"localsb-attach {SBX} 'ls -la /workspace'\n"
    assert r.backend.calls[0] == ("ssh_command", (SBX, "ls -la /workspace"), {"org_id": None})


def test_doctor_vertical_and_json():
    r = cli("doctor", backend=fixture_backend())
    assert r.rc == 0
    assert "backend:  fake\n" in r.out and "cgroups:  memory=v1, freeze=v2\n" in r.out
    r = cli("doctor", "--json", backend=fixture_backend())
    assert r.json()["cgroups"] == {"memory": "v1", "freeze": "v2"}


@pytest.mark.parametrize("argv", [
    ["--json", "sb", "list"], ["sb", "--json", "list"], ["sb", "list", "--json"], ["cloud", "--json", "sandbox", "ls"],
])
def test_global_options_anywhere(argv):
    r = cli(*argv, backend=fixture_backend())
    assert r.rc == 0, r
    assert r.json()["total"] == 1


def test_org_id_anywhere_and_from_env():
    b = fixture_backend()
    cli("--org-id", "org_a", "sb", "stats", backend=b)
    cli("sb", "stats", "--org-id", "org_b", backend=b)
    cli("sb", "stats", backend=b, env={"AGENTUITY_CLOUD_ORG_ID": "org_env"})
    assert [c[2]["org_id"] for c in b.calls] == ["org_a", "org_b", "org_env"]


def test_options_reach_the_backend():
    b = fixture_backend()
    assert cli("sb", "list", "--status", "idle", "--name", "demo", "--mode", "interactive", "--limit", "5",
               "--offset", "1", "--sort", "name", "--direction", "asc", "--all", backend=b).rc == 0
    assert b.calls[0][2] == {"org_id": None, "project_id": None, "name": "demo", "mode": "interactive",
                             "status": "idle", "snapshot_id": None, "limit": 5, "offset": 1, "sort": "name",
                             "direction": "asc"}
    b = fixture_backend()
    cli("sb", "events", SBX, "--reverse", "--limit", "10", backend=b)
    assert b.calls[0][2]["direction"] == "desc" and b.calls[0][2]["limit"] == 10
    b = fixture_backend()
    cli("sb", "job", "destroy", SBX, "job_1", "--force", backend=b)
    assert b.calls[0][2]["force"] is True


def test_list_project_defaults_from_environment_unless_all():
    b = fixture_backend()
    cli("sb", "list", backend=b, env={"AGENTUITY_CLOUD_PROJECT_ID": "proj_x"})
    cli("sb", "list", "--all", backend=b, env={"AGENTUITY_CLOUD_PROJECT_ID": "proj_x"})
    assert [c[2]["project_id"] for c in b.calls] == ["proj_x", None]


def test_exec_passes_everything_after_the_separator_verbatim():
    b = fixture_backend()
    r = cli("sb", "exec", SBX, "--timeout", "30s", "--timestamps", "--", "echo", "--json", "-x", "--", "y", backend=b)
    assert r.rc == 0, r
    _, args, kwargs = b.calls[0]
    assert args == (SBX, ["echo", "--json", "-x", "--", "y"])
    assert kwargs["timeout"] == "30s" and kwargs["timestamps"] is True
    assert r.out == "--json -x -- y\n"  # --json after -- belongs to the command, not to localsb


def test_run_builds_the_spec_from_options(tmp_path):
    (tmp_path / "index.js").write_text("console.log(1)")
    b = fixture_backend()
    r = cli("sb", "run", "--memory", "1Gi", "--cpu", "500m", "--disk", "2Gi", "--network", "--timeout", "5m",
            "--name", "n1", "--description", "d", "--runtime", "bun:1", "--env", "A=1", "--env", "B=x=y",
            "--file", f"app/index.js:{tmp_path}/index.js", "--dependency", "curl", "--scope", "kv:read",
            "--project-id", "proj_abc", "--timestamps", "--", "echo", "hi", backend=b)
    assert r.rc == 0, r
    spec = b.calls[0][1][0]
    assert spec.mode == "oneshot" and spec.command == ["echo", "hi"]
    assert spec.to_wire()["resources"] == {"memory": "1Gi", "cpu": "500m", "disk": "2Gi"}
    assert spec.env == {"A": "1", "B": "x=y"} and spec.execution_timeout == "5m" and spec.network
    assert [(f.path, f.content) for f in spec.files] == [("app/index.js", b"console.log(1)")]
    assert spec.dependencies == ["curl"] and spec.scopes == ["kv:read"] and spec.project_id == "proj_abc"
    assert spec.timestamps and spec.runtime == "bun:1" and spec.name == "n1"


def test_create_builds_the_spec_and_waits():
    b = fixture_backend()
    r = cli("sb", "create", "--port", "3000", "--metadata", '{"a": 1}', "--idle-timeout", "30m",
            "--paused-timeout", "24h", "--wait", "--wait-ms", "2000", "--json", backend=b)
    assert r.rc == 0, r
    spec = b.calls[0][1][0]
    assert spec.port == 3000 and spec.network and spec.metadata == {"a": 1}
    assert spec.idle_timeout == "30m" and spec.paused_timeout == "24h" and spec.mode == "interactive"
    assert b.calls[1][0] == "sandbox_wait" and b.calls[1][2]["wait_ms"] == 2000
    assert r.json()["status"] == "idle"


def test_help_of_every_group_shows_examples():
    for argv in (["--help"], ["cloud", "--help"], ["sb", "--help"], ["sb", "fs", "--help"],
                 ["sb", "snapshot", "--help"], ["sb", "ckpt", "--help"], ["sb", "execution", "--help"],
                 ["sb", "job", "--help"], ["sb", "rt", "--help"], ["sb", "run", "--help"]):
        r = cli(*argv)
        assert r.rc == 0, (argv, r)
        assert "examples:\n  " in r.out, argv
        assert r.backend.calls == []


def test_group_without_command_prints_its_help():
    r = cli("sb", "snapshot")
    assert r.rc == 0 and "generate (gen, init)" in r.out


def _all_parsers(parser, seen=None):
    import argparse
    seen = set() if seen is None else seen
    if id(parser) in seen:
        return
    seen.add(id(parser))
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action._name_parser_map.values():
                yield from _all_parsers(child, seen)


def test_build_parser_is_complete_for_man_pages():
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) >= 49  # 38 leaves (aliases share a parser) + groups
    for p in parsers:
        assert p._populate is None, p.prog  # no group left unbuilt
        for action in p._actions:
            if action.dest == "help" or isinstance(action, tree.argparse._SubParsersAction):
                continue
            assert action.help, (p.prog, action.dest)
            if action.option_strings and action.default not in (None, False, tree.argparse.SUPPRESS, True):
                assert "(default: " in action.help, (p.prog, action.dest)


def test_lazy_tree_builds_only_what_is_walked():
    import io
    from localsb.cli import main as m
    parser = m.build_parser(lazy=True)
    m.parse_args(parser, ["sb", "list"])
    built = [p.prog for p in _all_parsers(parser) if p._populate is None and p._subparsers is not None]
    assert "localsb cloud sandbox" in built
    assert "localsb cloud sandbox snapshot" not in built
    assert io  # keep the import used


def _run_python(code: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          check=True, env=dict(os.environ, PYTHONPATH=root)).stdout


def test_help_and_parse_import_no_heavy_modules():
    out = _run_python(
        "import io, sys\n"
        "from localsb.cli.main import main\n"
        "for argv in (['--help'], ['sb', 'run', '--help'], ['sb', 'snapshot', 'generate', '--json']):\n"
        "    main(argv, stdout=io.StringIO(), stderr=io.StringIO(), env={})\n"
        "print(sorted(m for m in ('aiohttp', 'yaml', 'pathspec', 'localsb.backends.cloud') if m in sys.modules))\n")
    assert out.strip() == "[]"


def test_python_dash_m_works():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "localsb", "--version"], cwd=root, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0 and r.stdout.startswith("localsb ")


def test_double_dash_keeps_its_meaning_for_other_commands():
    b = fixture_backend()
    r = cli("sb", "fs", "rm", SBX, "--", "-file-with-a-dash", backend=b)
    assert r.rc == 0, r
    assert b.calls[0][1] == (SBX, "-file-with-a-dash")
