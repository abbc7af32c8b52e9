"""The runtime catalogue (hosted names, reference/hosted-api.md §3.7) and how each image is built.

``base`` is the host's /usr under a writable overlay with an /etc of the sandbox's own: offline and
instant. Every other runtime is an image built once from the package registries (images.py):
a Debian root from debootstrap (``suite``), or a copy-on-write snapshot of another image
(``from``) plus apt packages and/or a binary from the npm registry. Images derived from the same
base share its blocks.

Versions (what the registries served when this was written; ``runtime build`` reports the real
one): debian:12 bookworm 12.x; python:3.11 3.11.2; python:3.14 3.14.x and node:lts Node 24.x,
both from Debian sid (the only Debian suite with Python 3.14, and the one whose nodejs is the
current LTS line); node:20 Node 20.19 from Debian 13 (trixie); bun:1 the newest 1.x of
@oven/bun-linux-x64 on Debian 12.
"""
from __future__ import annotations

from localsb.api import errors as E


def _rid(name: str) -> str:
    # sha256 without hashlib's OpenSSL binding (2 ms of every CLI start): the builtin module
    try:
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - a Python built without it
        from hashlib import sha256
    return "srt_" + sha256(name.encode()).hexdigest()[:12]


CATALOGUE = [
    {"name": "base", "description": "Host userland (read-only /usr under a writable layer); offline and instant",
     "tags": ["base", "debian", "offline"], "usr_overlay": True, "created": 1},
    {"name": "debian:12", "description": "Debian 12 (bookworm) minimal", "tags": ["debian"], "created": 2,
     "build": {"suite": "bookworm"}, "check": ["cat", "/etc/debian_version"]},
    {"name": "python:3.11", "description": "Python 3.11 on Debian 12", "tags": ["python"], "created": 3,
     "build": {"from": "debian:12", "apt": ["python3", "python3-venv", "python3-pip"]},
     "check": ["python3", "--version"]},
    {"name": "python:3.14", "description": "Python 3.14 on Debian sid", "tags": ["python"], "created": 4,
     # python3 and pip come from sid's default python3; the /usr/local links keep `python3` on 3.14
     # even when sid's default moves on.
     "build": {"from": "debian:sid", "apt": ["python3.14", "python3.14-venv", "python3", "python3-venv",
                                             "python3-pip"],
               "links": {"/usr/local/bin/python3": "/usr/bin/python3.14",
                         "/usr/local/bin/python": "/usr/bin/python3.14"}},
     "check": ["python3", "--version"]},
    {"name": "node:lts", "description": "Node.js LTS (Debian sid's nodejs, 24.x) with npm",
     "tags": ["node", "javascript"], "created": 5,
     "build": {"from": "debian:sid", "apt": ["nodejs", "npm"]}, "check": ["node", "--version"]},
    {"name": "node:20", "description": "Node.js 20 (Debian 13's nodejs) with npm", "tags": ["node", "javascript"],
     "created": 6, "build": {"from": "debian:13", "apt": ["nodejs", "npm"]}, "check": ["node", "--version"]},
    {"name": "bun:1", "description": "Bun 1.x on Debian 12", "tags": ["bun", "javascript", "typescript"],
     "created": 7,
     "build": {"from": "debian:12", "npm_file": {"spec": "@oven/bun-linux-x64@1", "member": "package/bin/bun",
                                                 "dest": "/usr/local/bin/bun"},
               "links": {"/usr/local/bin/bunx": "bun"}},
     "check": ["bun", "--version"]},
    {"name": "debian:13", "description": "Debian 13 (trixie) minimal", "tags": ["debian"], "created": 8,
     "build": {"suite": "trixie"}, "check": ["cat", "/etc/debian_version"]},
]
# Bases other images derive from, not offered as runtimes of their own.
INTERNAL = [
    {"name": "debian:sid", "description": "Debian unstable (sid) minimal", "tags": ["debian"],
     # sid's Release file on a snapshot-style mirror can be past its Valid-Until date
     "build": {"suite": "sid", "check_valid_until": False}, "check": ["cat", "/etc/debian_version"]},
]
for _r in CATALOGUE + INTERNAL:
    _r["id"] = _rid(_r["name"])
BY_NAME = {r["name"]: r for r in CATALOGUE}
BY_ID = {r["id"]: r for r in CATALOGUE}
RECIPES = {r["name"]: r for r in CATALOGUE + INTERNAL}
DEFAULT = "base"
# `--dependency` without `--runtime`: apt cannot install into base (it shares the host's /usr and
# has no dpkg database of its own), so the sandbox gets plain Debian 12 instead.
DEFAULT_WITH_DEPENDENCIES = "debian:12"


def resolve(name: str | None = None, runtime_id: str | None = None) -> dict:
    if runtime_id:
        r = BY_ID.get(runtime_id)
        if r is None:
            raise E.RuntimeNotFound(runtime_id)
        return r
    r = BY_NAME.get(name or DEFAULT)
    if r is None:
        raise E.RuntimeNotFound(name)
    return r


def resolve_ref(ref: str) -> dict:
    """A runtime by name (python:3.14) or id (srt_...)."""
    return resolve(runtime_id=ref) if ref.startswith("srt_") else resolve(ref)


def require_buildable(r: dict) -> None:
    if r["name"] != "base" and "build" not in r:
        raise E.NotAvailableYet(f"Runtime {r['name']} has no image recipe in this localsb")


def check_dependencies(r: dict, packages) -> list[str]:
    """The sorted, de-duplicated apt package set for a runtime; the error for ``base``."""
    from localsb.api.models import APT_PACKAGE_RE
    pkgs = sorted(set(packages or []))
    for p in pkgs:
        if not isinstance(p, str) or not APT_PACKAGE_RE.match(p):
            raise E.ValidationError(f"Invalid apt package name: {p!r}")
    if pkgs and r.get("usr_overlay"):
        raise E.ValidationError(
            f"Dependencies need a Debian-based runtime: '{r['name']}' shares the host's /usr, which apt "
            f"cannot install into. Use --runtime {DEFAULT_WITH_DEPENDENCIES} (or python:3.11, node:lts, bun:1, ...)")
    return pkgs


def chain(name: str) -> list[dict]:
    """The recipes from the debootstrapped root to ``name``: [debian:12, python:3.11]."""
    out = []
    while True:
        r = RECIPES.get(name)
        if r is None or "build" not in r:
            raise E.RuntimeNotFound(name)
        out.insert(0, r)
        parent = r["build"].get("from")
        if not parent:
            return out
        name = parent


def wire(r: dict, built: bool) -> dict:
    return {"id": r["id"], "name": r["name"], "description": r["description"], "tags": r["tags"],
            "requirements": {"networkEnabled": False}, "built": built}
