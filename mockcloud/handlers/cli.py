"""The API host's /cli/* calls the official CLI makes before sandbox calls (wire doc §1.1, §3 rows 1-4)."""
from __future__ import annotations

from aiohttp import web

from localsb.api.errors import NotFound, ValidationError
from localsb.api.models import APT_PACKAGE_RE

from ..appkeys import ORG_ID, ORG_NAME
from . import json_body, ok, path_id

# One region, so that the official CLI selects it without a prompt or a flag (wire doc §1.6).
REGIONS = [{"region": "usc", "description": "US Central"}]


async def cli_region(request: web.Request) -> web.Response:
    return ok(REGIONS)


async def cli_organization(request: web.Request) -> web.Response:
    return ok([{"id": request[ORG_ID], "name": request[ORG_NAME]}])


async def cli_project(request: web.Request) -> web.Response:
    """mockcloud has no projects; the CLI ignores a 404 for optional projects (wire doc §1.7)."""
    raise NotFound(f"Project not found: {path_id(request, 'projectId')}")


async def cli_validate_apt(request: web.Request) -> web.Response:
    """Unauthenticated, as hosted. A name is valid when it is a well-formed Debian package name
    (with an optional =version): mockcloud does not consult an archive."""
    body = await json_body(request, required=True)
    packages = body.get("packages")
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise ValidationError("Invalid field 'packages': must be a list of strings")
    valid, invalid = [], []
    for p in packages:
        if APT_PACKAGE_RE.match(p):
            valid.append(p)
        else:
            name = p.split("=", 1)[0]
            invalid.append({"package": p, "error": "invalid package name",
                            "searchUrl": f"https://packages.debian.org/search?keywords={name}"})
    return ok({"valid": valid, "invalid": invalid})
