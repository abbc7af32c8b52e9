"""cgroup v1 mechanisms: limits, the legacy freezer and the kill loop, by control file.

Each function takes the absolute directory of one v1 cgroup. Used for every capability the
unified hierarchy cannot give on this host (on a hybrid host: all limits; see driver.py).
"""
from __future__ import annotations

import os
import signal
import time

from localsb.api.errors import HostError

from . import files

CFS_PERIOD_US = 100000

# What a sandbox may open: null, zero, full, random, urandom, tty, console, ptmx and the pts
# slaves of its own devpts instance. Everything else (disks, kvm, mem) is refused by the kernel
# even to a process that could mknod or bind-mount it.
DEVICE_ALLOWLIST = (
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
)


def set_memory_limit(d: str, limit_bytes: int) -> None:
    """Write `memory.limit_in_bytes` and, where swap accounting exists, `memory.memsw.limit_in_bytes`.

    Without the memsw limit a process could page out past its limit when the host has swap. The
    memsw value must never be below the memory limit, so it is written second (a fresh cgroup's
    memsw is unlimited).
    """
    files.write_or_raise(os.path.join(d, "memory.limit_in_bytes"), str(limit_bytes),
                         "set the memory limit")
    memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
    try:
        files.write(memsw, str(limit_bytes))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"cannot set the memory+swap limit: writing {limit_bytes} to {memsw} "
                        f"failed: {os.strerror(e.errno)}") from e


def set_cpu_quota(d: str, millicores: int) -> None:
    """Write `cpu.cfs_period_us` = 100000 and `cpu.cfs_quota_us` = millicores * 100."""
    files.write_or_raise(os.path.join(d, "cpu.cfs_period_us"), str(CFS_PERIOD_US),
                         "set the cpu period")
    files.write_or_raise(os.path.join(d, "cpu.cfs_quota_us"), str(millicores * CFS_PERIOD_US // 1000),
                         "set the cpu quota")


def set_pids_max(d: str, n: int) -> None:
    """Write `pids.max`."""
    files.write_or_raise(os.path.join(d, "pids.max"), str(n), "set the pids limit")


def set_devices_allowlist(d: str) -> None:
    """Write `a` to `devices.deny`, then each entry of DEVICE_ALLOWLIST to `devices.allow`."""
    files.write_or_raise(os.path.join(d, "devices.deny"), "a", "deny all devices")
    allow = os.path.join(d, "devices.allow")
    for entry in DEVICE_ALLOWLIST:
        files.write_or_raise(allow, entry, "allow a device")


def freezer_state(d: str) -> str:
    """Read `freezer.state` (THAWED, FREEZING or FROZEN)."""
    return files.read(os.path.join(d, "freezer.state")).strip()


def freeze(d: str, timeout: float) -> None:
    """Write FROZEN to `freezer.state` and wait until it reads FROZEN; thaw and raise on timeout."""
    path = os.path.join(d, "freezer.state")
    files.write_or_raise(path, "FROZEN", "freeze the sandbox")
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        if files.read(path).strip() == "FROZEN":
            return
        if time.monotonic() >= deadline:
            try:
                files.write(path, "THAWED")
            except OSError:
                pass
            raise HostError(f"cannot freeze the sandbox: {path} did not reach FROZEN within "
                            f"{timeout:g}s (thawed it again)")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def thaw(d: str) -> None:
    """Write THAWED to `freezer.state`."""
    files.write_or_raise(os.path.join(d, "freezer.state"), "THAWED", "thaw the sandbox")


def kill_loop(track_dir: str, freezer_dir: str | None, timeout: float) -> bool:
    """SIGKILL every pid in `cgroup.procs` (recursively) until none is left.

    With a v1 freezer the round is freeze → SIGKILL all → thaw, so nothing can fork between
    reading the list and the kill (and v1-frozen tasks die only once THAWED). Without one the
    round is repeated until the list stays empty. Returns False on timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        pids = files.list_pids(track_dir)
        if not pids:
            return True
        frozen = False
        if freezer_dir:
            try:
                freeze(freezer_dir, max(0.05, min(0.5, deadline - time.monotonic())))
                frozen = True
            except HostError:
                pass     # kill anyway: a half-frozen group still dies once thawed
            pids = files.list_pids(track_dir)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if freezer_dir and frozen:
            try:
                files.write(os.path.join(freezer_dir, "freezer.state"), "THAWED")
            except OSError:
                pass     # the cgroup vanished: its tasks are gone with it
        if time.monotonic() >= deadline:
            return not files.list_pids(track_dir)
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def memory_stats(d: str) -> dict:
    """Read `memory.usage_in_bytes`, `memory.max_usage_in_bytes` and `oom_kill` of `memory.oom_control`."""
    return {
        "memory_bytes": files.read_int(os.path.join(d, "memory.usage_in_bytes")),
        "memory_peak": files.read_int(os.path.join(d, "memory.max_usage_in_bytes")),
        "oom_kills": files.read_keyed(os.path.join(d, "memory.oom_control")).get("oom_kill", 0),
    }


def cpu_usage_usec(cpuacct_dir: str) -> int:
    """Read `cpuacct.usage` (nanoseconds) as microseconds."""
    return files.read_int(os.path.join(cpuacct_dir, "cpuacct.usage")) // 1000
