"""Status sets and the lifecycle rules (reference/hosted-api.md §3.1-§3.3)."""
from __future__ import annotations

from .errors import InvalidState, SandboxTerminated

SANDBOX_STATUSES = ("creating", "idle", "running", "paused", "stopping", "suspended",
                    "terminated", "failed", "deleted")
LIST_FILTER_STATUSES = ("creating", "idle", "running", "paused", "stopping", "suspended",
                        "terminated", "failed")
SANDBOX_LIVE = frozenset({"creating", "idle", "running", "paused", "suspended"})
SANDBOX_GONE = frozenset({"stopping", "terminated", "failed", "deleted"})
SANDBOX_PAUSED = frozenset({"paused", "suspended"})

EXECUTION_STATUSES = ("queued", "running", "completed", "failed", "timeout", "cancelled")
EXECUTION_TERMINAL = frozenset({"completed", "failed", "timeout", "cancelled"})

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
JOB_TERMINAL = frozenset({"completed", "failed", "cancelled"})

MODES = ("oneshot", "interactive")

# Exit code an execution reports when it has none of its own (hosted client fallback).
FALLBACK_EXIT = {"completed": 0, "timeout": 124, "failed": 1, "cancelled": 1}

_TRANSITIONS = {
    "pause": ({"idle", "running"}, "suspended"),
    "resume": ({"suspended", "paused"}, "idle"),
}


def check_transition(sandbox_id: str, status: str, action: str) -> str:
    """Return the status ``action`` leads to from ``status``; raise the hosted 409 error otherwise."""
    if status in SANDBOX_GONE:
        raise SandboxTerminated(sandbox_id, status)
    allowed, target = _TRANSITIONS[action]
    if status not in allowed:
        if action == "pause":
            raise InvalidState(f"Sandbox {sandbox_id} cannot be paused: it is {status}")
        raise InvalidState(f"Sandbox {sandbox_id} cannot be resumed: it is {status}, not suspended")
    return target


def require_live(sandbox_id: str, status: str) -> None:
    if status in SANDBOX_GONE:
        raise SandboxTerminated(sandbox_id, status)


def execution_exit_code(status: str, exit_code):
    if exit_code is not None:
        return exit_code
    return FALLBACK_EXIT.get(status)
