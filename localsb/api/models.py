"""Wire models: the hosted JSON shapes (reference/hosted-api.md §3) and the create specification.

Results cross every layer as plain dicts with exactly the hosted keys (camelCase); keys whose
value is undefined are omitted, as the hosted CLI omits them. The create specification
(``CreateSpec``, ``FileSpec``) is in specs.py. Every command imports this module: it keeps to
modules that load fast (no dataclasses, datetime or hashlib at import).
"""
from __future__ import annotations

import math
import os
import re
import time

from .errors import ValidationError

PREFIX = {
    "sandbox": "sbx_", "snapshot": "snp_", "checkpoint": "ckpt_", "runtime": "srt_",
    "job": "job_", "execution": "exec_", "event": "evt_", "org": "org_", "stream": "strm_",
    "key": "key_",
}
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id(kind: str, n: int = 12) -> str:
    """PREFIX + n characters of [0-9a-z] from the kernel's CSPRNG (uniform: bytes >= 252 are
    dropped, 252 = 7 * 36)."""
    out = []
    while len(out) < n:
        out.extend(_ALPHABET[b % 36] for b in os.urandom(n * 2) if b < 252)
    return PREFIX[kind] + "".join(out[:n])


def now_iso(ts: float | None = None) -> str:
    """RFC 3339 with milliseconds and Z, as the hosted API writes times."""
    ts = time.time() if ts is None else ts
    frac, sec = math.modf(ts)              # rounded to the microsecond as datetime.fromtimestamp does
    us = round(frac * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(sec))) + f".{us // 1000:03d}Z"


def parse_iso(text: str) -> float:
    import datetime as _dt
    try:
        t = text.strip()
        if t.endswith("Z"):
            t = t[:-1] + "+00:00"
        d = _dt.datetime.fromisoformat(t)
        if d.tzinfo is None:
            d = d.replace(tzinfo=_dt.timezone.utc)
        return d.timestamp()
    except (ValueError, AttributeError):
        raise ValidationError(f"Invalid time '{text}': expected ISO 8601 like 2026-04-01T00:00:00Z") from None


def omit_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


SNAPSHOT_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
SNAPSHOT_TAG_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$")
SNAPSHOT_TAG_SET_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]*$")
TAG_ERROR = ("Invalid snapshot tag: must only contain letters, numbers, dashes, underscores, and "
             "dots, and cannot start with a period or dash")
NAME_ERROR = "Invalid snapshot name: must only contain letters, numbers, underscores, and dashes"
APT_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:*-]+)?$")
NPM_PACKAGE_RE = re.compile(r"^[^\s;`|$]+$")


def validate_tag(tag: str, for_tag_command: bool = False) -> str:
    if len(tag) > 128:
        raise ValidationError("Invalid snapshot tag: must be at most 128 characters")
    rx = SNAPSHOT_TAG_SET_RE if for_tag_command else SNAPSHOT_TAG_RE
    if not rx.match(tag):
        raise ValidationError(TAG_ERROR)
    return tag


def validate_snapshot_name(name: str) -> str:
    if not SNAPSHOT_NAME_RE.match(name):
        raise ValidationError(NAME_ERROR)
    return name
