"""Settings the CLI takes from its (injected) environment and working directory.

One place decides which backend, which state directory, which org and which project a command
uses, so that handlers never read ``os.environ`` themselves and tests can inject everything.
"""
from __future__ import annotations

import os

BACKENDS = ("local", "cloud")
DEFAULT_BACKEND = "local"


def backend_name(args_value: str | None, env) -> str:
    """--backend, else $LOCALSB_BACKEND, else local."""
    name = args_value or env.get("LOCALSB_BACKEND") or DEFAULT_BACKEND
    if name not in BACKENDS:
        from localsb.api.errors import ValidationError
        raise ValidationError(f"Invalid backend '{name}': expected one of {', '.join(BACKENDS)} "
                              f"(from --backend or LOCALSB_BACKEND)")
    return name


def org_id(args_value: str | None, env) -> str | None:
    """--org-id, else $AGENTUITY_CLOUD_ORG_ID (the official CLI's order)."""
    return args_value or env.get("AGENTUITY_CLOUD_ORG_ID") or None


def project_id(args_value: str | None, env, cwd: str | None = None) -> str | None:
    """--project-id, else $AGENTUITY_CLOUD_PROJECT_ID, else projectId of ./agentuity.json.

    The official CLI's run, create and list pick up the current project the same way.
    """
    if args_value:
        return args_value
    if env.get("AGENTUITY_CLOUD_PROJECT_ID"):
        return env["AGENTUITY_CLOUD_PROJECT_ID"]
    path = os.path.join(cwd or os.getcwd(), "agentuity.json")
    try:
        with open(path, "rb") as fh:
            import json
            data = json.loads(fh.read() or b"{}")
    except (OSError, ValueError):
        return None
    value = data.get("projectId") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None
