"""Background jobs under /sandbox/sandboxes/{id}/jobs (hosted-api.md §2.3)."""
from __future__ import annotations

from aiohttp import web

from localsb.api.models import omit_none

from .. import streams
from . import call, engine, json_body, ok, org, path_id, q_bool, q_int, str_list


def with_urls(request: web.Request, job: dict) -> dict:
    data = omit_none(dict(job))
    return streams.add_stream_urls(request, data, "job", data.get("jobId"))


async def job_create(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    command = str_list(body, "command", required=True, nonempty=True)
    job = await call(request, engine(request).job_create, sid, command, org_id=org(request))
    return ok(with_urls(request, job))


async def job_list(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    limit = q_int(request, "limit", 20, lo=1, hi=1000)
    result = await call(request, engine(request).job_list, sid, limit=limit, org_id=org(request))
    return ok({"jobs": [with_urls(request, j) for j in result.get("jobs", [])]})


async def job_get(request: web.Request) -> web.Response:
    sid, jid = path_id(request, "sandboxId"), path_id(request, "jobId")
    job = await call(request, engine(request).job_get, sid, jid, org_id=org(request))
    return ok(with_urls(request, job))


async def job_destroy(request: web.Request) -> web.Response:
    sid, jid = path_id(request, "sandboxId"), path_id(request, "jobId")
    force = q_bool(request, "force")
    job = await call(request, engine(request).job_destroy, sid, jid, force=force, org_id=org(request))
    return ok(with_urls(request, job))
