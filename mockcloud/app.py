"""The aiohttp application: routes, auth, and the one place where errors become HTTP.

``make_app(state_dir)`` builds the app on an Engine whose state lives in ``<state_dir>/engine``
(or ``engine_state``). ``serve()`` runs it until SIGINT/SIGTERM. Live sandboxes do not depend on
this process: they have their own supervisors in the engine, so they keep running while
mockcloud restarts.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import logging
import os
import signal
import sys

from aiohttp import web

from localsb.api import errors as E

from .appkeys import ENGINE, OPENAPI, POOL, STATE_DIR, STORE, WAIT_POOL
from . import routes
from .auth import auth_middleware
from .openapi import build_spec
from .store import Store
from .streams import sweep_stdin

log = logging.getLogger("mockcloud")

# Request bodies read whole (JSON) are bounded here; raw uploads stream with their own limits.
JSON_BODY_LIMIT = 64 << 20
# Engine calls: short ones share a pool; long-polls (execution ?wait=, waitForStatus) park a thread
# each for up to 5 minutes, so they get a pool of their own that cannot starve the short calls.
POOL_THREADS = 32
WAIT_POOL_THREADS = 512
# Test facility, not a user option: "module:callable" building the engine from a state dir.
ENGINE_ENV = "MOCKCLOUD_ENGINE"


def status_for(err: E.LocalsbError) -> int:
    """The hosted HTTP status of an error class."""
    if isinstance(err, E.NotFound):
        return 404
    if isinstance(err, E.Unauthorized):
        return 401
    if isinstance(err, E.Forbidden):
        return 403
    if isinstance(err, E.SandboxTerminated):
        # not 409: the official CLI retries 409 and then reports "busy", hiding the real reason
        return 410
    if isinstance(err, E.Conflict):
        return 409
    if isinstance(err, E.ValidationError):
        return 400
    if isinstance(err, E.PayloadTooLarge):
        return 413
    if isinstance(err, (E.NotAvailableYet, E.LimitNotEnforceable)):
        # the request is understood but cannot be honoured on this host: a client error, not
        # a 5xx that clients retry
        return 422
    if isinstance(err, E.NotSupported):
        return 501
    return 500


def error_response(status: int, message: str, code: str | None) -> web.Response:
    body = {"success": False, "message": message}
    if code:
        body["code"] = code
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 400: "INVALID_ARGUMENT",
               411: "LENGTH_REQUIRED", 415: "UNSUPPORTED_MEDIA_TYPE"}


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except E.LocalsbError as e:
        status = status_for(e)
        if status == 500:
            log.error("%s %s: %s: %s", request.method, request.path, type(e).__name__, e)
            return error_response(500, "Internal server error", "INTERNAL_ERROR")
        return error_response(status, e.message, e.code)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 404:
            message = f"Not found: {request.method} {request.path}"
        elif e.status == 405:
            message = f"Method {request.method} is not allowed on {request.path}"
        elif e.status == 413:
            message = f"Request body too large: the limit is {JSON_BODY_LIMIT} bytes"
        else:
            message = e.reason or "Request error"
        return error_response(e.status, message, _HTTP_CODES.get(e.status, "HTTP_ERROR"))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        # The client gets a generic message; the traceback stays in the server's log.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal server error", "INTERNAL_ERROR")


class _BadRequestLog(logging.Filter):
    """aiohttp answers a request it cannot parse (a header over 8190 bytes, a malformed request
    line) with 400 by itself and logs the parser's exception with its traceback: that is the
    client's mistake, not the server's, so it becomes one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            reason = " ".join(str(exc.message or exc).split())
            if len(reason) > 120:
                reason = reason[:117] + "..."
            record.msg, record.args = "bad request from %s answered %s: %s", (remote, exc.code, reason)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_BadRequestLog())


def load_engine(engine_state: str):
    """The engine behind the API: ``localsb.engine.Engine`` unless $MOCKCLOUD_ENGINE names another
    factory (tests use an in-memory fake until a real engine is at hand)."""
    spec = os.environ.get(ENGINE_ENV)
    if spec:
        module, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module), attr or "Engine")
    else:
        from localsb.engine import Engine as factory
    return factory(engine_state)


async def _openapi(request: web.Request) -> web.Response:
    spec = request.app[OPENAPI]
    return web.json_response(spec)


def make_app(state_dir: str, *, engine=None, engine_state: str | None = None) -> web.Application:
    state_dir = os.path.abspath(state_dir)
    store = Store(state_dir)
    if engine is None:
        engine = load_engine(engine_state or os.path.join(state_dir, "engine"))
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=JSON_BODY_LIMIT)
    app[STATE_DIR] = state_dir
    app[STORE] = store
    app[ENGINE] = engine
    app[POOL] = concurrent.futures.ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="mc-engine")
    app[WAIT_POOL] = concurrent.futures.ThreadPoolExecutor(WAIT_POOL_THREADS, thread_name_prefix="mc-wait")
    app[OPENAPI] = build_spec(routes.ROUTES)
    routes.add_routes(app, _openapi)
    sweep_stdin(state_dir)

    async def _cleanup(app_: web.Application) -> None:
        # Parked long-polls must not hold shutdown: their threads end with their waits.
        app_[POOL].shutdown(wait=False, cancel_futures=True)
        app_[WAIT_POOL].shutdown(wait=False, cancel_futures=True)
        close = getattr(app_[ENGINE], "close", None)
        if close is not None:
            close()
        store.close()

    app.on_cleanup.append(_cleanup)
    return app


async def serve_app(app: web.Application, host: str, port: int, access_log: bool = False) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, printing its URL on one line first (port 0: the bound one)."""
    runner = web.AppRunner(app, access_log=log if access_log else None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]  # the port actually bound, for --port 0
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(state_dir: str, host: str = "127.0.0.1", port: int = 8080, *, engine_state: str | None = None,
          access_log: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="mockcloud: %(levelname)s %(message)s")
    app = make_app(state_dir, engine_state=engine_state)
    asyncio.run(serve_app(app, host, port, access_log))
    # Threads parked in long-polls (up to 5 minutes) would hold the interpreter's exit, which joins
    # every pool thread; the engine is closed and live sandboxes belong to their supervisors, so
    # the process can end now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class ThreadedServer:
    """Serve an app on a background thread with its own event loop (tests and benchmarks drive
    mockcloud in-process this way). ``url`` is set once the socket is bound; ``stop()`` ends it."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0):
        import threading
        self.app, self.host, self.port = app, host, port
        self.url: str | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="mockcloud", daemon=True)

    def start(self) -> "ThreadedServer":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        async def main():
            runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True, backlog=1024)
            await site.start()
            self.url = f"http://{self.host}:{runner.addresses[0][1]}"
            self._stop = asyncio.Event()
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        except BaseException as e:  # reported to start() when it happens before the socket is bound
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
