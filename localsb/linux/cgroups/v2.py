"""cgroup v2 mechanisms: core files (freeze, kill, events, cpu.stat) and, where the own cgroup
offers the controllers, limits.

Each function takes the absolute directory of one cgroup in the unified hierarchy.
"""
from __future__ import annotations

import errno
import os

from localsb.api.errors import HostError, LimitNotEnforceable

from . import files

CPU_PERIOD_US = 100000


def enable_controllers(parent: str, controllers: list[str]) -> None:
    """Write `+ctrl ...` to the parent's `cgroup.subtree_control` so its children get them.

    This fails with EBUSY when the parent holds processes itself and is not the root (the
    "no internal processes" rule): the caller then has to run from a delegated cgroup.
    """
    path = os.path.join(parent, "cgroup.subtree_control")
    try:
        have = set(files.read(path).split())
    except OSError:
        have = set()
    missing = [c for c in controllers if c not in have]
    if not missing:
        return
    try:
        files.write(path, " ".join("+" + c for c in missing))
    except OSError as e:
        raise LimitNotEnforceable(
            f"cannot enable the cgroup v2 controllers {', '.join(missing)} in {path}: "
            f"{os.strerror(e.errno)}; run localsb from a cgroup with delegated controllers "
            "(e.g. systemd-run --scope -p Delegate=yes)") from e


def set_memory_max(d: str, limit_bytes: int) -> None:
    """Write `memory.max`, and 0 to `memory.swap.max` so the limit cannot be dodged by swapping."""
    files.write_or_raise(os.path.join(d, "memory.max"), str(limit_bytes), "set the memory limit")
    try:
        files.write(os.path.join(d, "memory.swap.max"), "0")
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"cannot set memory.swap.max in {d}: {os.strerror(e.errno)}") from e


def set_cpu_max(d: str, millicores: int) -> None:
    """Write `cpu.max` as "<millicores*100> 100000"."""
    files.write_or_raise(os.path.join(d, "cpu.max"),
                         f"{millicores * CPU_PERIOD_US // 1000} {CPU_PERIOD_US}", "set the cpu limit")


def set_pids_max(d: str, n: int) -> None:
    """Write `pids.max`."""
    files.write_or_raise(os.path.join(d, "pids.max"), str(n), "set the pids limit")


def freeze(d: str, timeout: float) -> None:
    """Write `cgroup.freeze` 1 and wait for `frozen 1` in `cgroup.events`; thaw and raise on timeout."""
    path = os.path.join(d, "cgroup.freeze")
    files.write_or_raise(path, "1", "freeze the sandbox")
    if files.wait_keyed(os.path.join(d, "cgroup.events"), "frozen", 1, timeout):
        return
    try:
        files.write(path, "0")
    except OSError:
        pass
    raise HostError(f"cannot freeze the sandbox: {d}/cgroup.events did not show 'frozen 1' "
                    f"within {timeout:g}s (thawed it again)")


def thaw(d: str) -> None:
    """Write `cgroup.freeze` 0."""
    files.write_or_raise(os.path.join(d, "cgroup.freeze"), "0", "thaw the sandbox")


def is_frozen(d: str) -> bool:
    """Read `frozen` in `cgroup.events` (the effective state, parents included)."""
    return files.read_keyed(os.path.join(d, "cgroup.events")).get("frozen", 0) == 1


def populated(d: str) -> bool:
    """Read `populated` in `cgroup.events` (this cgroup or any descendant holds a process)."""
    return files.read_keyed(os.path.join(d, "cgroup.events")).get("populated", 0) == 1


def kill(d: str, timeout: float) -> bool:
    """Write `cgroup.kill` 1 (SIGKILL to the whole subtree, frozen or not) and wait for
    `populated 0` in `cgroup.events`. A missing cgroup counts as empty. False on timeout."""
    try:
        files.write(os.path.join(d, "cgroup.kill"), "1")
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV):
            return True
        raise HostError(f"cannot kill the processes of {d}: {os.strerror(e.errno)}") from e
    return files.wait_keyed(os.path.join(d, "cgroup.events"), "populated", 0, timeout)


def cpu_usage_usec(d: str) -> int:
    """Read `usage_usec` of the core `cpu.stat` (present without the cpu controller)."""
    return files.read_keyed(os.path.join(d, "cpu.stat")).get("usage_usec", 0)


def memory_stats(d: str) -> dict:
    """Read `memory.current`, `memory.peak` and `oom_kill` of `memory.events`."""
    return {
        "memory_bytes": files.read_int(os.path.join(d, "memory.current")),
        "memory_peak": files.read_int(os.path.join(d, "memory.peak")),
        "oom_kills": files.read_keyed(os.path.join(d, "memory.events")).get("oom_kill", 0),
    }
