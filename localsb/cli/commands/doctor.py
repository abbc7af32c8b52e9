"""`localsb doctor`: what the backend can do on this machine (storage driver, cgroups, ...)."""
from __future__ import annotations

from ..tree import command


def register(sub):
    command(sub, "doctor", help="Check what this machine and backend support", handler=doctor, dry_run=True,
            examples=["localsb doctor", "localsb doctor --json", "localsb doctor --backend cloud"])


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def doctor(ctx):
    out = ctx.out
    report = ctx.backend.doctor()
    if out.json_mode:
        out.json(report)
        return 0
    out.vertical([(str(k), _text(v)) for k, v in report.items()])
    return 0
