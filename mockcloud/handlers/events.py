"""Events, runtimes and stats (hosted-api.md §2.4, §2.5, §2.9)."""
from __future__ import annotations

from aiohttp import web

from localsb.api.errors import Forbidden
from localsb.api.models import parse_iso

from . import call, engine, ok, org, path_id, q_choice, q_int, q_str

DIRECTIONS = ("asc", "desc")


async def events_list(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    limit = q_int(request, "limit", 50, lo=1, hi=100)
    direction = q_choice(request, "direction", DIRECTIONS, "asc")
    result = await call(request, engine(request).events_list, sid, limit=limit, direction=direction,
                        org_id=org(request))
    return ok({"events": result.get("events", [])})


async def runtime_list(request: web.Request) -> web.Response:
    result = await call(request, engine(request).runtime_list,
                        limit=q_int(request, "limit", 50, lo=1, hi=1000),
                        offset=q_int(request, "offset", 0, lo=0, hi=10**9),
                        sort=q_choice(request, "sort", ("name", "created"), "created"),
                        direction=q_choice(request, "direction", DIRECTIONS, "desc"),
                        org_id=org(request))
    runtimes = result.get("runtimes", [])
    return ok({"runtimes": runtimes, "total": result.get("total", len(runtimes))})


async def stats(request: web.Request) -> web.Response:
    """GET /services/stats/{orgId}: a key reads only its own org's statistics."""
    org_id = path_id(request, "orgId")
    if org_id != org(request):
        raise Forbidden(f"This API key has no access to organization {org_id}")
    q_choice(request, "service", ("sandbox",), "sandbox")
    start, end = q_str(request, "start"), q_str(request, "end")
    for value in (start, end):
        if value is not None:
            parse_iso(value)
    result = await call(request, engine(request).stats, org_id=org_id, start=start, end=end)
    if "services" not in result:
        # The engine may answer the sandbox block alone; the wire wraps it (wire doc §3 row 45).
        result = {"services": {"sandbox": result}}
    return ok(result)
