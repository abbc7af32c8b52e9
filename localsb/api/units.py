"""Parsing of the units the command set speaks: sizes, CPU millicores, durations, KEY=VALUE, --file.

Every parser raises ``ValidationError`` with a one-line message that names the bad value.
"""
from __future__ import annotations

import re

from .errors import ValidationError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]i?|[kmgtpe]i?|B|b)?\s*$")
_SIZE_MULT = {
    None: 1, "B": 1, "b": 1,
    "K": 1000, "k": 1000, "M": 1000**2, "m": 1000**2, "G": 1000**3, "g": 1000**3,
    "T": 1000**4, "t": 1000**4, "P": 1000**5, "E": 1000**6,
    "Ki": 1024, "ki": 1024, "Mi": 1024**2, "mi": 1024**2, "Gi": 1024**3, "gi": 1024**3,
    "Ti": 1024**4, "ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6,
}


def parse_size(text: str, what: str = "size") -> int:
    """'512Mi' -> 536870912; '1G' -> 10**9; '1024' -> 1024 bytes (Kubernetes quantity rules)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValidationError(
            f"Invalid {what} '{text}': expected a size like 512Mi, 1Gi, 100M or a number of bytes")
    value = float(m.group(1)) * _SIZE_MULT[m.group(2)]
    if value < 1:
        raise ValidationError(f"Invalid {what} '{text}': must be greater than zero")
    return int(value)


_CPU_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m?)\s*$")


def parse_cpu(text: str) -> int:
    """'500m' -> 500 millicores; '1' or '1.5' -> 1000 or 1500 millicores."""
    m = _CPU_RE.match(str(text))
    if not m:
        raise ValidationError(
            f"Invalid cpu '{text}': expected millicores like 500m, 1000m, or cores like 1, 0.5")
    value = float(m.group(1)) if m.group(2) else float(m.group(1)) * 1000
    if value < 1:
        raise ValidationError(f"Invalid cpu '{text}': must be at least 1m")
    return int(value)


# The official CLI's own check for --timeout values (reference/hosted-api.md §4.3 exec).
DURATION_RE = re.compile(r"^(?:0|(\d+(\.\d+)?(ns|us|[µμ]s|ms|s|m|h))+)$")
_DUR_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|[µμ]s|ms|s|m|h)")
_DUR_MULT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str, what: str = "duration") -> float:
    """Go-style duration: '30s', '5m', '1h30m', '300ms', '0' -> seconds (float)."""
    s = str(text).strip()
    if not DURATION_RE.match(s):
        if what == "timeout":
            raise ValidationError(
                f"Invalid timeout format '{text}': expected duration like '5s', '1m', '1h', '300ms'")
        raise ValidationError(
            f"Invalid {what} '{text}': expected a duration like '30s', '5m', '1h', '300ms'")
    if s == "0":
        return 0.0
    return sum(float(n) * _DUR_MULT[u] for n, u in _DUR_PART.findall(s))


def format_go_duration(seconds: float) -> str:
    """Seconds -> Go's time.Duration.String() form ('10m0s', '1h0m0s', '500ms'), as hosted echoes."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    total = int(seconds)
    frac = seconds - total
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    sec = f"{s + frac:g}s"
    if h:
        return f"{h}h{m}m{sec}"
    if m:
        return f"{m}m{sec}"
    return sec


_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_pair(spec: str, message: str | None = None) -> tuple[str, str]:
    """'KEY=VALUE' -> (KEY, VALUE); split on the first '='; the value may contain '='."""
    if "=" not in spec:
        raise ValidationError(message or f"Invalid environment variable format: {spec}. Use KEY=VALUE format.")
    key, value = spec.split("=", 1)
    if not key or not _ENV_KEY_RE.match(key):
        raise ValidationError(message or f"Invalid environment variable format: {spec}. Use KEY=VALUE format.")
    return key, value


def parse_env_list(specs) -> dict[str, str]:
    env: dict[str, str] = {}
    for spec in specs or ():
        k, v = parse_env_pair(spec)
        env[k] = v
    return env


def parse_file_spec(spec: str) -> tuple[str, str]:
    """'--file sandbox-path:local-path' -> (sandbox_path, local_path); a bare name means name:./name."""
    if ":" not in spec:
        if not spec:
            raise ValidationError(f'Invalid --file format: "{spec}". Sandbox path cannot be empty')
        return spec, "./" + spec if not spec.startswith(("/", ".")) else spec
    sandbox_path, local_path = spec.split(":", 1)
    if not sandbox_path:
        raise ValidationError(f'Invalid --file format: "{spec}". Sandbox path cannot be empty')
    if not local_path:
        raise ValidationError(f'Invalid --file format: "{spec}". Local path cannot be empty')
    return sandbox_path, local_path


def parse_port(value) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"Invalid port '{value}': must be an integer between 1024 and 65535") from None
    if not 1024 <= port <= 65535:
        raise ValidationError(f"Invalid port {port}: must be between 1024 and 65535")
    return port
