"""The sandbox file system under /fs (hosted-api.md §2.8, wire doc §4.16-§4.17).

Single files travel as base64 JSON; reads and archive downloads answer raw bytes; archive uploads
arrive raw (chunked). Paths are passed to the engine unchanged: it resolves them inside the
sandbox and refuses any that escape it (ValidationError, a 400 here).
"""
from __future__ import annotations

import tempfile

from aiohttp import web

from localsb.api.errors import ValidationError
from localsb.api.specs import FileSpec

from . import call, engine, field, json_body, ok, org, path_id, q_choice, read_limited

UPLOAD_LIMIT = 2 << 30
FORMATS = ("tar.gz", "zip")
_CONTENT_TYPES = {"tar.gz": "application/gzip", "zip": "application/zip"}
# Downloads spool in memory up to this size, then on disk.
_SPOOL = 8 << 20


def _path(value, name="path") -> str:
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        raise ValidationError(f"Invalid {name}: give a non-empty path")
    return value


def _q_path(request: web.Request, default: str | None = ".") -> str:
    raw = request.query.get("path")
    if raw is None or raw == "":
        if default is None:
            raise ValidationError("Missing query parameter 'path'")
        return default
    return _path(raw)


async def _raw(request: web.Request, spool, content_type: str) -> web.StreamResponse:
    """Send the spooled bytes as the raw body (the CLI ignores its own Accept: application/json)."""
    size = spool.tell()
    spool.seek(0)
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(size)})
    await resp.prepare(request)
    while chunk := spool.read(1 << 16):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def fs_write(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    files = field(body, "files", list, required=True)
    specs = [FileSpec.from_wire(f) for f in files]
    for f in specs:
        _path(f.path, "file path")
    result = await call(request, engine(request).fs_write, sid, specs, org_id=org(request))
    written = (result or {}).get("filesWritten", len(specs)) if isinstance(result, dict) else len(specs)
    return ok({"filesWritten": written})


async def fs_read(request: web.Request) -> web.StreamResponse:
    sid = path_id(request, "sandboxId")
    path = _q_path(request, default=None)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
        await call(request, engine(request).fs_read, sid, path, spool, org_id=org(request))
        return await _raw(request, spool, "application/octet-stream")


async def fs_list(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    result = await call(request, engine(request).fs_list, sid, _q_path(request), org_id=org(request))
    return ok({"files": result.get("files", [])})


async def fs_mkdir(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    path = _path(field(body, "path", str, required=True))
    recursive = field(body, "recursive", bool, default=False)
    await call(request, engine(request).fs_mkdir, sid, path, recursive=recursive, org_id=org(request))
    return ok()


async def fs_rm(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    path = _path(field(body, "path", str, required=True))
    found = await call(request, engine(request).fs_rm, sid, path, org_id=org(request))
    return ok(None, top={"found": bool(found)})


async def fs_rmdir(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    body = await json_body(request, required=True)
    path = _path(field(body, "path", str, required=True))
    recursive = field(body, "recursive", bool, default=False)
    found = await call(request, engine(request).fs_rmdir, sid, path, recursive=recursive, org_id=org(request))
    return ok(None, top={"found": bool(found)})


async def fs_download(request: web.Request) -> web.StreamResponse:
    sid = path_id(request, "sandboxId")
    path = _q_path(request)
    fmt = q_choice(request, "format", FORMATS, "tar.gz")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
        await call(request, engine(request).fs_download, sid, path, fmt, spool, org_id=org(request))
        return await _raw(request, spool, _CONTENT_TYPES[fmt])


async def fs_upload(request: web.Request) -> web.Response:
    sid = path_id(request, "sandboxId")
    path = _q_path(request)
    fmt = request.query.get("format") or ""
    if fmt not in ("",) + FORMATS:
        raise ValidationError(f"Invalid query parameter 'format': '{fmt}' is not one of tar.gz, zip")
    with tempfile.TemporaryFile() as src:
        await read_limited(request, src, UPLOAD_LIMIT)
        src.seek(0)
        if not fmt:
            # Empty format means auto-detect (hosted-api.md §2.8): zip starts with PK, gzip with 1f8b.
            head = src.read(4)
            src.seek(0)
            fmt = "zip" if head.startswith(b"PK") else "tar.gz"
        await call(request, engine(request).fs_upload, sid, path, fmt, src, org_id=org(request))
    return ok()
