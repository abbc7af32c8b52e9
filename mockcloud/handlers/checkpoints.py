"""Disk checkpoints (hosted-api.md §2.6); ``{checkpointId}`` may be an id or a name (aiohttp
has already percent-decoded it: `checkpoint delete sbx "name with space"`)."""
from __future__ import annotations

from aiohttp import web

from . import call, engine, field, json_body, ok, org, path_id


async def checkpoint_create(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    name = field(body, "name", str, required=True)
    ckpt = await call(request, engine(request).checkpoint_create, sid, name, org_id=org(request))
    return ok(ckpt, status=201)


async def checkpoint_list(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    result = await call(request, engine(request).checkpoint_list, sid, org_id=org(request))
    return ok({"checkpoints": result.get("checkpoints", [])})


async def checkpoint_restore(request: web.Request) -> web.Response:
    sid, ref = path_id(request, "sandboxId"), path_id(request, "checkpointId")
    await json_body(request)
    await call(request, engine(request).checkpoint_restore, sid, ref, org_id=org(request))
    return ok()


async def checkpoint_delete(request: web.Request) -> web.Response:
    sid, ref = path_id(request, "sandboxId"), path_id(request, "checkpointId")
    await call(request, engine(request).checkpoint_delete, sid, ref, org_id=org(request))
    return ok()
