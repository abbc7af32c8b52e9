"""Raw reads and writes of cgroupfs control files.

cgroupfs files are small and their writes are commands, so plain os.open/os.write is both the
fastest and the most exact way (one write() per command; buffered file objects may split or merge).
"""
from __future__ import annotations

import errno
import os
import select
import time

from localsb.api.errors import HostError


def write(path: str, data: str) -> None:
    """write(2) one command to a cgroupfs control file; OSError passes through for the caller."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def write_or_raise(path: str, data: str, what: str) -> None:
    """write() and turn a failure into one clear HostError line."""
    try:
        write(path, data)
    except OSError as e:
        raise HostError(f"cannot {what}: writing {data.strip()!r} to {path} failed: "
                        f"{os.strerror(e.errno) if e.errno else e}") from e


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def read_int(path: str, default: int = 0) -> int:
    try:
        s = read(path).strip()
    except OSError:
        return default
    if s == "max":
        return -1
    try:
        return int(s)
    except ValueError:
        return default


def read_keyed(path: str) -> dict[str, int]:
    """Parse a flat-keyed file ('key value' per line: cgroup.events, cpu.stat, memory.oom_control)."""
    out: dict[str, int] = {}
    try:
        text = read(path)
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def wait_keyed(path: str, key: str, want: int, timeout: float) -> bool:
    """Wait until `key` has value `want` in a kernfs keyed file such as `cgroup.events`.

    kernfs signals a change of `cgroup.events` as POLLPRI|POLLERR, so this sleeps in poll(2)
    rather than spinning; the poll is still capped at 10 ms per round so that a missed
    notification costs at most that. Returns False on timeout; a vanished file counts as the
    wanted state only for `populated 0` (a removed cgroup holds no process).
    """
    deadline = time.monotonic() + timeout
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return key == "populated" and want == 0
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        rounds = 0
        while True:
            try:
                text = os.pread(fd, 4096, 0).decode()
            except OSError as e:
                if e.errno == errno.ENODEV:      # the cgroup was removed under us
                    return key == "populated" and want == 0
                raise
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == key and parts[1] == str(want):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            rounds += 1
            if rounds <= 40:
                # kernfs rate-limits cgroup.events notifications to one per 10 ms, and a kill or
                # freeze usually completes in well under 1 ms: re-read briefly before sleeping.
                time.sleep(0.00005)
            else:
                poller.poll(max(1, int(min(remaining, 0.01) * 1000)))
    finally:
        os.close(fd)


def list_pids(directory: str, recursive: bool = True) -> list[int]:
    """Every pid in `cgroup.procs` of a cgroup directory and, if recursive, of its descendants.

    v1 `cgroup.procs` lists only the cgroup's own members, not its children's.
    """
    pids: list[int] = []
    stack = [directory]
    while stack:
        d = stack.pop()
        try:
            text = read(os.path.join(d, "cgroup.procs"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            if e.errno == errno.ENODEV:
                continue
            raise
        pids.extend(int(x) for x in text.split())
        if recursive:
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                pass
    return pids
