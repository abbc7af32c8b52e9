"""Human and --json output of representative commands, against the reference texts
(reference/hosted-api.md §4 and official-cli-wire.md §4)."""
from __future__ import annotations

import io
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cli_fake_backend import FakeBackend, cli  # noqa: E402

from localsb.cli.output import Output, file_tree, format_bytes, format_number, format_size_1, plural  # noqa: E402


def _backend(**fields):
    b = FakeBackend()
    b.add_sandbox(sandboxId="sbx_1", **fields)
    return b


# formatting helpers ---------------------------------------------------------------------------------


def test_format_bytes_like_tui_format_bytes():
    assert [format_bytes(n) for n in (0, 1, 1023, 1024, 2048, 987654321, 5 * 1024**3)] == \
        ["0 B", "1 B", "1023 B", "1.00 KB", "2.00 KB", "941.90 MB", "5.00 GB"]
    assert [format_size_1(n) for n in (19, 1536, 3 * 1024**2)] == ["19 B", "1.5 KB", "3.0 MB"]
    assert format_size_1(155, "bytes") == "155 bytes"
    assert [format_number(n) for n in (17, 1500, 2_500_000)] == ["17", "1.5K", "2.5M"]
    assert (plural(0, "a", "b"), plural(1, "a", "b"), plural(2, "a", "b")) == ("b", "a", "b")


def _out(env=None, **kw):
    return Output(io.StringIO(), io.StringIO(), io.StringIO(),
                  env={"AGENTUITY_AGENT_MODE": "none"} if env is None else env, **kw)


def test_box_table_is_cli_table3_style():
    o = _out()
    o.table(["ID", "Size"], [["a", "1"], ["bbb", None]], align=["left", "right"])
    assert o.stdout.getvalue() == (
        "┌─────┬──────┐\n"
        "│ ID  │ Size │\n"
        "├─────┼──────┤\n"
        "│ a   │    1 │\n"
        "├─────┼──────┤\n"
        "│ bbb │      │\n"
        "└─────┴──────┘\n")


def test_table_wider_than_the_terminal_falls_back_to_vertical():
    o = _out()
    o.table(["ID", "Description"], [["x", "d" * 90], ["y", "short"]])
    assert o.stdout.getvalue() == f"ID:           x\nDescription:  {'d' * 90}\n\nID:           y\nDescription:  short\n"


def test_vertical_layout_pads_labels():
    o = _out()
    o.vertical([("Sandbox", "sbx_1"), ("Stream (stdout)", "u")], pad="  ")
    assert o.stdout.getvalue() == "  Sandbox:          sbx_1\n  Stream (stdout):  u\n"


def test_json_is_javascript_stringify_style():
    o = _out(json=True)
    o.json({"a": [1, {"b": "é"}], "c": {}, "d": []})
    assert o.stdout.getvalue() == '{\n  "a": [\n    1,\n    {\n      "b": "é"\n    }\n  ],\n  "c": {},\n  "d": []\n}\n'


def test_colors_only_when_asked_or_on_a_terminal():
    o = _out(color="always")
    o.success("ok")
    assert o.stderr.getvalue() == "\x1b[32m✓ ok\x1b[0m\n"
    o = _out()
    o.success("ok")
    assert o.stderr.getvalue() == "✓ ok\n"
    o = _out(color="always", json=True)
    o.error("x")
    assert o.stderr.getvalue() == "✗ x\n"


def test_file_tree_directories_first_then_alphabetical():
    lines = file_tree([("src/b.ts", 10), ("index.js", 2048), ("src/a/z.ts", 1), ("README", 5)])
    assert lines == ["  ├── src/", "  │   ├── a/", "  │   │   └── z.ts (1 B)", "  │   └── b.ts (10 B)",
                     "  ├── index.js (2.00 KB)", "  └── README (5 B)"]


# run and exec ---------------------------------------------------------------------------------------


def test_run_streams_output_and_exits_with_the_command_code():
    r = cli("sb", "run", "--", "echo", "hello")
    assert (r.rc, r.out, r.err) == (0, "hello\n", "")
    r = cli("sb", "run", "--", "fail", "3")
    assert r.rc == 3 and r.out == ""
    assert r.err == "oops\n✗ failed with exit code 3 in 42ms\n"


def test_run_json_captures_both_streams_in_order_and_keeps_the_exit_code():
    r = cli("--json", "sb", "run", "--", "mixed")
    assert r.rc == 0 and r.err == ""
    assert r.out == '{\n  "sandboxId": "sbx_run1",\n  "exitCode": 0,\n  "durationMs": 42,\n  "output": "a\\nb\\nc\\n"\n}\n'
    r = cli("sb", "run", "--json", "--", "fail", "3")
    assert r.rc == 3 and r.json()["output"] == "oops\n" and r.err == ""


def test_run_quiet_passes_no_streams():
    r = cli("sb", "run", "--quiet", "--", "echo", "hi")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert r.backend.calls[0][1][2:] == (None, None)


def test_run_passes_piped_stdin_but_not_a_terminal():
    r = cli("sb", "run", "--", "cat", stdin=b"piped input data\n")
    assert r.out == "piped input data\n"
    r = cli("sb", "run", "--", "cat", stdin=b"typed", tty=True)
    assert r.out == "" and r.backend.calls[0][1][1] is None


def test_exec_human_and_json():
    r = cli("sb", "exec", "sbx_1", "--", "mixed", backend=_backend())
    assert (r.rc, r.out, r.err) == (0, "a\nc\n", "b\n")
    r = cli("sb", "exec", "sbx_1", "--json", "--", "mixed", backend=_backend())
    assert r.json() == {"executionId": "exec_0001", "status": "completed", "exitCode": 0, "durationMs": 131,
                        "stdout": "a\nc\n", "stderr": "b\n", "output": "a\nb\nc\n"}
    assert list(r.json()) == ["executionId", "status", "exitCode", "durationMs", "stdout", "stderr", "output"]


def test_exec_failures_and_auto_resume():
    r = cli("sb", "exec", "sbx_1", "--", "fail", "3", backend=_backend())
    assert r.rc == 3 and r.err == "oops\n✗ failed with exit code 3 in 131ms\n"
    r = cli("sb", "exec", "sbx_1", "--", "timeout", backend=_backend())
    assert r.rc == 1 and r.err == "✗ Execution exec_0009 timeout in 126ms\n"
    r = cli("sb", "exec", "sbx_1", "--", "echo", "x", backend=_backend(status="suspended"))
    assert r.rc == 0 and r.err == "⚠ Sandbox was automatically resumed from suspended state\n"
    r = cli("--json", "sb", "exec", "sbx_1", "--", "fail", "4", backend=_backend(status="suspended"))
    assert r.rc == 4 and r.json()["autoResumed"] is True and r.err == ""


# sandbox lifecycle ------------------------------------------------------------------------------


def test_create_human_and_json():
    r = cli("sb", "create", "--port", "3000", "--name", "my-server")
    assert r.rc == 0 and r.out == ""
    lines = r.err.splitlines()
    assert lines[0].startswith("✓ created sandbox sbx_") and lines[0].endswith("ms")
    assert lines[1] == "ℹ url: https://my-server-abc.agentuity.cloud"
    r = cli("sb", "create", "--json")
    assert set(r.json()) == {"sandboxId", "status"} and r.json()["status"] == "creating"


def test_list_table_total_and_json():
    b = _backend(name="demo")
    r = cli("sb", "list", backend=b)
    assert r.out.splitlines()[1] == "│ ID    │ Name │ Status │ Region │ Created At               │"
    assert r.err == "ℹ Total: 1 sandbox\n"
    r = cli("sb", "list", "--json", backend=b)
    assert r.json() == {"sandboxes": [{"id": "sbx_1", "name": "demo", "description": None, "status": "idle",
                                       "createdAt": "2026-04-01T12:00:00.000Z", "region": "local",
                                       "orgId": "org_local", "orgName": "Local", "projectId": None}],
                        "total": 1}
    # keys the backend adds (mode, executions) are not in the official CLI's list schema
    plain = b.sandbox_list
    b.sandbox_list = lambda **kw: {**plain(**kw), "sandboxes": [dict(x, mode="interactive", executions=2)
                                                                  for x in plain(**kw)["sandboxes"]]}
    assert list(cli("sb", "list", "--json", backend=b).json()["sandboxes"][0]) == [
        "id", "name", "description", "status", "createdAt", "region", "orgId", "orgName", "projectId"]
    b.sandbox_list = plain
    r = cli("sb", "list", "--status", "failed", backend=b)
    assert (r.out, r.err) == ("", "ℹ No sandboxes found\n")


def test_list_adds_organization_column_for_several_orgs():
    b = _backend()
    b.add_sandbox(sandboxId="sbx_2", orgId="org_2", orgName="Other")
    r = cli("sb", "list", backend=b)
    assert "│ Organization │" in r.out and "│ Other        │" in r.out


def test_get_vertical_table_and_json():
    b = _backend(name="demo", resources={"memory": "512Mi", "cpu": "500m", "disk": "1Gi"},
                 stdoutStreamUrl="http://s/o", stderrStreamUrl="http://s/e", runtime={"id": "srt_1", "name": "bun:1"})
    r = cli("sb", "get", "sbx_1", backend=b)
    assert r.out == ("  Sandbox:          sbx_1\n"
                     "  Name:             demo\n"
                     "  Status:           idle\n"
                     "  Created:          2026-04-01T12:00:00.000Z\n"
                     "  Runtime:          bun:1\n"
                     "  Region:           local\n"
                     "  Executions:       0\n"
                     "  Stream (stdout):  http://s/o\n"
                     "  Stream (stderr):  http://s/e\n"
                     "  Resources:        memory=512Mi, cpu=500m, disk=1Gi\n")
    j = cli("sb", "get", "sbx_1", "--json", backend=b).json()
    assert j["resources"] == {"memory": "512Mi", "cpu": "500m", "disk": "1Gi"} and "org" not in j
    assert list(j)[:4] == ["sandboxId", "name", "status", "createdAt"]


def test_delete_prompt_without_a_terminal_cancels():
    b = _backend()
    r = cli("sb", "delete", "sbx_1", backend=b)
    assert (r.rc, r.out, r.err) == (0, 'Delete sandbox "sbx_1"? [y/N] \n[INFO] Cancelled\n', "")
    assert b.calls == []
    r = cli("sb", "delete", "sbx_1", "--json", backend=b)
    assert r.out.startswith('Delete sandbox "sbx_1"? [y/N] \n{')
    assert json.loads(r.out.split("\n", 1)[1]) == {"success": False, "sandboxId": "sbx_1", "durationMs": 0,
                                                   "message": "Cancelled"}
    assert b.calls == []


def test_delete_prompt_on_a_terminal_reads_the_answer():
    b = _backend()
    r = cli("sb", "delete", "sbx_1", backend=b, stdin=b"n\n", tty=True)
    # the terminal echoes the answer and its newline; the captured stdout has only the prompt
    assert r.out.endswith("[y/N] [INFO] Cancelled\n") and r.err == "" and b.calls == []
    r = cli("sb", "delete", "sbx_1", backend=b, stdin=b"y\n", tty=True)
    assert r.rc == 0 and b.methods() == ["sandbox_destroy"]
    assert r.err.startswith("✓ deleted sandbox sbx_1 in ") and r.err.endswith("ms\n")
    r = cli("sb", "rm", "sbx_1", "--confirm", "--json", backend=_backend())
    assert set(r.json()) == {"success", "sandboxId", "durationMs"} and r.json()["success"] is True


def test_pause_resume():
    b = _backend(pausedTimeout="24h")
    r = cli("sb", "pause", "sbx_1", backend=b)
    first, second = r.err.splitlines()
    assert first.startswith("✓ paused sandbox sbx_1 in ")
    assert second.startswith("ℹ this sandbox will auto-terminate at ") and second.endswith(" if not resumed")
    assert "/2030, " in second or "/2029, " in second  # local time, JavaScript toLocaleString style
    r = cli("sb", "pause", "sbx_1", "--json", backend=_backend(pausedTimeout="24h"))
    assert set(r.json()) == {"success", "sandboxId", "durationMs", "terminatesAt"}
    r = cli("sb", "resume", "sbx_1", "--json", backend=b)
    assert set(r.json()) == {"success", "sandboxId", "durationMs"}


def test_env_output():
    r = cli("sb", "env", "sbx_1", "FOO=bar", "BAZ=q=x", "--delete", "OLD", backend=_backend())
    assert r.err == "✓ Set 2 environment variable(s)\n✓ Deleted 1 environment variable(s)\n"
    assert r.out == "\nCurrent environment:\n  FOO=bar\n  BAZ=q=x\n"
    assert r.backend.calls[0][1] == ("sbx_1", {"FOO": "bar", "BAZ": "q=x"}, ["OLD"])
    r = cli("sb", "env", "sbx_1", "A=1", "--json", backend=_backend())
    assert r.json() == {"success": True, "env": {"A": "1"}}


def test_stats_output():
    r = cli("sb", "stats")
    assert r.out == ("  Active:          3 (1 running, 2 idle, 0 creating)\n"
                     "  Executions:      17\n"
                     "  CPU Time:        123.5s\n"
                     "  Memory:          941.90 MB\n"
                     "  Network Out:     4.00 KB\n")
    assert r.err.startswith("Sandbox Statistics\n")


def test_events_output():
    r = cli("sb", "events", "sbx_1", backend=_backend())
    assert "│ evt_0001 │ create            │" in r.out and r.err == "ℹ Total: 2 events\n"
    assert list(cli("sb", "events", "sbx_1", "--json", backend=_backend()).json()) == ["events"]


# files ----------------------------------------------------------------------------------------------


def test_fs_ls_short_and_long(monkeypatch):
    r = cli("sb", "fs", "ls", "sbx_1", backend=_backend())
    assert r.out == "d          -  src\n-       19 B  hello.txt\n-     1.5 KB  big.bin\n\nTotal: 3 items\n"
    r = cli("sb", "fs", "ls", "sbx_1", "-l", backend=_backend())
    assert r.out.splitlines()[1] == "-0644        19 B  Jan  1  2025  hello.txt"
    assert cli("sb", "fs", "ls", "sbx_1", "--json", backend=_backend()).json()["total"] == 3


def test_fs_cp_upload_and_download(tmp_path):
    b = _backend()
    (tmp_path / "index.js").write_bytes(b"console.log('hi')\n")
    r = cli("sb", "fs", "cp", str(tmp_path / "index.js"), "sbx_1:/home/agentuity/app/", backend=b)
    assert r.rc == 0, r
    assert r.err == f"✓ Copied {tmp_path}/index.js → sbx_1:/home/agentuity/app/index.js (18 bytes)\n"
    assert b.files[("sbx_1", "/home/agentuity/app/index.js")] == b"console.log('hi')\n"
    r = cli("sb", "fs", "cp", str(tmp_path / "index.js"), "sbx_1:/home/agentuity/new/path/f.js", "--json", backend=b)
    assert r.json() == {"source": str(tmp_path / "index.js"), "destination": "sbx_1:/home/agentuity/new/path/f.js",
                        "bytesTransferred": 18, "filesTransferred": 1,
                        "directoriesCreated": ["/home/agentuity/new", "/home/agentuity/new/path"]}
    out_dir = tmp_path / "cpout"
    r = cli("sb", "fs", "cp", "sbx_1:/home/agentuity/app/index.js", f"{out_dir}/", backend=b)
    assert r.rc == 0, r
    assert (out_dir / "index.js").read_bytes() == b"console.log('hi')\n"
    assert r.err == f"✓ Copied sbx_1:/home/agentuity/app/index.js → {out_dir}/index.js (18 bytes)\n"


def test_fs_cp_directories_round_trip(tmp_path):
    b = _backend()
    src = tmp_path / "updir"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"aaa")
    (src / "sub" / "b.txt").write_bytes(b"bbbbb")
    r = cli("sb", "fs", "cp", str(src), "sbx_1:/home/agentuity/updir", backend=b)
    assert r.rc == 2 and "is a directory. Use -r/--recursive to copy directories." in r.err
    r = cli("sb", "fs", "cp", "-r", str(src), "sbx_1:/home/agentuity/updir", backend=b)
    assert r.err == f"✓ Copied {src} → sbx_1:/home/agentuity/updir (2 files, 8 bytes)\n"
    assert b.files[("sbx_1", "/home/agentuity/updir/sub/b.txt")] == b"bbbbb"
    r = cli("sb", "fs", "cp", "-r", "sbx_1:/home/agentuity/updir", str(tmp_path / "back"), backend=b)
    assert r.rc == 0, r
    assert (tmp_path / "back" / "sub" / "b.txt").read_bytes() == b"bbbbb"
    assert r.err == f"✓ Copied sbx_1:/home/agentuity/updir → {tmp_path}/back (2 files, 8 bytes)\n"
    # --json names the local side by its absolute path, whatever the command line said
    r = cli("sb", "fs", "cp", "-r", os.path.relpath(src), "sbx_1:/home/agentuity/up2", "--json", backend=b)
    assert r.json()["source"] == str(src)
    r = cli("sb", "fs", "cp", "sbx_1:/home/agentuity/updir/a.txt", os.path.relpath(tmp_path / "a2.txt"), "--json",
            backend=b)
    assert r.json()["destination"] == str(tmp_path / "a2.txt")


def test_fs_cp_strict_checks_the_parent_in_the_sandbox(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    b = _backend()
    r = cli("sb", "fs", "cp", "--strict", str(tmp_path / "f"), "sbx_1:/opt/x/f", backend=b)
    assert r.rc == 4 and r.err.startswith("✗ Target directory does not exist: /opt/x.")
    assert b.methods() == ["sandbox_execute"]
    assert b.calls[0][1] == ("sbx_1", ["test", "-d", "/opt/x"])


def test_fs_rm_not_found_is_a_warning():
    r = cli("sb", "fs", "rm", "sbx_1", "/nope", backend=_backend())
    assert (r.rc, r.err) == (0, "⚠ File not found: /nope (already removed)\n")
    r = cli("sb", "fs", "rmdir", "sbx_1", "/nope", "--json", backend=_backend())
    assert r.json() == {"success": True, "path": "/nope", "found": False}


def test_fs_download_and_upload(tmp_path):
    b = _backend()
    b.files[("sbx_1", "./a.txt")] = b"hello"
    target = tmp_path / "dl" / "out.zip"
    r = cli("sb", "fs", "download", "sbx_1", str(target), backend=b)
    assert r.rc == 0, r
    assert b.calls[0][1] == ("sbx_1", ".", "zip")
    assert r.err == f"✓ Downloaded {target.stat().st_size} bytes to {target}\n"
    r = cli("sb", "fs", "upload", "sbx_1", str(target), "--path", "/x", "--format", "tar.gz", "--json", backend=b)
    assert r.json() == {"success": True, "bytes": target.stat().st_size}


# snapshots, checkpoints, jobs, runtimes ------------------------------------------------------------


def test_snapshot_create_get_tag_delete():
    b = _backend()
    r = cli("sb", "snapshot", "create", "sbx_1", "--name", "my_snap", "--tag", "v1", backend=b)
    assert r.err == "✓ Created snapshot snp_0001\n"
    assert r.out == ("\n  Name:         my_snap\n  Description:  -\n  Tag:          v1\n  Size:         2.00 KB\n"
                     "  Files:        3\n  Visibility:   private\n  Created:      2026-04-01T12:00:00.000Z\n")
    b.snapshots["snp_0001"].update(files=[{"path": "src/a.ts", "size": 10}, {"path": "index.js", "size": 5}],
                                   userMetadata={"version": "1"})
    b.sandboxes["sbx_1"]["snapshotId"] = "snp_0001"
    r = cli("sb", "snapshot", "get", "snp_0001", backend=b)
    assert "ℹ Metadata:\n  • version=1\nℹ Files:\nℹ Attached Sandboxes (1):\n" == r.err
    assert "  ├── src/\n  │   └── a.ts (10 B)\n  └── index.js (5 B)\n" in r.out and "  └── sbx_1 (idle)\n" in r.out
    j = cli("sb", "snapshot", "get", "snp_0001", "--json", backend=b).json()
    assert j["sandboxes"] == [{"sandboxId": "sbx_1", "status": "idle", "createdAt": "2026-04-01T12:00:00.000Z"}]
    assert cli("sb", "snap", "tag", "snp_0001", "v2", backend=b).err == "✓ tagged snapshot snp_0001 as v2\n"
    r = cli("sb", "snap", "tag", "snp_0001", "--clear", "--json", backend=b)
    assert r.json() == {"snapshotId": "snp_0001"}  # a cleared tag is undefined: no key
    r = cli("sb", "snap", "rm", "snp_0001", "--json", backend=b)
    assert json.loads(r.out.split("\n", 1)[1]) == {"success": False, "snapshotId": "snp_0001", "message": "Cancelled"}
    r = cli("sb", "snap", "rm", "snp_0001", "--confirm", backend=b)
    assert r.err == "✓ deleted snapshot snp_0001\n" and "snp_0001" not in b.snapshots


def test_snapshot_list_table():
    b = _backend()
    cli("sb", "snapshot", "create", "sbx_1", backend=b)
    r = cli("sb", "snapshot", "list", backend=b)
    assert "│ ID       │ Name      │ Tag    │ Size    │ Files │ Created At               │" in r.out
    assert "│ 2.00 KB │     3 │" in r.out and r.err == "ℹ Total: 1 snapshot\n"


def test_snapshot_generate():
    r = cli("sb", "snapshot", "generate")
    assert r.out.startswith("# yaml-language-server: $schema=https://agentuity.dev/schema/cli/v1/agentuity-snapshot.json\n")
    assert "\nversion: 1\n" in r.out and "\nruntime: bun:1\n" in r.out and r.out.endswith("\n\n")
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(r.out) == {"version": 1, "runtime": "bun:1", "description": "My sandbox snapshot"}
    r = cli("sb", "snapshot", "gen", "--format", "json")
    assert json.loads(r.out)["$schema"].endswith("agentuity-snapshot.json")
    assert json.loads(r.out)["packages"] == ["opencode-ai"]
    r = cli("sb", "snapshot", "init", "--json")
    assert r.json()["format"] == "yaml" and r.json()["content"].startswith("# yaml-language-server")


def test_checkpoint_outputs():
    b = _backend()
    r = cli("sb", "ckpt", "create", "sbx_1", "mycp", backend=b)
    assert r.err.startswith("✓ created disk checkpoint ckpt_0001 in ")
    assert r.out == ("  ID:          ckpt_0001\n  Name:        mycp\n  Created At:  2026-04-01T12:00:00.000Z\n"
                     "  Parent:      -\n")
    j = cli("sb", "ckpt", "create", "sbx_1", "cp2", "--json", backend=b).json()
    assert list(j) == ["success", "sandboxId", "checkpointId", "name", "createdAt", "parent", "durationMs"]
    assert j["parent"] == "mycp"
    assert cli("sb", "ckpt", "ls", "sbx_1", backend=b).err == "ℹ Total: 2 checkpoints\n"
    r = cli("sb", "ckpt", "restore", "sbx_1", "mycp", backend=b)
    assert r.err.startswith("✓ restored sandbox sbx_1 to checkpoint mycp in ")
    r = cli("sb", "ckpt", "delete", "sbx_1", "mycp", backend=b)
    assert r.out == 'Delete disk checkpoint "mycp" from sandbox "sbx_1"? [y/N] \n[INFO] Cancelled\n'
    r = cli("sb", "ckpt", "delete", "sbx_1", "mycp", "--confirm", backend=b)
    assert r.err.startswith("✓ deleted disk checkpoint mycp from sandbox sbx_1 in ")


def test_execution_get_and_list():
    b = _backend()
    b.executions["exec_1"] = {"executionId": "exec_1", "sandboxId": "sbx_1", "status": "completed", "exitCode": 0,
                              "durationMs": 12, "command": ["echo", "hi"], "startedAt": "t1"}
    r = cli("sb", "execution", "get", "exec_1", backend=b)
    assert r.out == ("  Execution:  exec_1\n  Sandbox:    sbx_1\n  Status:     completed\n"
                     "  Exit Code:  0\n  Duration:   12ms\n  Started:    t1\n  Command:    echo hi\n")
    b.executions["exec_1"]["type"] = "exec"
    assert "type" not in cli("sb", "execution", "get", "exec_1", "--json", backend=b).json()
    r = cli("sb", "execution", "ls", "sbx_1", backend=b)
    assert "│ exec_1 │ completed │         0 │     12ms │ t1      │" in r.out
    assert r.err == "ℹ Total: 1 execution\n"


def test_job_outputs():
    b = _backend()
    r = cli("sb", "job", "create", "sbx_1", "--", "sleep", "100", backend=b)
    assert r.err == "✓ Created job job_0001\nℹ Status: pending\n" and r.out == ""  # no hint line
    assert b.calls[0][1] == ("sbx_1", ["sleep", "100"])
    r = cli("sb", "job", "list", "sbx_1", backend=b)
    assert r.err == "ℹ Jobs for sandbox sbx_1:\n" and r.out == "\n  job_0001 pending sleep 100\n"
    r = cli("sb", "job", "get", "sbx_1", "job_0001", backend=b)
    assert r.out == "\n  Status:     pending\n  Sandbox:    sbx_1\n  Command:    sleep 100\n"
    r = cli("sb", "job", "stop", "sbx_1", "job_0001", backend=b)
    assert r.err == "✓ Job job_0001 terminated\n"


def test_job_logs_filters_and_json():
    b = _backend()
    b.jobs["job_1"] = {"jobId": "job_1", "sandboxId": "sbx_1", "command": ["x"], "status": "completed",
                       "stdout": b"one\nTwo error\nthree\nfour error", "stderr": b"e1\n"}
    r = cli("sb", "job", "logs", "sbx_1", "job_1", "--no-timestamps", backend=b)
    assert r.err == "ℹ Streaming stdout for job job_1 (status: completed)\n"
    assert r.out == "one\nTwo error\nthree\nfour error\n"
    r = cli("sb", "job", "logs", "sbx_1", "job_1", "--no-timestamps", "--grep", "ERROR", "--tail", "1", backend=b)
    assert r.out == "four error\n"
    r = cli("sb", "job", "logs", "sbx_1", "job_1", "--stderr", backend=b)
    import re
    assert re.fullmatch(r"\d\d:\d\d:\d\d e1\n", r.out)
    r = cli("--json", "sb", "job", "logs", "sbx_1", "job_1", "--stderr", backend=b)
    first, rest = r.out.split("\n", 1)
    assert json.loads(first)["message"] == "e1" and json.loads(first)["stream"] == "stderr"
    assert first.startswith('{"timestamp":"') and first.endswith(',"stream":"stderr","message":"e1"}')
    assert json.loads(rest) == {"jobId": "job_1", "sandboxId": "sbx_1", "status": "completed", "bytesRead": 3}


def test_runtime_list_and_build():
    r = cli("sb", "rt", "ls")
    assert "│ srt_py314 │ python:3.14 │ -                   │" in r.out and r.err == "ℹ Total: 2 runtimes\n"
    r = cli("sb", "runtime", "build", "python:3.14")
    assert r.err.startswith("✓ built runtime python:3.14 in ")
    assert r.backend.calls == [("runtime_build", ("python:3.14",), {})]


# snapshot build -------------------------------------------------------------------------------------


def _build_dir(tmp_path, text=None, name="agentuity-snapshot.json"):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.ts").write_text("export {}\n")
    (tmp_path / "src" / "app.test.js").write_text("test\n")
    (tmp_path / "index.js").write_text("console.log(1)\n")
    (tmp_path / ".hidden.js").write_text("h\n")
    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / "i.js").write_text("m\n")
    (tmp_path / name).write_text(text or json.dumps({
        "version": 1, "runtime": "bun:1", "name": "mysnap", "dependencies": ["curl"],
        "files": ["*.js", "src/**", "!**/*.test.js", "!node_modules"],
        "env": {"NODE_ENV": "production", "TOKEN": "${TOKEN}"}, "metadata": {"version": "${VERSION}"}}))


def test_snapshot_build_resolves_globs_and_substitutes(tmp_path):
    _build_dir(tmp_path)
    b = _backend()
    r = cli("sb", "snapshot", "build", str(tmp_path), "--env", "TOKEN=abc", "--metadata", "VERSION=1.0.0",
            "--tag", "v3", backend=b)
    assert r.rc == 0, r
    build = b.calls[0][1][0]
    assert [f.path for f in build.files] == [".hidden.js", "index.js", "src/app.ts"]
    assert build.env == {"NODE_ENV": "production", "TOKEN": "abc"} and build.metadata == {"version": "1.0.0"}
    assert build.tag == "v3" and build.runtime == "bun:1" and len(build.content_hash) == 64
    assert r.err.startswith("✓ Created snapshot snp_0001\n")
    assert r.err == "✓ Created snapshot snp_0001\nDependencies\nEnvironment\nMetadata\nFiles\n"
    assert "\n\n  • curl\n\n  • NODE_ENV=produc...uction\n  • TOKEN=***\n\n  • version=1.0.0\n\n" in r.out
    assert "Runtime:      bun:1" in r.out
    r = cli("sb", "snapshot", "build", str(tmp_path), "--env", "TOKEN=abc", "--metadata", "VERSION=1.0.0",
            "--json", backend=b)
    assert r.json() == {"snapshotId": "snp_0001", "name": "mysnap", "tag": "v3", "runtime": "bun:1",
                        "sizeBytes": r.json()["sizeBytes"], "fileCount": 3, "createdAt": r.json()["createdAt"],
                        "unchanged": True, "userMetadata": {"version": "1.0.0"}}


def test_snapshot_build_errors_create_nothing(tmp_path):
    _build_dir(tmp_path)
    b = _backend()
    r = cli("sb", "snapshot", "build", str(tmp_path), backend=b)
    assert r.rc == 2 and r.err == ('✗ Variable "${TOKEN}" in "TOKEN" is not defined. '
                                   "Use --env TOKEN=value to provide it.\n")
    r = cli("sb", "snapshot", "build", str(tmp_path / "nope"), backend=b)
    assert r.rc == 7 and r.err == f"✗ Directory not found: {tmp_path}/nope\n"
    r = cli("sb", "snapshot", "build", str(tmp_path), "--env", "TOKEN=1", "--metadata", "VERSION=1", "--public",
            backend=b)
    assert r.rc == 1 and "--confirm" in r.err
    assert b.calls == []


def test_snapshot_build_dry_run_and_yaml(tmp_path):
    pytest.importorskip("yaml")
    _build_dir(tmp_path, "version: 1\nruntime: node:lts\nfiles:\n  - src/*.{ts,js}\n",
               name="agentuity-snapshot.yaml")
    r = cli("sb", "snapshot", "build", str(tmp_path), "--dry-run", backend=_backend())
    assert r.rc == 0 and r.backend.calls == []
    assert r.err.startswith("ℹ Dry Run - No upload will be performed\n")
    assert r.err == "ℹ Dry Run - No upload will be performed\nFiles\n"
    assert "  Access:       private\n" in r.out
    assert "\n\n\n  └── src\n      ├── app.test.js (5 B)\n      └── app.ts (10 B)\n" in r.out


def test_glob_semantics(tmp_path):
    from localsb.cli.snapshot_build import resolve_globs
    for rel in ("a.js", "src/a.js", "src/x/b.c", "x/y/a.test.js", "config/a.yaml", "config/a.toml",
                "file1.c", "node_modules/m/i.js"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    got = resolve_globs(str(tmp_path), ["*.js", "src/**", "config/*.{json,yaml}", "file?.[ch]", "**/*.test.js",
                                        "!node_modules", "!src/x/*.c"])
    assert got == ["a.js", "config/a.yaml", "file1.c", "src/a.js", "x/y/a.test.js"]


def test_snapshot_build_bodies_and_archive(tmp_path):
    import hashlib
    import tarfile
    from localsb.cli.snapshot_build import load_build
    _build_dir(tmp_path)
    b = load_build(str(tmp_path), env_pairs=["TOKEN=abc"], metadata_pairs=["VERSION=1.0.0"], tag="v3")
    assert b["init"] == {"runtime": "bun:1", "name": "mysnap", "tag": "v3", "contentHash": b.content_hash,
                         "public": False}
    fin = b["finalize"]
    assert fin["fileCount"] == 3 and fin["sizeBytes"] == sum(f["size"] for f in fin["files"])
    assert fin["dependencies"] == ["curl"] and fin["env"]["TOKEN"] == "abc"
    idx = next(f for f in fin["files"] if f["path"] == "index.js")
    assert idx == {"path": "index.js", "size": 15, "sha256": hashlib.sha256(b"console.log(1)\n").hexdigest(),
                   "contentType": "text/javascript;charset=utf-8", "mode": idx["mode"]}
    with tarfile.open(fileobj=io.BytesIO(b.get("archive")), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [".hidden.js", "index.js", "src/app.ts"]
    # The hash covers runtime, dependencies, files and env, not metadata.
    b2 = load_build(str(tmp_path), env_pairs=["TOKEN=abc"], metadata_pairs=["VERSION=2"])
    b3 = load_build(str(tmp_path), env_pairs=["TOKEN=xyz"], metadata_pairs=["VERSION=2"])
    assert b2.content_hash == b.content_hash != b3.content_hash
