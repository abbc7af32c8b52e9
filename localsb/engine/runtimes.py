"""The runtime catalogue (hosted names, reference/hosted-api.md §3.7) and image preparation.

``base`` is the host's /usr under a writable overlay with an /etc of the sandbox's own: offline and
instant. Other runtimes are images built from the package registries (issue: runtimes).
"""
from __future__ import annotations

import hashlib

from localsb.api.errors import NotAvailableYet, RuntimeNotFound


def _rid(name: str) -> str:
    return "srt_" + hashlib.sha256(name.encode()).hexdigest()[:12]


CATALOGUE = [
    {"name": "base", "description": "Host userland (read-only /usr under a writable layer); offline and instant",
     "tags": ["base", "debian", "offline"], "usr_overlay": True, "created": 1},
    {"name": "debian:12", "description": "Debian 12 (bookworm) minimal", "tags": ["debian"], "created": 2},
    {"name": "python:3.11", "description": "Python 3.11 on Debian 12", "tags": ["python"], "created": 3},
    {"name": "python:3.14", "description": "Python 3.14 on Debian sid", "tags": ["python"], "created": 4},
    {"name": "node:lts", "description": "Node.js LTS on Debian", "tags": ["node", "javascript"], "created": 5},
    {"name": "node:20", "description": "Node.js 20 on Debian", "tags": ["node", "javascript"], "created": 6},
    {"name": "bun:1", "description": "Bun 1.x on Debian 12", "tags": ["bun", "javascript", "typescript"], "created": 7},
]
for _r in CATALOGUE:
    _r["id"] = _rid(_r["name"])
BY_NAME = {r["name"]: r for r in CATALOGUE}
BY_ID = {r["id"]: r for r in CATALOGUE}
DEFAULT = "base"


def resolve(name: str | None = None, runtime_id: str | None = None) -> dict:
    if runtime_id:
        r = BY_ID.get(runtime_id)
        if r is None:
            raise RuntimeNotFound(runtime_id)
        return r
    r = BY_NAME.get(name or DEFAULT)
    if r is None:
        raise RuntimeNotFound(name)
    return r


def require_buildable(r: dict) -> None:
    if r["name"] != "base":
        raise NotAvailableYet(
            f"Runtime {r['name']} is not available yet in localsb: only 'base' can be used "
            f"(runtime images are a planned feature)")


def wire(r: dict, built: bool) -> dict:
    return {"id": r["id"], "name": r["name"], "description": r["description"], "tags": r["tags"],
            "requirements": {"networkEnabled": False}, "built": built}
