"""Output stream URLs, the stream GET that tails them, and the stdin stream service of `run`.

Output streams (official-cli-wire.md §2.4, hosted-api.md §2.11): the engine appends an
execution's or job's stdout and stderr to files as they are produced
(``engine.output_path(kind, id, stream)``) and says when the producer has finished
(``engine.output_done(kind, id)``). A stream URL is a capability, fetched with no Authorization
header, so it carries an unguessable token: an HMAC of (kind, id, stream) under a secret kept in
mockcloud's store. URLs therefore stay valid across a restart without a table of them.

Stdin streams: ``POST {AGENTUITY_STREAM_URL}/`` creates one (``{id}``), ``PUT /{id}`` uploads its
bytes (chunked, ends at the CLI's stdin EOF). The body goes to ``<state>/stdin/<id>``; the file
``<id>.done`` marks it complete. See ``stdin_for_create`` for how it reaches the command.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import os
import re
import time

from aiohttp import web

from localsb.api.errors import NotFound, ValidationError
from localsb.api.models import new_id
from localsb.linux.private import private_opener

from .appkeys import STATE_DIR, STORE
from .handlers import bare, engine, json_body, ok, org, read_limited

KINDS = ("execution", "job")
STREAMS = ("stdout", "stderr")
STDIN_LIMIT = 64 << 20
_STDIN_ID_RE = re.compile(r"^strm_[a-z0-9]{6,64}$")
# Tail polling: fast at first (a short command's output should reach the client in a few ms),
# slower while a long producer is quiet, so that idle streams cost little.
_POLL_MIN = 0.005
_POLL_MAX = 0.05
_CHUNK = 1 << 16


def _token(secret: bytes, kind: str, id_: str, stream: str) -> str:
    return hmac.new(secret, f"{kind}/{id_}/{stream}".encode(), hashlib.sha256).hexdigest()[:40]


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def stream_url(request: web.Request, kind: str, id_: str, stream: str) -> str:
    token = _token(request.app[STORE].stream_secret, kind, id_, stream)
    return f"{base_url(request)}/streams/{kind}/{id_}/{token}/{stream}"


def add_stream_urls(request: web.Request, data: dict, kind: str, id_: str | None,
                    ignore: dict | None = None) -> dict:
    """Set ``stdoutStreamUrl``/``stderrStreamUrl`` on ``data``, leaving out the streams the client
    asked to ignore (the official CLI still fetches any URL it is given; wire doc §2.4)."""
    if not id_:
        return data
    ignore = ignore or {}
    for stream in STREAMS:
        key = f"{stream}StreamUrl"
        if ignore.get(stream) == "ignore":
            data.pop(key, None)
        else:
            data[key] = stream_url(request, kind, id_, stream)
    return data


async def stream_get(request: web.Request) -> web.StreamResponse:
    """GET /streams/{kind}/{id}/{token}/{stream}: the raw bytes, chunked, until the producer ends.

    A job's stream without ``follow=true`` answers what has been written so far and ends, so that
    ``job logs`` of a long-running job returns; everything else is tailed to the end."""
    kind, id_, token, stream = (request.match_info[k] for k in ("kind", "id", "token", "stream"))
    if kind not in KINDS or stream not in STREAMS:
        raise NotFound(f"Stream not found: {request.path}")
    expected = _token(request.app[STORE].stream_secret, kind, id_, stream)
    if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode()):
        raise NotFound(f"Stream not found: {request.path}")
    eng = engine(request)
    path = eng.output_path(kind, id_, stream)
    snapshot_only = kind == "job" and request.query.get("follow") != "true"

    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                       "Cache-Control": "no-store"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    fh = None
    delay = _POLL_MIN
    try:
        while True:
            if fh is None:
                try:
                    fh = open(path, "rb")
                except FileNotFoundError:
                    fh = None
            chunk = fh.read(_CHUNK) if fh is not None else b""
            if chunk:
                await resp.write(chunk)
                delay = _POLL_MIN
                continue
            if snapshot_only or eng.output_done(kind, id_):
                # The producer marks done only after its last write: drain what is left, then end.
                if fh is None:
                    try:
                        fh = open(path, "rb")
                    except FileNotFoundError:
                        break
                while chunk := fh.read(_CHUNK):
                    await resp.write(chunk)
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
    finally:
        if fh is not None:
            fh.close()
    await resp.write_eof()
    return resp


# stdin streams -----------------------------------------------------------------------------------
def _stdin_dir(request: web.Request) -> str:
    d = os.path.join(request.app[STATE_DIR], "stdin")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _stdin_owner_path(d: str, sid: str) -> str:
    return os.path.join(d, sid + ".org")


async def stdin_create(request: web.Request) -> web.Response:
    """POST {stream}/ -> bare ``{id}`` (official-cli-wire.md §3 row 46)."""
    body = await json_body(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ValidationError("Invalid field 'name': wrong type")
    d = _stdin_dir(request)
    sid = new_id("stream", 20)
    with open(os.path.join(d, sid), "wb", opener=private_opener):
        pass
    with open(_stdin_owner_path(d, sid), "w", opener=private_opener) as fh:
        fh.write(org(request))
    return bare({"id": sid}, status=201)


def _owned_stdin(request: web.Request, sid: str) -> str:
    if not _STDIN_ID_RE.match(sid):
        raise NotFound(f"Stream not found: {sid}")
    d = _stdin_dir(request)
    try:
        with open(_stdin_owner_path(d, sid)) as fh:
            owner = fh.read().strip()
    except FileNotFoundError:
        raise NotFound(f"Stream not found: {sid}") from None
    if owner != org(request):
        raise NotFound(f"Stream not found: {sid}")
    return os.path.join(d, sid)


async def stdin_put(request: web.Request) -> web.Response:
    """PUT {stream}/{id}: the stdin bytes, chunked, complete at the client's EOF (row 47)."""
    sid = request.match_info["stream_id"]
    path = _owned_stdin(request, sid)
    if os.path.exists(path + ".done"):
        raise ValidationError(f"Stream {sid} is already complete")
    with open(path, "wb", opener=private_opener) as fh:     # a command's stdin: 0600
        n = await read_limited(request, fh, STDIN_LIMIT)
    with open(path + ".done", "w", opener=private_opener):
        pass
    return ok({"id": sid, "bytes": n})


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def stdin_for_create(request: web.Request, sid: str) -> dict:
    """Keyword arguments for ``engine.sandbox_create`` that feed the stdin stream ``sid``.

    The official CLI uploads stdin only *after* the create response (core/src/services/sandbox/
    run.ts), so the body is complete at create time only for clients that upload first
    (localsb's cloud backend does). Complete: pass ``stdin=<bytes>``. Still arriving: if the
    engine takes ``stdin_path``, pass the file and its ``.done`` marker so it can feed the
    command as the bytes arrive; otherwise the command gets empty stdin (docs/divergences.md)."""
    path = _owned_stdin(request, sid)
    create = engine(request).sandbox_create
    if os.path.exists(path + ".done"):
        if _accepts(create, "stdin"):
            with open(path, "rb") as fh:
                return {"stdin": fh.read()}
        return {}
    if _accepts(create, "stdin_path"):
        return {"stdin_path": path, "stdin_done_path": path + ".done"}
    return {}


def sweep_stdin(state_dir: str, max_age_s: float = 3600.0) -> None:
    """Remove stdin stream files older than ``max_age_s`` (they are used once, at create)."""
    d = os.path.join(state_dir, "stdin")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    cutoff = time.time() - max_age_s
    for name in names:
        p = os.path.join(d, name)
        try:
            if os.stat(p).st_mtime < cutoff:
                os.unlink(p)
        except FileNotFoundError:
            pass


def check_stdin_ref(ref) -> str | None:
    if ref is None or ref == "ignore":
        return None
    if not isinstance(ref, str):
        raise ValidationError("Invalid field 'stream.stdin': wrong type")
    return ref

