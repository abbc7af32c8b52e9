"""`localsb cloud sandbox` (sb): run, create, exec, list, get, delete, pause, resume, env, events,
stats; the sub-groups register themselves from their own modules."""
from __future__ import annotations

from ..tree import arg, command, group, int_range, opt
from ._common import PREFIX, add_spec_options, build_create_spec, confirm, dash, exit_status, omit_none

LIST_STATUSES = ("creating", "idle", "running", "paused", "stopping", "suspended", "terminated", "failed")


def register(sub):
    sb, _ = group(sub, "sandbox", aliases=["sb"], help="Manage sandboxes",
                  examples=[f"{PREFIX} run -- echo 'Hello, World!'",
                            f"{PREFIX} create --memory 1Gi --cpu 1000m --network",
                            f"{PREFIX} exec sbx_abc123 -- npm run build",
                            f"{PREFIX} list --status idle",
                            f"{PREFIX} get sbx_abc123",
                            f"{PREFIX} delete sbx_abc123 --confirm",
                            "localsb cloud sb list"],
                  populate=_commands)
    return sb


def _commands(children):
    from . import checkpoint, execution, fs, job, runtime, snapshot

    p = command(children, "run", help="Run a command in a new sandbox that is destroyed afterwards",
                handler=run, takes_command=True, dry_run=True,
                usage="%(prog)s [options] -- <command> [args...]",
                examples=[(f'{PREFIX} run -- echo "Hello, World!"', "Simple command"),
                          (f"{PREFIX} run --network -- python3 -c \"import urllib.request; "
                           "print(urllib.request.urlopen('https://httpbin.org/ip').read())\"",
                           "Python with network access"),
                          (f"{PREFIX} run --snapshot node-typescript --memory 1Gi -- npm run build",
                           "From a snapshot with resource limits"),
                          (f"{PREFIX} run --timeout 10s -- sh -c 'sleep 5 && echo \"Done\"'", "With timeout")])
    add_spec_options(p, run=True)

    p = command(children, "create", aliases=["new"], help="Create an interactive sandbox",
                handler=create, dry_run=True,
                examples=[(f"{PREFIX} create", "Create with defaults"),
                          (f"{PREFIX} create --memory 1Gi --cpu 1000m --network", "Create with resources and network"),
                          (f"{PREFIX} create --snapshot python-ml", "Create from snapshot"),
                          (f"{PREFIX} create --port 3000 --name my-server", "Create with port exposed"),
                          (f"{PREFIX} create --project-id proj_abc123", "Create associated with a project")])
    add_spec_options(p, run=False)

    p = command(children, "exec", aliases=["execute"], help="Execute a command in an existing sandbox",
                handler=exec_, takes_command=True,
                usage="%(prog)s <sandbox-id> [options] -- <command> [args...]",
                examples=[f"{PREFIX} exec sbx_abc123 -- npm init -y",
                          f"{PREFIX} exec sbx_abc123 -- npm install zod",
                          f"{PREFIX} exec sbx_abc123 -- npm run build"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--timeout", metavar="DURATION", help="Execution timeout (e.g., 5m, 1h; 1s to 720h)")
    opt(p, "--timestamps", action="store_true", help="Include timestamps in stream output")

    p = command(children, "list", aliases=["ls"], help="List sandboxes", handler=list_, dry_run=True,
                examples=[f"{PREFIX} list", f"{PREFIX} list --status idle",
                          f"{PREFIX} list --name my-sandbox", f"{PREFIX} list --project-id proj_abc123",
                          f"{PREFIX} list --sort=created --direction=desc",
                          (f"{PREFIX} list --all", "Show all sandboxes"), f"{PREFIX} list --json"])
    opt(p, "--status", choices=LIST_STATUSES, help="Filter by status")
    opt(p, "--name", metavar="NAME", help="Filter by sandbox name")
    opt(p, "--mode", choices=("oneshot", "interactive"), help="Filter by mode")
    opt(p, "--project-id", metavar="ID", help="Filter by project (default: the current project)")
    opt(p, "--all", action="store_true", help="List all sandboxes (bypass the project filter)")
    opt(p, "--limit", type=int_range(1, 100, "limit"), default=50, help="Max results (at most 100)")
    opt(p, "--offset", type=int_range(0, None, "offset"), default=0, help="Pagination offset")
    opt(p, "--sort", choices=("name", "created", "updated", "status", "mode", "execution_count"),
        default="created", help="Sort field")
    opt(p, "--direction", choices=("asc", "desc"), default="desc", help="Sort direction")

    p = command(children, "get", aliases=["info", "show"], help="Get sandbox details", handler=get,
                dry_run=True, examples=[f"{PREFIX} get sbx_abc123", f"{PREFIX} get sbx_abc123 --json"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--wait-for-status", metavar="STATUS", action="append", choices=LIST_STATUSES + ("deleted",),
        help="Wait until the sandbox has this status (repeatable)")
    opt(p, "--wait-ms", type=int_range(1, 60000, "wait-ms"), default=60000,
        help="How long --wait-for-status waits, in milliseconds (at most 60000)")

    p = command(children, "delete", aliases=["rm", "del", "remove", "destroy", "terminate"],
                help="Destroy a sandbox", handler=delete,
                examples=[f"{PREFIX} delete sbx_abc123",
                          (f"{PREFIX} delete sbx_abc123 --confirm", "Skip prompt"),
                          (f"{PREFIX} rm sbx_abc123", "Using alias")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--confirm", action="store_true", help="Skip the confirmation prompt")

    p = command(children, "pause", aliases=["hibernate", "suspend"], help="Pause a running sandbox",
                handler=pause, examples=[f"{PREFIX} pause sbx_abc123"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")

    p = command(children, "resume", aliases=["wake", "unpause"], help="Resume a paused sandbox",
                handler=resume, examples=[f"{PREFIX} resume sbx_abc123"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")

    fs.register(children)
    snapshot.register(children)
    checkpoint.register(children)
    execution.register(children)

    p = command(children, "events", aliases=["event"], help="List sandbox lifecycle events",
                handler=events, dry_run=True,
                examples=[(f"{PREFIX} events sbx_abc123", "Oldest first (default)"),
                          (f"{PREFIX} events sbx_abc123 --reverse", "Newest first"),
                          (f"{PREFIX} events sbx_abc123 --limit 10", "At most 10 events")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--limit", type=int_range(1, 100, "limit"), default=50, help="Maximum number of results (at most 100)")
    opt(p, "--reverse", action="store_true", help="Show newest events first")

    runtime.register(children)

    p = command(children, "env", help="Manage environment variables of a sandbox", handler=env,
                usage="%(prog)s <sandbox-id> [KEY=VALUE ...] [-d KEY] ...",
                examples=[(f"{PREFIX} env sbx_abc123 MY_VAR=value", "Set a variable"),
                          (f"{PREFIX} env sbx_abc123 VAR1=value1 VAR2=value2", "Set several"),
                          (f"{PREFIX} env sbx_abc123 --delete MY_VAR", "Delete a variable"),
                          (f"{PREFIX} env sbx_abc123 -d VAR1 -d VAR2", "Delete several")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "vars", metavar="KEY=VALUE", nargs="*", help="Variables to set")
    opt(p, "-d", "--delete", metavar="KEY", action="append", help="Delete a variable (repeatable)")

    job.register(children)

    p = command(children, "stats", help="Show sandbox usage statistics of the organization",
                handler=stats, dry_run=True,
                examples=[f"{PREFIX} stats",
                          f"{PREFIX} stats --start 2026-04-01T00:00:00Z --end 2026-04-22T00:00:00Z"])
    opt(p, "--start", metavar="ISO_TIME", help="Start of the period (ISO 8601)")
    opt(p, "--end", metavar="ISO_TIME", help="End of the period (ISO 8601)")


# handlers --------------------------------------------------------------------------------------


def run(ctx):
    import io

    from ._common import show_dry_run

    spec = build_create_spec(ctx, "oneshot", ctx.args.command)
    if ctx.args.dry_run:
        return show_dry_run(ctx, spec)
    out = ctx.out
    stdin = out.binary_stdin()
    if out.json_mode:
        captured = io.BytesIO()
        sink = None if ctx.args.quiet else captured
        result = ctx.backend.sandbox_run(spec, stdin, sink, sink)
        out.json({"sandboxId": result.get("sandboxId"), "exitCode": result.get("exitCode"),
                  "durationMs": result.get("durationMs"),
                  "output": captured.getvalue().decode("utf-8", "replace")})
        return exit_status(result.get("exitCode"))
    if ctx.args.quiet:
        result = ctx.backend.sandbox_run(spec, stdin, None, None)
    else:
        bout, berr = out.binary_stdout(), out.binary_stderr()
        try:
            result = ctx.backend.sandbox_run(spec, stdin, bout, berr)
        finally:
            bout.flush()
            berr.flush()
    code = result.get("exitCode")
    if code is None:
        out.error(f"sandbox {result.get('sandboxId')} ended without an exit code in {result.get('durationMs')}ms")
    elif code != 0:
        out.error(f"failed with exit code {code} in {result.get('durationMs')}ms")
    return exit_status(code)


def create(ctx):
    from ._common import show_dry_run

    a = ctx.args
    spec = build_create_spec(ctx, "interactive")
    if a.dry_run:
        return show_dry_run(ctx, spec)
    result, ms = ctx.timed(ctx.backend.sandbox_create, spec)
    if a.wait:
        info = ctx.backend.sandbox_wait(result["sandboxId"], ("idle", "running", "failed", "terminated", "deleted"),
                                        wait_ms=a.wait_ms, org_id=ctx.org_id)
        result = dict(result, status=info.get("status", result.get("status")))
        if info.get("url") and not result.get("url"):
            result["url"] = info["url"]
    if ctx.out.json_mode:
        ctx.out.json(omit_none({k: result.get(k) for k in
                                ("sandboxId", "status", "url", "stdoutStreamUrl", "stderrStreamUrl",
                                 "auditStreamUrl")}))
        return 0
    ctx.out.success(f"created sandbox {result['sandboxId']} in {ms}ms")
    if result.get("url"):
        ctx.out.info(f"url: {result['url']}")
    return 0


class _Capture:
    """stdout/stderr sinks of --json exec: each stream apart, and both in arrival order."""

    def __init__(self):
        import io
        self.combined = io.BytesIO()
        self.out = _Tee(io.BytesIO(), self.combined)
        self.err = _Tee(io.BytesIO(), self.combined)


class _Tee:
    def __init__(self, own, combined):
        self.own, self.combined = own, combined

    def write(self, data) -> int:
        self.own.write(data)
        self.combined.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def exec_(ctx):
    from localsb.api.limits import check_timeout

    a, out = ctx.args, ctx.out
    if a.timeout is not None:
        check_timeout(a.timeout, "timeout")
    kwargs = dict(timeout=a.timeout, timestamps=a.timestamps, org_id=ctx.org_id)
    if out.json_mode:
        cap = _Capture()
        sinks = (None, None) if a.quiet else (cap.out, cap.err)
        result = ctx.backend.sandbox_execute(a.sandbox_id, a.command, stdout=sinks[0], stderr=sinks[1], **kwargs)
        dec = lambda b: b.getvalue().decode("utf-8", "replace")  # noqa: E731
        out.json(omit_none({
            "executionId": result.get("executionId"), "status": result.get("status"),
            "exitCode": result.get("exitCode"), "durationMs": result.get("durationMs"),
            "stdout": dec(cap.out.own), "stderr": dec(cap.err.own), "output": dec(cap.combined),
            "outputTruncated": result.get("outputTruncated"), "autoResumed": result.get("autoResumed")}))
    elif a.quiet:
        result = ctx.backend.sandbox_execute(a.sandbox_id, a.command, stdout=None, stderr=None, **kwargs)
    else:
        bout, berr = out.binary_stdout(), out.binary_stderr()
        try:
            result = ctx.backend.sandbox_execute(a.sandbox_id, a.command, stdout=bout, stderr=berr, **kwargs)
        finally:
            bout.flush()
            berr.flush()
    if result.get("autoResumed") and not out.json_mode:
        out.warning("Sandbox was automatically resumed from suspended state")
    code, status, ms = result.get("exitCode"), result.get("status"), result.get("durationMs")
    if code is not None:
        if code != 0 and not out.json_mode:
            out.error(f"failed with exit code {code} in {ms}ms")
        return exit_status(code)
    if status in ("failed", "error", "timeout", "killed"):
        if not out.json_mode:
            out.error(f"Execution {result.get('executionId')} {status} in {ms}ms")
        return 1
    if not out.json_mode:
        out.info(f"Execution {result.get('executionId')} - Status: {status}")
    return 0


LIST_JSON_KEYS = ("id", "name", "description", "status", "createdAt", "region", "orgId", "orgName",
                  "projectId")


def list_(ctx):
    from localsb.api.errors import ValidationError

    from ..output import plural

    a, out = ctx.args, ctx.out
    if a.org_id and a.project_id:
        raise ValidationError("--org-id and --project-id are mutually exclusive. Use one or the other.")
    project = None if (a.all or a.org_id) else ctx.project_id(a.project_id)
    data = ctx.backend.sandbox_list(org_id=ctx.org_id, project_id=project, name=a.name, mode=a.mode,
                                    status=a.status, limit=a.limit, offset=a.offset, sort=a.sort,
                                    direction=a.direction)
    boxes = data.get("sandboxes") or []
    if out.json_mode:
        # The official CLI parses each sandbox through a schema of just these keys; the rest
        # (mode, executions, ...) never reaches its output.
        out.json({"sandboxes": [{k: b[k] for k in LIST_JSON_KEYS if k in b} for b in boxes],
                  "total": data.get("total", len(boxes))})
        return 0
    if not boxes:
        out.info("No sandboxes found")
        return 0
    headers = ["ID", "Name", "Status", "Region", "Created At"]
    orgs = {b.get("orgId") for b in boxes}
    rows = [[b.get("id") or b.get("sandboxId"), dash(b.get("name")), dash(b.get("status")),
             dash(b.get("region")), dash(b.get("createdAt"))] for b in boxes]
    if len(orgs) > 1:
        headers.append("Organization")
        for row, b in zip(rows, boxes):
            row.append(dash(b.get("orgName") or b.get("orgId")))
    out.table(headers, rows)
    total = data.get("total", len(boxes))
    out.info(f"Total: {total} {plural(total, 'sandbox', 'sandboxes')}")
    return 0


GET_KEYS = ("sandboxId", "name", "description", "status", "createdAt", "region", "runtime", "snapshot",
            "executions", "stdoutStreamUrl", "stderrStreamUrl", "auditStreamId", "auditStreamUrl",
            "dependencies", "packages", "metadata", "resources", "url")


def get(ctx):
    a, out = ctx.args, ctx.out
    if a.wait_for_status:
        r = ctx.backend.sandbox_wait(a.sandbox_id, tuple(a.wait_for_status), wait_ms=a.wait_ms, org_id=ctx.org_id)
    else:
        r = ctx.backend.sandbox_get(a.sandbox_id, org_id=ctx.org_id, include_deleted=True)
    if out.json_mode:
        out.json(omit_none({k: r.get(k) for k in GET_KEYS}))
        return 0
    rows = [("Sandbox", out.bold(r["sandboxId"]))]
    for label, key in (("Name", "name"), ("Description", "description")):
        if r.get(key):
            rows.append((label, r[key]))
    rows.append(("Status", out.status_color(r.get("status", ""))))
    rows.append(("Created", r.get("createdAt")))
    if (r.get("runtime") or {}).get("name"):
        rows.append(("Runtime", r["runtime"]["name"]))
    if r.get("region"):
        rows.append(("Region", r["region"]))
    snap = r.get("snapshot") or {}
    if snap.get("id"):
        rows.append(("Snapshot", snap["fullName"] if snap.get("public") and snap.get("fullName")
                     else snap.get("tag") or snap["id"]))
    rows.append(("Executions", r.get("executions", 0)))
    so, se = r.get("stdoutStreamUrl"), r.get("stderrStreamUrl")
    if so and so == se:
        rows.append(("Stream", so))
    else:
        if so:
            rows.append(("Stream (stdout)", so))
        if se:
            rows.append(("Stream (stderr)", se))
    if r.get("dependencies"):
        rows.append(("Dependencies", ", ".join(r["dependencies"])))
    if r.get("packages"):
        rows.append(("Packages", ", ".join(r["packages"])))
    res = r.get("resources") or {}
    parts = [f"{k}={res[k]}" for k in ("memory", "cpu", "disk") if res.get(k)]
    if parts:
        rows.append(("Resources", ", ".join(parts)))
    if r.get("url"):
        rows.append(("URL", r["url"]))
    out.vertical(rows, pad="  ")
    if r.get("metadata"):
        # 2.0.21 prints metadata after the table: its header on stderr, the JSON on stdout.
        out.err_line("Metadata")
        out.json(r["metadata"])
    return 0


def delete(ctx):
    sid = ctx.args.sandbox_id
    if not confirm(ctx, f'Delete sandbox "{sid}"?',
                   {"success": False, "sandboxId": sid, "durationMs": 0, "message": "Cancelled"}):
        return 0
    _, ms = ctx.timed(ctx.backend.sandbox_destroy, sid, org_id=ctx.org_id)
    if ctx.out.json_mode:
        ctx.out.json({"success": True, "sandboxId": sid, "durationMs": ms})
    else:
        ctx.out.success(f"deleted sandbox {sid} in {ms}ms")
    return 0


def pause(ctx):
    from ._common import local_time

    sid = ctx.args.sandbox_id
    result, ms = ctx.timed(ctx.backend.sandbox_pause, sid, org_id=ctx.org_id)
    terminates = (result or {}).get("terminatesAt")
    if ctx.out.json_mode:
        ctx.out.json(omit_none({"success": True, "sandboxId": sid, "durationMs": ms, "terminatesAt": terminates}))
        return 0
    ctx.out.success(f"paused sandbox {sid} in {ms}ms")
    if terminates:
        ctx.out.info(f"this sandbox will auto-terminate at {local_time(terminates)} if not resumed")
    return 0


def resume(ctx):
    sid = ctx.args.sandbox_id
    _, ms = ctx.timed(ctx.backend.sandbox_resume, sid, org_id=ctx.org_id)
    if ctx.out.json_mode:
        ctx.out.json({"success": True, "sandboxId": sid, "durationMs": ms})
    else:
        ctx.out.success(f"resumed sandbox {sid} in {ms}ms")
    return 0


def env(ctx):
    from localsb.api.errors import ValidationError
    from localsb.api.units import parse_env_pair

    a, out = ctx.args, ctx.out
    set_vars = dict(parse_env_pair(v) for v in a.vars)
    delete_keys = list(a.delete or [])
    if not set_vars and not delete_keys:
        raise ValidationError("No environment variables specified. Use KEY=VALUE or --delete KEY")
    result = ctx.backend.sandbox_env(a.sandbox_id, set_vars, delete_keys, org_id=ctx.org_id)
    current = (result or {}).get("env") or {}
    if out.json_mode:
        out.json({"success": True, "env": current})
        return 0
    if set_vars:
        out.success(f"Set {len(set_vars)} environment variable(s)")
    if delete_keys:
        out.success(f"Deleted {len(delete_keys)} environment variable(s)")
    if current:
        out.line()
        out.line("Current environment:")
        for k, v in current.items():
            out.line(f"  {k}={v}")
    return 0


def events(ctx):
    from ..output import plural

    a, out = ctx.args, ctx.out
    data = ctx.backend.events_list(a.sandbox_id, limit=a.limit, direction="desc" if a.reverse else "asc",
                                   org_id=ctx.org_id)
    items = data.get("events") or []
    if out.json_mode:
        out.json({"events": items})
        return 0
    if not items:
        out.info("No events found")
        return 0
    out.table(["ID", "Type", "Created"], [[e.get("eventId"), e.get("type"), dash(e.get("createdAt"))] for e in items])
    out.info(f"Total: {len(items)} {plural(len(items), 'event', 'events')}")
    return 0


def stats(ctx):
    from localsb.api.models import parse_iso

    from ..output import format_bytes, format_number

    a, out = ctx.args, ctx.out
    for value in (a.start, a.end):
        if value is not None:
            parse_iso(value)
    data = ctx.backend.stats(org_id=ctx.org_id, start=a.start, end=a.end)
    if out.json_mode:
        out.json(data)
        return 0
    s = ((data or {}).get("services") or {}).get("sandbox")
    if not s:
        out.info("No sandbox data found.")
        return 0
    cpu = s.get("totalCpuTimeMs") or 0
    cpu_text = f"{cpu / 1000:.1f}s" if cpu >= 1000 else f"{format_number(cpu)}ms"
    out.err_line(out.bold("Sandbox Statistics"))
    out.err_line()
    for label, value in (
        ("Active", f"{format_number(s.get('totalActive'))} ({format_number(s.get('running'))} running, "
                   f"{format_number(s.get('idle'))} idle, {format_number(s.get('creating'))} creating)"),
        ("Executions", format_number(s.get("totalExecutions"))),
        ("CPU Time", cpu_text),
        ("Memory", format_bytes(s.get("totalMemoryByteSec"))),
        ("Network Out", format_bytes(s.get("totalNetworkEgressBytes")))):
        out.line(f"  {label + ':':<17}{value}")
    return 0
