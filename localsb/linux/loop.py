"""Loop devices: which ones back a file, and detaching them.

The pool image is attached by `mount -o loop`, which sets LO_FLAGS_AUTOCLEAR so the kernel frees
the device on the last umount; these helpers find what is left over (a lazily detached pool,
a crash between attach and mount) and release it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from localsb.api.errors import HostError

LOOP_CLR_FD = 0x4C01
_SYS_BLOCK = "/sys/block"


def backing_file(dev: str) -> str | None:
    """Read `/sys/block/loopN/loop/backing_file` (None when the device is not attached)."""
    name = os.path.basename(dev)
    try:
        with open(os.path.join(_SYS_BLOCK, name, "loop", "backing_file")) as f:
            return f.read().rstrip("\n")
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None


def autoclear(dev: str) -> bool:
    """Read `/sys/block/loopN/loop/autoclear`."""
    try:
        with open(os.path.join(_SYS_BLOCK, os.path.basename(dev), "loop", "autoclear")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def devices_for(path: str) -> list[str]:
    """Every /dev/loopN whose backing file is `path`: scan `/sys/block/loop*/loop/backing_file`.

    The kernel shows the path as it was at attach time, with " (deleted)" appended once the file
    is unlinked, so both the real path and that form match.
    """
    want = os.path.realpath(path)
    out = []
    try:
        names = os.listdir(_SYS_BLOCK)
    except OSError:
        return out
    for name in sorted(names):
        if not name.startswith("loop"):
            continue
        bf = backing_file(name)
        if bf is None:
            continue
        if bf.endswith(" (deleted)"):
            bf = bf[: -len(" (deleted)")]
        if bf == want or bf == path:
            out.append("/dev/" + name)
    return out


def detach(dev: str) -> None:
    """ioctl LOOP_CLR_FD on the device. On a device still in use the kernel only sets autoclear,
    so it is freed when its last user closes it. ENXIO (not attached) is fine."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise HostError(f"cannot detach loop device {dev}: {os.strerror(e.errno)}") from e
    finally:
        os.close(fd)


def wait_released(path: str, timeout: float) -> list[str]:
    """Wait until no loop device backs `path`; return those still attached at the timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        devs = devices_for(path)
        if not devs or time.monotonic() >= deadline:
            return devs
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
