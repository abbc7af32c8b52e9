"""Typed keys for what mockcloud keeps on the application and on each request (aiohttp AppKey /
RequestKey), so that every module reads the same slot by the same name."""
from __future__ import annotations

import concurrent.futures

from aiohttp import web

STATE_DIR = web.AppKey("state_dir", str)
STORE = web.AppKey("store", object)
ENGINE = web.AppKey("engine", object)
POOL = web.AppKey("pool", concurrent.futures.ThreadPoolExecutor)
WAIT_POOL = web.AppKey("wait_pool", concurrent.futures.ThreadPoolExecutor)
OPENAPI = web.AppKey("openapi", dict)

# RequestKey arrived in aiohttp 3.12; older versions take plain string keys.
_RequestKey = getattr(web, "RequestKey", None)
ORG_ID = _RequestKey("org_id", str) if _RequestKey else "org_id"
ORG_NAME = _RequestKey("org_name", str) if _RequestKey else "org_name"
