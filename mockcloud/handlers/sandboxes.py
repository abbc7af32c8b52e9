"""Sandbox management: create, list, get, status, destroy, pause, resume, env (hosted-api.md §2.1)."""
from __future__ import annotations

from aiohttp import web

from localsb.api.errors import ValidationError
from localsb.api.models import omit_none
from localsb.api.specs import CreateSpec
from localsb.api.status import LIST_FILTER_STATUSES, MODES, SANDBOX_STATUSES

from ..appkeys import ORG_ID, ORG_NAME
from .. import streams
from . import (MAX_GET_WAIT_MS, MAX_STATUS_WAIT_MS, call, call_wait, engine, field, json_body, ok,
               org, path_id, q_bool, q_choice, q_int, q_list, q_str)

SORT_FIELDS = ("name", "created", "updated", "status", "mode", "execution_count")
DIRECTIONS = ("asc", "desc")
# mockcloud serves one region, the one GET /cli/region lists: the official CLI validates and caches
# region names, and the engine's own "local" is not a hosted region (docs/divergences.md).
REGION = "usc"


def org_info(request: web.Request) -> dict:
    return {"id": request[ORG_ID], "name": request[ORG_NAME]}


def _statuses(request: web.Request, name: str) -> list[str] | None:
    wanted = q_list(request, name)
    for s in wanted or ():
        if s not in SANDBOX_STATUSES:
            raise ValidationError(f"Invalid {name} '{s}': expected one of {', '.join(SANDBOX_STATUSES)}")
    return wanted


def sandbox_info(request: web.Request, info: dict) -> dict:
    """SandboxInfo as GET /sandbox/{id} answers it: optional fields are left out rather than
    null (the official CLI's zod schema rejects null there), and ``org`` carries the org name."""
    data = omit_none(dict(info))
    org_ = data.get("org")
    if not isinstance(org_, dict) or not org_.get("name"):
        data["org"] = org_info(request)
    data["region"] = REGION
    return data


def cli_summary(request: web.Request, s: dict) -> dict:
    """One row of GET /cli/sandbox: every nullable key present (wire doc §3 row 5)."""
    out = dict(s)
    for key in ("name", "description", "region", "createdAt", "orgName", "projectId"):
        out.setdefault(key, None)
    out["orgId"] = out.get("orgId") or request[ORG_ID]
    if out["orgName"] is None and out["orgId"] == request[ORG_ID]:
        out["orgName"] = request[ORG_NAME]
    out["region"] = REGION
    return out


def _list_args(request: web.Request) -> dict:
    return dict(
        org_id=org(request),
        project_id=q_str(request, "projectId"),
        name=q_str(request, "name"),
        mode=q_choice(request, "mode", MODES),
        status=q_choice(request, "status", LIST_FILTER_STATUSES),
        limit=q_int(request, "limit", 50, lo=1, hi=100),
        offset=q_int(request, "offset", 0, lo=0, hi=10**9),
        sort=q_choice(request, "sort", SORT_FIELDS, "created"),
        direction=q_choice(request, "direction", DIRECTIONS, "desc"),
    )


async def sandbox_create(request: web.Request) -> web.Response:
    body = await json_body(request)
    stream = field(body, "stream", dict, default={})
    stdin_ref = streams.check_stdin_ref(stream.get("stdin"))
    for key in ("stdout", "stderr"):
        if stream.get(key) is not None and not isinstance(stream[key], str):
            raise ValidationError(f"Invalid field 'stream.{key}': wrong type")
    if stream.get("timestamps") is not None and not isinstance(stream["timestamps"], bool):
        raise ValidationError("Invalid field 'stream.timestamps': wrong type")
    spec = CreateSpec.from_wire(body, org_id=org(request))
    kwargs = streams.stdin_for_create(request, stdin_ref) if stdin_ref else {}
    result = await call(request, engine(request).sandbox_create, spec, **kwargs)
    data = omit_none(dict(result))
    if data.get("executionId"):
        streams.add_stream_urls(request, data, "execution", data["executionId"], stream)
    return ok(data, status=201)


async def sandbox_list(request: web.Request) -> web.Response:
    """GET /sandbox (the SDK's list; `snapshot get` uses it with snapshotId): full SandboxInfo
    rows with ``org`` required. Every filter is the engine's query, so ``total`` counts all matches."""
    args = _list_args(request)
    args.update(snapshot_id=q_str(request, "snapshotId"), live=q_bool(request, "live"),
                deleted_only=q_bool(request, "deletedOnly"), include_deleted=q_bool(request, "includeDeleted"))
    if args["deleted_only"] and args["live"]:
        raise ValidationError("Invalid query: 'live' and 'deletedOnly' cannot both be true")
    eng = engine(request)
    listed = await call(request, eng.sandbox_list, **args)

    def full_rows():
        rows = []
        for s in listed.get("sandboxes", []):
            sid = s.get("sandboxId") or s.get("id")
            try:
                rows.append(eng.sandbox_get(sid, org_id=args["org_id"], include_deleted=True))
            except Exception:  # gone between list and get: leave it out
                continue
        return rows

    rows = await call(request, full_rows)
    return ok({"sandboxes": [sandbox_info(request, r) for r in rows], "total": listed.get("total", len(rows))})


async def cli_sandbox_list(request: web.Request) -> web.Response:
    """GET /cli/sandbox (the CLI's `list`, on the API host)."""
    listed = await call(request, engine(request).sandbox_list, **_list_args(request))
    rows = [cli_summary(request, s) for s in listed.get("sandboxes", [])]
    return ok({"sandboxes": rows, "total": listed.get("total", len(rows))})


async def cli_sandbox_resolve(request: web.Request) -> web.Response:
    """GET /cli/sandbox/{id}: region and org of a sandbox, for the CLI's resolve step."""
    sid = path_id(request, "sandboxId")
    info = await call(request, engine(request).sandbox_get, sid, org_id=org(request), include_deleted=True)
    project = info.get("project")
    return ok({
        "id": info.get("sandboxId", sid),
        "name": info.get("name"),
        "region": REGION,
        "status": info.get("status"),
        "orgId": org(request),
        "projectId": info.get("projectId") or (project.get("id") if isinstance(project, dict) else None),
    })


async def sandbox_get(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    include_deleted = q_bool(request, "includeDeleted")
    wait_for = _statuses(request, "waitForStatus")
    wait_ms = q_int(request, "waitMs", None, lo=0, hi=10**9)
    eng = engine(request)
    if wait_for:
        await call_wait(request, eng.sandbox_status, sid, wait_for=wait_for,
                        wait_ms=min(wait_ms or 0, MAX_GET_WAIT_MS),
                        org_id=org(request))
    info = await call(request, eng.sandbox_get, sid, org_id=org(request), include_deleted=include_deleted)
    return ok(sandbox_info(request, info))


async def sandbox_status(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    wait_for = _statuses(request, "waitForStatus")
    wait_ms = q_int(request, "waitMs", None, lo=0, hi=10**9)
    eng = engine(request)
    if wait_for:
        wait_ms = min(wait_ms or 0, MAX_STATUS_WAIT_MS)
        result = await call_wait(request, eng.sandbox_status, sid, wait_for=wait_for, wait_ms=wait_ms,
                                 org_id=org(request))
    else:
        result = await call(request, eng.sandbox_status, sid, wait_for=None, wait_ms=None, org_id=org(request))
    return ok(omit_none({"sandboxId": result.get("sandboxId", sid), "status": result.get("status"),
                         "exitCode": result.get("exitCode")}))


async def sandbox_destroy(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    await call(request, engine(request).sandbox_destroy, sid, org_id=org(request))
    return ok()


async def sandbox_pause(request: web.Request) -> web.Response:
    """Pause answers at the top level, with no ``data`` (wire doc §2.2)."""
    sid = path_id(request, "sandboxId")
    await json_body(request)
    result = await call(request, engine(request).sandbox_pause, sid, org_id=org(request))
    return ok(None, top={"sandboxId": result.get("sandboxId", sid), "status": result.get("status"),
                         "checkpointId": result.get("checkpointId"), "terminatesAt": result.get("terminatesAt")})


async def sandbox_resume(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    await json_body(request)
    await call(request, engine(request).sandbox_resume, sid, org_id=org(request))
    return ok()


async def sandbox_env(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    env = field(body, "env", dict, required=True)
    set_vars, delete = {}, []
    for k, v in env.items():
        if v is None:
            delete.append(k)
        elif isinstance(v, str):
            set_vars[k] = v
        else:
            raise ValidationError(f"Invalid value for environment variable {k}: must be a string or null")
    result = await call(request, engine(request).sandbox_env, sid, set_vars, delete, org_id=org(request))
    return ok({"env": result.get("env", {})})
