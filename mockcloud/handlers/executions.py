"""Execution: execute, execution get (with the ``wait`` long-poll), execution list (hosted-api.md §2.2)."""
from __future__ import annotations

from aiohttp import web

from localsb.api.errors import ValidationError
from localsb.api.models import omit_none
from localsb.api.specs import FileSpec
from localsb.api.limits import check_timeout

from .. import streams
from . import (MAX_EXECUTION_WAIT_S, call, call_wait, engine, field, json_body, ok, org, path_id,
               q_duration_s, q_int, str_list)


def with_urls(request: web.Request, info: dict) -> dict:
    data = omit_none(dict(info))
    return streams.add_stream_urls(request, data, "execution", data.get("executionId"))


async def sandbox_execute(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    command = str_list(body, "command", required=True, nonempty=True)
    timeout = field(body, "timeout", str)
    if timeout is not None:
        check_timeout(timeout, "timeout")
    stream = field(body, "stream", dict, default={})
    timestamps = stream.get("timestamps", False)
    if not isinstance(timestamps, bool):
        raise ValidationError("Invalid field 'stream.timestamps': wrong type")
    for key in ("stdout", "stderr"):
        if stream.get(key) is not None and not isinstance(stream[key], str):
            raise ValidationError(f"Invalid field 'stream.{key}': wrong type")
    files = [FileSpec.from_wire(f) for f in (field(body, "files", list) or [])]
    eng = engine(request)
    if files:
        await call(request, eng.fs_write, sid, files, org_id=org(request))
    result = dict(await call(request, eng.execute_start, sid, command, timeout=timeout,
                             timestamps=timestamps, org_id=org(request)))
    auto_resumed = result.pop("autoResumed", None)
    data = omit_none(result)
    streams.add_stream_urls(request, data, "execution", data.get("executionId"), stream)
    return ok(data, top={"autoResumed": True if auto_resumed else None})


async def execution_get(request: web.Request) -> web.Response:
    eid = path_id(request, "executionId")
    wait = q_duration_s(request, "wait", MAX_EXECUTION_WAIT_S)
    eng = engine(request)
    if wait:
        info = await call_wait(request, eng.execution_get, eid, wait=wait, org_id=org(request))
    else:
        info = await call(request, eng.execution_get, eid, wait=None, org_id=org(request))
    return ok(with_urls(request, info))


async def execution_list(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    limit = q_int(request, "limit", 50, lo=1, hi=1000)
    result = await call(request, engine(request).execution_list, sid, limit=limit, org_id=org(request))
    return ok({"executions": [with_urls(request, e) for e in result.get("executions", [])]})
