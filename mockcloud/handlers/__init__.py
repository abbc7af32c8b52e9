"""Request handlers of the hosted sandbox API, one module per resource family.

Each handler turns the request into one engine call (the Backend method of the same name) and
the result into the hosted envelope. Handlers never build error responses: they raise
localsb.api.errors and the error middleware (mockcloud/app.py) turns those into HTTP.

This module holds the helpers the handlers share: body and query parsing that answers bad input
with ValidationError (a 400 envelope), never a 500, and the bridge to the synchronous engine.
"""
from __future__ import annotations

import asyncio
import functools
import json

from aiohttp import web

from localsb.api.errors import PayloadTooLarge, ValidationError
from localsb.api.units import parse_duration

from ..appkeys import ENGINE, ORG_ID, POOL, WAIT_POOL

# Long-polls are capped where the hosted service caps them (official-cli-wire.md §3 rows 8, 10, 16).
MAX_EXECUTION_WAIT_S = 300.0
MAX_GET_WAIT_MS = 60_000
MAX_STATUS_WAIT_MS = 300_000

_dumps = functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False)


def ok(data=None, *, status: int = 200, top: dict | None = None) -> web.Response:
    """The success envelope: ``{success: true, data?, ...top-level extras}`` (pause, fs rm/rmdir
    and execute put fields next to ``success``; wire doc §2.2)."""
    body = {"success": True}
    if data is not None:
        body["data"] = data
    for k, v in (top or {}).items():
        if v is not None:
            body[k] = v
    return web.json_response(body, status=status, dumps=_dumps)


def bare(obj, *, status: int = 200) -> web.Response:
    """A JSON body without the envelope (stream service answers)."""
    return web.json_response(obj, status=status, dumps=_dumps)


def engine(request: web.Request):
    return request.app[ENGINE]


def org(request: web.Request) -> str:
    return request[ORG_ID]


async def call(request: web.Request, fn, *args, **kwargs):
    """Run a synchronous engine call in the short-call thread pool, so a slow engine call (a
    create, a freeze) never stalls the event loop that serves every other request."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[POOL], functools.partial(fn, *args, **kwargs))


async def call_wait(request: web.Request, fn, *args, **kwargs):
    """Run a blocking long-poll engine call in the pool sized for them (hundreds of waiters)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[WAIT_POOL], functools.partial(fn, *args, **kwargs))


async def json_body(request: web.Request, *, required: bool = False) -> dict:
    """The request's JSON object; ``{}`` for a bodiless request (the official CLI sends
    Content-Length 0 on pause, resume and restore), 400 for malformed JSON or a non-object."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ValidationError("Request body is required: send a JSON object")
        return {}
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValidationError(f"Malformed JSON body: {e}") from None
    if not isinstance(obj, dict):
        raise ValidationError("Request body must be a JSON object")
    return obj


def field(body: dict, key: str, kind, *, required: bool = False, default=None, what: str | None = None):
    """``body[key]`` checked against ``kind`` (a type or tuple of types); bool is never an int."""
    name = what or key
    if key not in body or body[key] is None:
        if required:
            raise ValidationError(f"Missing required field '{name}'")
        return default
    value = body[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ValidationError(f"Invalid field '{name}': wrong type")
    if not isinstance(value, kinds):
        raise ValidationError(f"Invalid field '{name}': wrong type")
    return value


def str_list(body: dict, key: str, *, required: bool = False, nonempty: bool = False) -> list[str] | None:
    value = field(body, key, list, required=required)
    if value is None:
        return None
    if not all(isinstance(a, str) for a in value):
        raise ValidationError(f"Invalid field '{key}': must be a list of strings")
    if nonempty and not value:
        raise ValidationError(f"Invalid field '{key}': must not be empty")
    return value


def q_int(request: web.Request, name: str, default=None, *, lo: int | None = None, hi: int | None = None):
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"Invalid query parameter '{name}': '{raw}' is not an integer") from None
    if lo is not None and value < lo:
        raise ValidationError(f"Invalid query parameter '{name}': must be at least {lo}")
    if hi is not None and value > hi:
        raise ValidationError(f"Invalid query parameter '{name}': must be at most {hi}")
    return value


def q_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValidationError(f"Invalid query parameter '{name}': '{raw}' is not a boolean")


def q_choice(request: web.Request, name: str, choices, default=None):
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ValidationError(f"Invalid query parameter '{name}': '{raw}' is not one of {', '.join(choices)}")
    return raw


def q_str(request: web.Request, name: str, default=None, *, max_len: int = 1024):
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > max_len or "\0" in raw:
        raise ValidationError(f"Invalid query parameter '{name}'")
    return raw


def q_list(request: web.Request, name: str) -> list[str] | None:
    """A comma-separated list (``waitForStatus=idle,running``); repeated parameters also count."""
    values = request.query.getall(name, [])
    items = [s.strip() for v in values for s in v.split(",") if s.strip()]
    return items or None


def q_duration_s(request: web.Request, name: str, cap: float) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    seconds = parse_duration(raw, f"query parameter '{name}'")
    return min(seconds, cap)


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not value or len(value) > 256 or "\0" in value:
        raise ValidationError(f"Invalid {name}")
    return value


async def read_limited(request: web.Request, out, limit: int) -> int:
    """Copy the raw request body (chunked or not) into ``out``; 413 past ``limit`` bytes."""
    total = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")
        out.write(chunk)
    return total
