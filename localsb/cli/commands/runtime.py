"""`sandbox runtime` (rt): list runtimes; build one ahead of time (local engine)."""
from __future__ import annotations

from ..tree import arg, command, group, int_range, opt
from ._common import PREFIX, dash


def register(sub):
    group(sub, "runtime", aliases=["rt"], help="List and prepare sandbox runtimes",
          examples=[f"{PREFIX} runtime list", f"{PREFIX} runtime list --sort=name --direction=asc",
                    f"{PREFIX} rt list", f"{PREFIX} runtime build python:3.14"],
          populate=_commands)


def _commands(children):
    p = command(children, "list", aliases=["ls"], help="List available runtimes", handler=list_, dry_run=True,
                examples=[(f"{PREFIX} runtime list", "List available runtimes"),
                          (f"{PREFIX} runtime list --sort=name --direction=asc", "Sort alphabetically"),
                          (f"{PREFIX} runtime list --limit 10 --offset 20", "With pagination")])
    opt(p, "--limit", type=int_range(1, 100, "limit"), default=50, help="Max results (at most 100)")
    opt(p, "--offset", type=int_range(0, None, "offset"), default=0, help="Pagination offset")
    opt(p, "--sort", choices=("name", "created"), default="created", help="Sort field")
    opt(p, "--direction", choices=("asc", "desc"), default="desc", help="Sort direction")
    p = command(children, "build", help="Build a runtime image now, so the first sandbox on it starts "
                "at once (local backend)", handler=build,
                examples=[f"{PREFIX} runtime build python:3.14", f"{PREFIX} runtime build bun:1"])
    arg(p, "name", help="Runtime name (e.g., python:3.14, node:lts, bun:1)")


def list_(ctx):
    from ..output import plural

    a, out = ctx.args, ctx.out
    data = ctx.backend.runtime_list(limit=a.limit, offset=a.offset, sort=a.sort, direction=a.direction,
                                    org_id=ctx.org_id)
    items = data.get("runtimes") or []
    if out.json_mode:
        out.json(data)
        return 0
    if not items:
        out.info("No runtimes available")
        return 0
    out.table(["ID", "Name", "Description"], [[r.get("id"), r.get("name"), dash(r.get("description"))] for r in items])
    total = data.get("total", len(items))
    out.info(f"Total: {total} {plural(total, 'runtime', 'runtimes')}")
    return 0


def build(ctx):
    a, out = ctx.args, ctx.out
    r, ms = ctx.timed(ctx.backend.runtime_build, a.name)
    if out.json_mode:
        out.json(dict(r or {}, durationMs=ms))
    else:
        out.success(f"built runtime {(r or {}).get('name', a.name)} in {ms}ms")
    return 0
