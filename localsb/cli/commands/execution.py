"""`sandbox execution` (executions): list and get past executions."""
from __future__ import annotations

from ..tree import arg, command, group, int_range, opt
from ._common import PREFIX, dash


def register(sub):
    group(sub, "execution", aliases=["executions"], help="View execution history",
          examples=[f"{PREFIX} execution list sbx_abc123",
                    f"{PREFIX} execution list sbx_abc123 --limit 5",
                    f"{PREFIX} execution get exec_abc123"],
          populate=_commands)


def _commands(children):
    p = command(children, "list", aliases=["ls"], help="List the executions of a sandbox", handler=list_,
                dry_run=True, examples=[f"{PREFIX} execution list sbx_abc123",
                                        f"{PREFIX} execution list sbx_abc123 --limit 5"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--limit", type=int_range(1, 100, "limit"), default=50, help="Max results")
    p = command(children, "get", aliases=["info", "show"], help="Get execution details", handler=get,
                dry_run=True, examples=[f"{PREFIX} execution get exec_abc123"])
    arg(p, "execution_id", metavar="execution-id", help="Execution ID")


LIST_KEYS = ("executionId", "sandboxId", "status", "exitCode", "durationMs", "startedAt", "completedAt", "error")


def list_(ctx):
    from ..output import plural

    a, out = ctx.args, ctx.out
    items = ctx.backend.execution_list(a.sandbox_id, limit=a.limit, org_id=ctx.org_id).get("executions") or []
    if out.json_mode:
        out.json({"executions": [{k: e.get(k) for k in LIST_KEYS if k in e} for e in items]})
        return 0
    if not items:
        out.info("No executions found")
        return 0
    out.table(["ID", "Status", "Exit Code", "Duration", "Started"],
              [[e.get("executionId"), out.status_color(e.get("status", "")), dash(e.get("exitCode")),
                "-" if e.get("durationMs") is None else f"{e['durationMs']}ms", dash(e.get("startedAt"))]
               for e in items], align=["left", "left", "right", "right", "left"])
    out.info(f"Total: {len(items)} {plural(len(items), 'execution', 'executions')}")
    return 0


def get(ctx):
    a, out = ctx.args, ctx.out
    e = ctx.backend.execution_get(a.execution_id, org_id=ctx.org_id)
    if out.json_mode:
        # The official CLI's ExecutionInfo schema has no "type": it never reaches its output.
        out.json({k: v for k, v in e.items() if k != "type"})
        return 0
    code = e.get("exitCode")
    rows = [("Execution", out.bold(e.get("executionId", a.execution_id))), ("Sandbox", e.get("sandboxId")),
            ("Status", e.get("status")),
            ("Exit Code", None if code is None else out.paint(str(code), "success" if code == 0 else "error")),
            ("Duration", None if e.get("durationMs") is None else f"{e['durationMs']}ms"),
            ("Started", e.get("startedAt")), ("Completed", e.get("completedAt")), ("Error", e.get("error")),
            ("Stdout", e.get("stdoutStreamUrl")), ("Stderr", e.get("stderrStreamUrl")),
            ("Command", " ".join(e["command"]) if isinstance(e.get("command"), list) else e.get("command"))]
    # The official CLI shows the fields it has as a vertical table (2-space indent).
    out.vertical([(label, value) for label, value in rows if value not in (None, "")], pad="  ")
    return 0
