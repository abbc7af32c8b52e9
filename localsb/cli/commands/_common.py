"""Helpers shared by handlers: option sets, the create specification, prompts, time formats.

Imports of localsb.api happen inside the functions: they run only when a handler runs.
"""
from __future__ import annotations

from ..tree import opt

PREFIX = "localsb cloud sandbox"


def add_spec_options(p, *, run: bool) -> None:
    """The options run and create share (reference/hosted-api.md §4.3), plus each one's own."""
    opt(p, "--memory", metavar="SIZE", help="Memory limit (e.g., 512Mi, 1Gi; 16Mi to 64Gi)")
    opt(p, "--cpu", metavar="MILLICORES", help="CPU limit (e.g., 500m, 1000m; 10m to 64000m)")
    opt(p, "--disk", metavar="SIZE", help="Disk limit (e.g., 1Gi, 10Gi; 16Mi to 1Ti)")
    opt(p, "--network", action="store_true", help="Enable outbound network access")
    if run:
        opt(p, "--timeout", metavar="DURATION", help="Execution timeout (e.g., 30s, 5m; 1s to 720h)")
    else:
        opt(p, "--idle-timeout", metavar="DURATION", help="Auto-destroy after idle (e.g., 1h; 1s to 720h)")
        opt(p, "--paused-timeout", metavar="DURATION",
            help="Auto-terminate after being paused this long (e.g., 24h; 0s = never; at most 720h)")
    opt(p, "--snapshot", metavar="ID_OR_TAG", help="Create from snapshot (ID, name, name:tag or tag)")
    opt(p, "--runtime", metavar="RUNTIME", help="Runtime name (e.g., bun:1, python:3.14)")
    opt(p, "--runtime-id", metavar="ID", help="Runtime ID (e.g., srt_xxx)")
    opt(p, "--name", metavar="NAME", help="Sandbox name")
    opt(p, "--description", metavar="TEXT", help="Sandbox description")
    if not run:
        opt(p, "--port", metavar="PORT", help="Port to expose (1024-65535); enables networking")
    opt(p, "--dependency", metavar="PACKAGE", action="append", help="Apt packages to install (repeatable)")
    opt(p, "--env", metavar="KEY=VALUE", action="append", help="Environment variables (repeatable)")
    opt(p, "--file", metavar="SANDBOX_PATH:LOCAL_PATH", action="append",
        help="Files to create (repeatable); a bare NAME means NAME:./NAME")
    if not run:
        opt(p, "--metadata", metavar="JSON", help="User-defined metadata (a JSON object)")
    opt(p, "--scope", metavar="SCOPE", action="append",
        help="Permission scope for service access (repeatable)")
    opt(p, "--project-id", metavar="ID",
        help="Associate with project (default: $AGENTUITY_CLOUD_PROJECT_ID or ./agentuity.json)")
    if run:
        opt(p, "--timestamps", action="store_true", help="Include timestamps in stream output")
    else:
        opt(p, "--wait", action="store_true", help="Wait until the sandbox is ready (idle or running)")
        opt(p, "--wait-ms", metavar="MS", type=_wait_ms, default=60000,
            help="How long --wait waits, in milliseconds (at most 60000)")


def _wait_ms(text):
    from ..tree import int_range
    return int_range(1, 60000, "wait-ms")(text)


def read_file_specs(values) -> list:
    """--file values -> FileSpec list: bad specs are validation errors (2), missing files (7)."""
    import os

    from localsb.api.specs import read_local_file_spec
    from localsb.api.units import parse_file_spec

    from ..errors import LocalFileError

    pairs = [parse_file_spec(v) for v in values or ()]
    files = []
    for sandbox_path, local_path in pairs:
        abs_path = os.path.abspath(local_path)
        if not os.path.isfile(abs_path):
            raise LocalFileError(f"File not found: {local_path} (resolved to {abs_path})")
        files.append(read_local_file_spec(sandbox_path, local_path))
    return files


def parse_metadata(text):
    if text is None:
        return None
    import json

    from localsb.api.errors import ValidationError
    try:
        value = json.loads(text)
    except ValueError:
        raise ValidationError("Metadata must be a valid JSON object") from None
    if not isinstance(value, dict):
        raise ValidationError("Metadata must be a valid JSON object")
    return value


def build_create_spec(ctx, mode: str, command=None):
    """Fill a CreateSpec from run/create options and validate it before anything is created."""
    from localsb.api.specs import CreateSpec
    from localsb.api.units import parse_env_list, parse_file_spec

    a = ctx.args
    for value in a.file or ():
        parse_file_spec(value)  # format errors before anything else, as the official CLI
    spec = CreateSpec(
        mode=mode, command=list(command or []), name=a.name, description=a.description,
        runtime=a.runtime, runtime_id=a.runtime_id, snapshot=a.snapshot, memory=a.memory,
        cpu=a.cpu, disk=a.disk, network=a.network, port=getattr(a, "port", None),
        idle_timeout=getattr(a, "idle_timeout", None), execution_timeout=getattr(a, "timeout", None),
        paused_timeout=getattr(a, "paused_timeout", None), env=parse_env_list(a.env),
        dependencies=list(a.dependency or []), metadata=parse_metadata(getattr(a, "metadata", None)),
        scopes=list(a.scope or []), project_id=ctx.project_id(a.project_id), org_id=ctx.org_id,
        timestamps=bool(getattr(a, "timestamps", False)),
    )
    spec.validate()
    spec.files = read_file_specs(a.file)
    return spec.validate()


def show_dry_run(ctx, spec) -> int:
    """--dry-run for run/create: the validated request, nothing created."""
    body = spec.to_wire()
    for f in body.get("files", []) + body.get("command", {}).get("files", []):
        f["content"] = f"<{len(f['content'])} base64 characters>"
    if ctx.out.json_mode:
        ctx.out.json({"dryRun": True, "request": body})
    else:
        ctx.out.info("Dry Run - no sandbox will be created")
        from ..output import to_json
        ctx.out.line(to_json(body))
    return 0


def confirm(ctx, prompt: str, cancelled: dict) -> bool:
    """--confirm or the [y/N] prompt; on "no" print Cancelled (or its JSON) and return False."""
    if ctx.args.confirm:
        return True
    if ctx.out.confirm(prompt):
        return True
    if ctx.out.json_mode:
        ctx.out.json(cancelled)
    elif not ctx.out.quiet:
        # The official CLI logs this through its logger (stdout, "[INFO]" prefix), not tui.info.
        ctx.out.line("[INFO] Cancelled")
    return False


def local_time(iso: str) -> str:
    """An ISO time as JavaScript's toLocaleString('en-US') shows it: 1/1/2030, 12:00:00 AM."""
    import time

    from localsb.api.models import parse_iso
    try:
        t = time.localtime(parse_iso(iso))
    except Exception:  # noqa: BLE001 - a server time we cannot parse is shown as given
        return iso
    hour = t.tm_hour % 12 or 12
    return (f"{t.tm_mon}/{t.tm_mday}/{t.tm_year}, {hour}:{t.tm_min:02d}:{t.tm_sec:02d} "
            f"{'AM' if t.tm_hour < 12 else 'PM'}")


def omit_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def dash(value) -> str:
    return "-" if value is None or value == "" else str(value)


def exit_status(code) -> int:
    """A command's exit code as a process exit status (signals as 128+n, like a shell)."""
    if code is None:
        return 1
    code = int(code)
    if code < 0:
        return min(128 - code, 255)
    return code if code <= 255 else 255
