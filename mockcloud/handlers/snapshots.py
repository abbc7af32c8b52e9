"""Snapshots: create, list, get, tag, delete, lineage, public reads, and the build flow
(build init -> presigned PUT or authenticated upload -> finalize) (hosted-api.md §2.7).

The build flow uses the engine's server-side build calls: ``snapshot_build_init(body, org_id=)``
-> ``{snapshotId} | {unchanged, existingId, ...}``, ``snapshot_build_upload(snapshot_id, src,
org_id=)`` and ``snapshot_build_finalize(snapshot_id, body, org_id=)`` -> SnapshotInfo. Public
reads and lineage use the engine's ``snapshot_public_get``/``snapshot_public_list``/
``snapshot_lineage`` when it has them, else are built here from ``resolve_snapshot``,
``snapshot_get`` and ``snapshot_list``. A missing build call answers 501 (NotSupported).
"""
from __future__ import annotations

import hashlib
import hmac
import tempfile

from aiohttp import web

from localsb.api.errors import NotFound, NotSupported, SnapshotNotFound, ValidationError
from localsb.api.models import omit_none, validate_snapshot_name, validate_tag

from ..appkeys import STORE
from ..streams import base_url
from . import (call, engine, field, json_body, ok, org, path_id, q_choice, q_int, q_str,
               read_limited)

UPLOAD_LIMIT = 2 << 30
SORTS = ("name", "created", "size", "files")


def _engine_method(request: web.Request, name: str):
    fn = getattr(engine(request), name, None)
    if fn is None:
        raise NotSupported(f"This mockcloud's engine does not implement {name}; "
                           "snapshot builds and public snapshots need it")
    return fn


def _upload_token(request: web.Request, snapshot_id: str) -> str:
    return hmac.new(request.app[STORE].stream_secret, f"upload/{snapshot_id}".encode(),
                    hashlib.sha256).hexdigest()[:40]


async def _upload(request: web.Request, snapshot_id: str, org_id: str | None) -> dict:
    """Spool the raw archive body (bounded), then hand it to the engine's build upload."""
    fn = _engine_method(request, "snapshot_build_upload")
    with tempfile.TemporaryFile() as spool:
        await read_limited(request, spool, UPLOAD_LIMIT)
        spool.seek(0)
        return await call(request, fn, snapshot_id, spool, org_id=org_id)


async def snapshot_create(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request)
    name = field(body, "name", str)
    if name is not None:
        validate_snapshot_name(name)
    tag = field(body, "tag", str)
    if tag is not None:
        validate_tag(tag)
    snap = await call(request, engine(request).snapshot_create, sid, name=name,
                      description=field(body, "description", str), tag=tag,
                      public=field(body, "public", bool, default=False), org_id=org(request))
    return ok(omit_none(dict(snap)), status=201)


async def snapshot_list(request: web.Request) -> web.Response:
    result = await call(request, engine(request).snapshot_list,
                        sandbox_id=q_str(request, "sandboxId"),
                        limit=q_int(request, "limit", 50, lo=1, hi=1000),
                        offset=q_int(request, "offset", 0, lo=0, hi=10**9),
                        sort=q_choice(request, "sort", SORTS, "created"),
                        direction=q_choice(request, "direction", ("asc", "desc"), "desc"),
                        org_id=org(request))
    snaps = [omit_none(dict(s)) for s in result.get("snapshots", [])]
    return ok({"snapshots": snaps, "total": result.get("total", len(snaps))})


async def snapshot_get(request: web.Request) -> web.Response:
    snap = await call(request, engine(request).snapshot_get, path_id(request, "snapshotId"),
                      org_id=org(request))
    return ok(omit_none(dict(snap)))


async def snapshot_tag(request: web.Request) -> web.Response:
    snapshot_id = path_id(request, "snapshotId")
    body = await json_body(request, required=True)
    if "tag" not in body:
        raise ValidationError("Missing required field 'tag' (a string, or null to clear it)")
    tag = field(body, "tag", str)
    if tag is not None:
        validate_tag(tag, for_tag_command=True)
    snap = await call(request, engine(request).snapshot_tag, snapshot_id, tag, org_id=org(request))
    return ok(omit_none(dict(snap)))


async def snapshot_delete(request: web.Request) -> web.Response:
    await call(request, engine(request).snapshot_delete, path_id(request, "snapshotId"), org_id=org(request))
    return ok()


def _lineage(eng, org_id: str, snapshot: str | None, name: str | None, tag: str | None, limit: int) -> dict:
    """Newest to oldest: from one snapshot along its parents, or every snapshot of a name (and
    tag) in the org. Uses the engine's own lineage call when it has one."""
    if hasattr(eng, "snapshot_lineage"):
        return eng.snapshot_lineage(snapshot=snapshot, name=name, tag=tag, limit=limit, org_id=org_id)
    if snapshot:
        row = eng.resolve_snapshot(snapshot, org_id) if hasattr(eng, "resolve_snapshot") else None
        current = row["id"] if row is not None else snapshot
        chain, seen = [], set()
        while current and current not in seen and len(chain) < limit:
            seen.add(current)
            info = eng.snapshot_get(current, org_id=org_id)
            chain.append(info)
            current = info.get("parentSnapshotId")
    else:
        listed = eng.snapshot_list(limit=100, org_id=org_id)["snapshots"]
        chain = [s for s in listed if s.get("name") == name and (tag is None or s.get("tag") == tag)][:limit]
    keys = ("snapshotId", "name", "fullName", "message", "tag", "parentSnapshotId", "public", "org", "user",
            "createdAt")
    lineage = [omit_none({k: s.get(k) for k in keys}) for s in chain]
    for entry in lineage:
        entry.setdefault("public", False)
    return {"lineage": lineage, "total": len(lineage)}


async def snapshot_lineage(request: web.Request) -> web.Response:
    snapshot, name = q_str(request, "snapshot"), q_str(request, "name")
    if not snapshot and not name:
        raise ValidationError("Give 'snapshot' (an id or name:tag) or 'name' to follow a lineage")
    result = await call(request, _lineage, engine(request), org(request), snapshot, name, q_str(request, "tag"),
                        q_int(request, "limit", 100, lo=1, hi=1000))
    return ok(result)


def _public_get(eng, ref: str) -> dict:
    if hasattr(eng, "snapshot_public_get"):
        return eng.snapshot_public_get(ref)
    if not hasattr(eng, "resolve_snapshot"):
        raise NotSupported("This mockcloud's engine cannot resolve public snapshots")
    row = eng.resolve_snapshot(ref, None)
    if not row["public"]:
        raise SnapshotNotFound(ref)
    return eng.snapshot_get(row["id"], org_id=None)


def _public_list(eng, limit: int, offset: int) -> dict:
    if hasattr(eng, "snapshot_public_list"):
        return eng.snapshot_public_list(limit=limit, offset=offset)
    # Every org's snapshots, newest first, public ones kept: bounded to the newest 100.
    rows = [s for s in eng.snapshot_list(limit=100, org_id=None)["snapshots"] if s.get("public")]
    return {"snapshots": rows[offset:offset + limit], "total": len(rows)}


async def snapshot_public_get(request: web.Request) -> web.Response:
    snap = await call(request, _public_get, engine(request), path_id(request, "snapshotRef"))
    return ok(omit_none(dict(snap)))


async def snapshot_public_list(request: web.Request) -> web.Response:
    result = await call(request, _public_list, engine(request), q_int(request, "limit", 50, lo=1, hi=100),
                        q_int(request, "offset", 0, lo=0, hi=10**9))
    snaps = [omit_none(dict(s)) for s in result.get("snapshots", [])]
    return ok({"snapshots": snaps, "total": result.get("total", len(snaps))})


async def snapshot_build_init(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    field(body, "runtime", str, required=True)
    for key in ("name", "tag", "description", "message", "contentHash"):
        field(body, key, str)
    for key in ("force", "encrypt", "public"):
        field(body, key, bool)
    field(body, "git", dict)
    if body.get("name") is not None:
        validate_snapshot_name(body["name"])
    if body.get("tag") is not None:
        validate_tag(body["tag"])
    fn = _engine_method(request, "snapshot_build_init")
    result = omit_none(dict(await call(request, fn, body, org_id=org(request))))
    # No publicKey, ever: the CLI would encrypt the archive (wire doc §4.14); plain tar.gz it is.
    result.pop("publicKey", None)
    snapshot_id = result.get("snapshotId")
    if snapshot_id and not result.get("unchanged") and not body.get("public"):
        result["uploadUrl"] = (f"{base_url(request)}/uploads/snapshots/{snapshot_id}/"
                               f"{_upload_token(request, snapshot_id)}")
    return ok(result)


async def snapshot_presigned_put(request: web.Request) -> web.Response:
    """PUT <uploadUrl>: no auth, the token in the path is the capability."""
    snapshot_id, token = request.match_info["snapshotId"], request.match_info["token"]
    if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"),
                               _upload_token(request, snapshot_id).encode()):
        raise NotFound("Upload URL not found or expired")
    # The token was minted for this snapshot id only, so the engine need not check the org.
    await _upload(request, snapshot_id, None)
    return ok()


async def snapshot_upload(request: web.Request) -> web.Response:
    """PUT /sandbox/snapshots/{id}/upload (public snapshots): answer {success, data:{success, scanned}}."""
    snapshot_id = path_id(request, "snapshotId")
    result = await _upload(request, snapshot_id, org(request)) or {}
    return ok({"success": bool(result.get("success", True)), "scanned": bool(result.get("scanned", True))})


async def snapshot_build_finalize(request: web.Request) -> web.Response:
    snapshot_id = path_id(request, "snapshotId")
    body = await json_body(request, required=True)
    for key in ("sizeBytes", "fileCount"):
        field(body, key, int, required=True)
    field(body, "files", list)
    field(body, "env", dict)
    field(body, "metadata", dict)
    fn = _engine_method(request, "snapshot_build_finalize")
    snap = await call(request, fn, snapshot_id, body, org_id=org(request))
    return ok(omit_none(dict(snap)))
