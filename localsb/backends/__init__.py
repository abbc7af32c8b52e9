"""Backends the CLI can drive, made on demand so a command imports only the one it uses.

``local``: the engine in this process, on the state directory ($LOCALSB_HOME).
``cloud``: the HTTP client of the hosted API (mockcloud or the real service), configured from the
official CLI's environment variables (AGENTUITY_API_URL, AGENTUITY_CATALYST_URL, ...).
"""
from __future__ import annotations

import os


def state_dir(env=None) -> str:
    """$LOCALSB_HOME, else /var/lib/localsb for root, else the user's XDG data directory."""
    env = os.environ if env is None else env
    if env.get("LOCALSB_HOME"):
        return env["LOCALSB_HOME"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/localsb"
    data = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                     ".local", "share")
    return os.path.join(data, "localsb")


def get_backend(name: str = "local", env=None, *, org_id: str | None = None):
    """Return a Backend for ``name`` ('local' or 'cloud'); imports happen only here."""
    env = os.environ if env is None else env
    if name == "local":
        from localsb.backends.local import LocalBackend
        return LocalBackend(state_dir(env))
    if name == "cloud":
        from localsb.backends.cloud import CloudBackend
        return CloudBackend.from_env(env, org_id=org_id)
    from localsb.api.errors import ValidationError
    raise ValidationError(f"Invalid backend '{name}': expected local or cloud")
