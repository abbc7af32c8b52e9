"""The accepted ranges of sizes, CPU and timeouts: one table the CLI, the engine and mockcloud share.

The hosted reference gives no numbers (reference/hosted-api.md §2.1 and open question 4), so the
ranges are localsb's own, chosen to reject what cannot work or makes no sense and to accept every
value a real workload asks for:

- memory 16Mi..64Gi: below 16Mi a sandbox's init and shell are killed by the OOM killer before
  they start; 64Gi is above any sandbox a laptop or CI runner can hold.
- cpu 10m..64000m: 10m is the smallest CFS quota the cgroup drivers set (1 ms per 100 ms
  period); 64 cores is the largest machine localsb is meant for.
- disk 16Mi..1Ti: below 16Mi the volume's own metadata fills the quota and nothing can be
  written; 1Ti is above any pool image localsb makes.
- idle and execution timeouts 1s..720h (30 days): a timeout of 0 or under a second ends the
  sandbox or command before it can do anything; the paused timeout takes the same range, or 0
  (``0s``) for "never", as hosted.

The bounds are fixed rather than read from this host: with ``--backend cloud`` the CLI checks a
request on one machine that another machine runs, and both must agree. What the host itself cannot
give (a limit its cgroups cannot enforce) is the engine's to refuse.
"""
from __future__ import annotations

from .errors import ValidationError
from .units import parse_cpu, parse_duration, parse_size

KI, MI, GI, TI = 1024, 1024**2, 1024**3, 1024**4

MEMORY_MIN, MEMORY_MAX = 16 * MI, 64 * GI
CPU_MIN, CPU_MAX = 10, 64000                    # millicores
DISK_MIN, DISK_MAX = 16 * MI, 1 * TI
TIMEOUT_MIN, TIMEOUT_MAX = 1.0, 720 * 3600.0    # seconds

# One line per range, for help texts, the man pages and docs (the CLI's --help shows these).
RANGES = {
    "memory": "16Mi to 64Gi",
    "cpu": "10m to 64000m",
    "disk": "16Mi to 1Ti",
    "timeout": "1s to 720h",
    "paused": "0s (never) or 1s to 720h",
}


def _size_text(n: int) -> str:
    for unit, mult in (("Ti", TI), ("Gi", GI), ("Mi", MI), ("Ki", KI)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n} bytes"


def _negative(text) -> bool:
    return str(text).strip().startswith("-")


def check_memory(text) -> int:
    """'512Mi' -> bytes, within MEMORY_MIN..MEMORY_MAX."""
    return _check_size(text, "memory", MEMORY_MIN, MEMORY_MAX)


def check_disk(text) -> int:
    """'2Gi' -> bytes, within DISK_MIN..DISK_MAX."""
    return _check_size(text, "disk", DISK_MIN, DISK_MAX)


def _check_size(text, what: str, lo: int, hi: int) -> int:
    if _negative(text):
        raise ValidationError(f"Invalid {what} '{text}': must be positive (got a negative size)")
    value = parse_size(text, what)
    if value < lo:
        raise ValidationError(f"Invalid {what} '{text}': must be at least {_size_text(lo)} "
                              f"(range {RANGES[what]})")
    if value > hi:
        raise ValidationError(f"Invalid {what} '{text}': must be at most {_size_text(hi)} "
                              f"(range {RANGES[what]})")
    return value


def check_cpu(text) -> int:
    """'500m' or '0.5' -> millicores, within CPU_MIN..CPU_MAX."""
    if _negative(text):
        raise ValidationError(f"Invalid cpu '{text}': must be positive (got a negative number)")
    value = parse_cpu(text)
    if value < CPU_MIN:
        raise ValidationError(f"Invalid cpu '{text}': must be at least {CPU_MIN}m (range {RANGES['cpu']})")
    if value > CPU_MAX:
        raise ValidationError(f"Invalid cpu '{text}': must be at most {CPU_MAX}m (range {RANGES['cpu']})")
    return value


def check_timeout(text, what: str = "timeout", *, zero_means_never: bool = False) -> float:
    """A duration within TIMEOUT_MIN..TIMEOUT_MAX -> seconds; with ``zero_means_never`` (the
    paused timeout) 0 is accepted and returned as 0.0."""
    if _negative(text):
        raise ValidationError(f"Invalid {what} '{text}': must be positive (got a negative duration)")
    seconds = parse_duration(text, what)
    if seconds == 0 and zero_means_never:
        return 0.0
    bounds = RANGES["paused" if zero_means_never else "timeout"]
    if seconds < TIMEOUT_MIN:
        raise ValidationError(f"Invalid {what} '{text}': must be at least 1s (range {bounds})")
    if seconds > TIMEOUT_MAX:
        raise ValidationError(f"Invalid {what} '{text}': must be at most 720h (range {bounds})")
    return seconds
