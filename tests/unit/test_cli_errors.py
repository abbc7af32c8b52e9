"""Errors: one line on stderr (or the JSON error object), the official CLI's exit codes, and bad
input rejected before the backend is called at all."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cli_fake_backend import FakeBackend, cli  # noqa: E402

from localsb.api import errors as E  # noqa: E402
from localsb.cli.errors import LocalFileError  # noqa: E402


def _backend():
    b = FakeBackend()
    b.add_sandbox(sandboxId="sbx_1")
    return b


@pytest.mark.parametrize("exc,code", [
    (E.ValidationError("bad"), 2),
    (E.Unauthorized("no key"), 3),
    (E.NotFound("gone"), 4),
    (E.SandboxNotFound("sbx_1"), 4),
    (E.SnapshotNotFound("snp_x"), 4),
    (E.Forbidden("not yours"), 5),
    (E.NetworkError("connection refused"), 6),
    (E.APIError("boom", status=500), 6),
    (LocalFileError("File not found: x"), 7),
    (E.Cancelled("stopped"), 8),
    (E.BuildFailed("apt failed"), 9),
    (E.SandboxBusy("sbx_1"), 1),
    (E.InvalidState("cannot pause"), 1),
    (E.NotSupported("no"), 1),
])
def test_error_classes_map_to_exit_codes(exc, code):
    b = _backend()
    b.raise_next = exc
    r = cli("sb", "get", "sbx_1", backend=b)
    assert r.rc == code
    assert r.err == f"✗ {exc.message}\n"
    assert r.out == ""


def test_json_errors_go_to_stderr_as_an_error_object():
    b = _backend()
    b.raise_next = E.SandboxNotFound("sbx_9")
    r = cli("--json", "sb", "get", "sbx_9", backend=b)
    assert r.rc == 4 and r.out == ""
    import json
    assert json.loads(r.err) == {"error": {"code": "SANDBOX_NOT_FOUND", "message": "Sandbox not found: sbx_9",
                                           "exitCode": 4}}


def test_debug_shows_the_traceback():
    b = _backend()
    b.raise_next = E.SandboxBusy("sbx_1")
    r = cli("sb", "get", "sbx_1", "--debug", backend=b)
    assert r.rc == 1
    assert "Traceback (most recent call last)" in r.err
    assert r.err.rstrip().endswith("✗ " + E.SandboxBusy().message)


def test_unexpected_errors_are_one_line_with_a_hint():
    b = _backend()
    b.raise_next = RuntimeError("kaput")
    r = cli("sb", "get", "sbx_1", backend=b)
    assert r.rc == 1
    assert r.err == "✗ RuntimeError: kaput (an internal error: run with --debug for the traceback)\n"


def test_keyboard_interrupt_is_cancelled():
    b = _backend()
    b.raise_next = KeyboardInterrupt()
    r = cli("sb", "get", "sbx_1", backend=b)
    assert r.rc == 8 and r.err == "✗ Cancelled\n"


def test_unsupported_backend_operation():
    class Bare(FakeBackend):
        def runtime_build(self, name):
            raise NotImplementedError
    r = cli("sb", "rt", "build", "python:3.14", backend=Bare())
    assert r.rc == 1
    assert r.err == "✗ 'localsb cloud sandbox runtime build' is not supported by the fake backend\n"


@pytest.mark.parametrize("argv,message", [
    (["sb", "list", "--bogus"], "unrecognized arguments: --bogus"),
    (["sb", "list", "--limit", "500"], "argument --limit: invalid limit 500: must be between 1 and 100"),
    (["sb", "list", "--status", "sleeping"], "argument --status: invalid choice: 'sleeping'"),
    (["sb", "frobnicate"], "argument <command>: invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line_exit_2(argv, message):
    r = cli(*argv)
    assert r.rc == 2
    assert r.err.startswith(f"✗ {message}") and r.err.count("\n") == 1
    assert r.backend.calls == []


# Validation happens before any backend call: the fake records nothing.
@pytest.mark.parametrize("argv,code,message", [
    (["sb", "run", "--memory", "lots", "--", "true"], 2,
     "Invalid memory 'lots': expected a size like 512Mi, 1Gi, 100M or a number of bytes"),
    (["sb", "run", "--cpu", "fast", "--", "true"], 2,
     "Invalid cpu 'fast': expected millicores like 500m, 1000m, or cores like 1, 0.5"),
    (["sb", "run", "--disk", "-1", "--", "true"], 2, None),
    (["sb", "run", "--timeout", "5 minutes", "--", "true"], 2,
     "Invalid timeout format '5 minutes': expected duration like '5s', '1m', '1h', '300ms'"),
    (["sb", "run", "--env", "NOEQUALS", "--", "true"], 2,
     "Invalid environment variable format: NOEQUALS. Use KEY=VALUE format."),
    (["sb", "run", "--file", ":local.txt", "--", "true"], 2,
     'Invalid --file format: ":local.txt". Sandbox path cannot be empty'),
    (["sb", "run", "--file", "remote.txt:", "--", "true"], 2,
     'Invalid --file format: "remote.txt:". Local path cannot be empty'),
    (["sb", "run", "--file", "a.txt:/nonexistent/a.txt", "--", "true"], 7,
     "File not found: /nonexistent/a.txt (resolved to /nonexistent/a.txt)"),
    (["sb", "run", "--snapshot", "snp_1", "--runtime", "bun:1", "--", "true"], 2,
     "cannot specify both snapshot and runtime; snapshot includes its own runtime"),
    (["sb", "run", "--dependency", "Bad;pkg", "--", "true"], 2, "Invalid apt package name: 'Bad;pkg'"),
    (["sb", "run"], 2, "No command given: use localsb cloud sandbox run [options] -- <command> [args...]"),
    (["sb", "run", "--"], 2, "No command given: use localsb cloud sandbox run [options] -- <command> [args...]"),
    (["sb", "run", "echo", "hi"], 2, None),
    (["sb", "create", "--port", "80"], 2, "Invalid port 80: must be between 1024 and 65535"),
    (["sb", "create", "--port", "http"], 2, "Invalid port 'http': must be an integer between 1024 and 65535"),
    (["sb", "create", "--metadata", "[1, 2]"], 2, "Metadata must be a valid JSON object"),
    (["sb", "create", "--metadata", "{oops"], 2, "Metadata must be a valid JSON object"),
    (["sb", "create", "--idle-timeout", "forever"], 2, None),
    (["sb", "exec", "sbx_1", "--timeout", "10x", "--", "true"], 2,
     "Invalid timeout format '10x': expected duration like '5s', '1m', '1h', '300ms'"),
    (["sb", "exec", "sbx_1"], 2, None),
    (["sb", "exec", "sbx_1", "echo"], 2, None),
    (["sb", "job", "create", "sbx_1"], 2, None),
    (["sb", "list", "--org-id", "org_1", "--project-id", "proj_1"], 2,
     "--org-id and --project-id are mutually exclusive. Use one or the other."),
    (["sb", "env", "sbx_1"], 2, "No environment variables specified. Use KEY=VALUE or --delete KEY"),
    (["sb", "env", "sbx_1", "1BAD=x"], 2, "Invalid environment variable format: 1BAD=x. Use KEY=VALUE format."),
    (["sb", "stats", "--start", "yesterday"], 2, None),
    (["sb", "snapshot", "create", "sbx_1", "--tag", ".hidden"], 2,
     "Invalid snapshot tag: must only contain letters, numbers, dashes, underscores, and dots, and cannot "
     "start with a period or dash"),
    (["sb", "snapshot", "create", "sbx_1", "--name", "has space"], 2,
     "Invalid snapshot name: must only contain letters, numbers, underscores, and dashes"),
    (["sb", "snapshot", "tag", "snp_1"], 2, "Either provide a tag name or use --clear to remove the tag"),
    (["sb", "fs", "cp", "a.txt", "b.txt"], 2,
     "At least one path must include a sandbox ID (e.g., sbx_abc123:/path/to/file)"),
    (["sb", "fs", "cp", "sbx_1:/a", "sbx_2:/b"], 2,
     "Cannot copy between two sandboxes. Use a local path as source or destination."),
    (["sb", "fs", "cp", "/nonexistent-local", "sbx_1:/b"], 7, "Local path not found: /nonexistent-local"),
    (["sb", "fs", "upload", "sbx_1", "/nonexistent.tar.gz"], 7, "/nonexistent.tar.gz is not a file"),
    (["sb", "job", "logs", "sbx_1", "job_1", "--grep", "("], 2, None),
    (["sb", "delete", "sbx_1", "--dry-run"], 2, "--dry-run is not supported by 'localsb cloud sandbox delete'"),
    (["--backend", "elsewhere", "sb", "list"], 2, None),
])
def test_bad_input_is_rejected_before_the_backend(argv, code, message):
    b = _backend()
    r = cli(*argv, backend=b)
    assert r.rc == code, r
    assert r.err.startswith("✗ ") and r.err.count("\n") == 1, r.err
    if message:
        assert r.err == f"✗ {message}\n"
    assert b.calls == []
    assert r.out == ""


def test_invalid_backend_from_environment():
    import io
    from localsb.cli.main import main
    err = io.StringIO()
    rc = main(["sb", "list"], env={"LOCALSB_BACKEND": "mars", "AGENTUITY_AGENT_MODE": "none"},
              stdout=io.StringIO(), stderr=err)
    assert rc == 2
    assert err.getvalue() == ("✗ Invalid backend 'mars': expected one of local, cloud "
                              "(from --backend or LOCALSB_BACKEND)\n")


def test_backend_is_closed_after_the_command():
    from localsb.cli.main import Context
    closed = []

    class B(FakeBackend):
        def close(self):
            closed.append(True)
    ctx = Context(args=None, env={}, out=None)
    ctx._backend = B()
    ctx.close()
    assert closed == [True]
