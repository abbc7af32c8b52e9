"""Bearer API keys -> organizations, and the tenancy rule that goes with them.

Every route needs a valid key except those marked public in mockcloud/routes.py (public snapshot
reads, stream GETs and presigned upload PUTs, whose URLs carry their own capability token,
/openapi.json, and apt validation, which the official CLI calls without a key). A key acts for
exactly one org: ``?orgId=`` naming another org is refused (403), and the engine answers 404 for
another org's sandboxes, snapshots and executions.
"""
from __future__ import annotations

from aiohttp import web

from localsb.api.errors import Forbidden, Unauthorized

from .appkeys import ENGINE, ORG_ID, ORG_NAME, STORE


def mark_public(handler):
    handler.public = True
    return handler


def bearer_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler):
    match = request.match_info
    if match.http_exception is not None or getattr(match.handler, "public", False):
        return await handler(request)
    key = bearer_key(request)
    if key is None:
        raise Unauthorized("Unauthorized: send an API key as 'Authorization: Bearer <key>' "
                           "(mockcloud keys create --org NAME makes one)")
    org = request.app[STORE].key_org(key)
    if org is None:
        raise Unauthorized("Unauthorized: invalid API key")
    request[ORG_ID], request[ORG_NAME] = org
    names = getattr(request.app[ENGINE], "org_names", None)
    if isinstance(names, dict) and names.get(org[0]) != org[1]:
        names[org[0]] = org[1]  # the engine renders org {id, name} from this map
    wanted = request.query.get("orgId")
    if wanted and wanted != org[0]:
        raise Forbidden(f"This API key has no access to organization {wanted}")
    return await handler(request)
