"""Mechanisms of the fallback storage driver: plain-directory volumes and overlayfs mounts.

Used where btrfs cannot be had (or LOCALSB_STORAGE=overlay). A volume is a directory; a snapshot
is a copy (`cp -a --reflink=auto`: a clone per file where the filesystem supports it, a full copy
elsewhere); read-only is a flag kept beside the pool, not enforced by the kernel. An overlay
mount gives a writable view of a read-only lower layer for the cost of a mount (used for the
host-overlay runtime's /usr and /etc).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

from localsb.api.errors import AlreadyExists, HostError, NotFound

MS_RDONLY = 0x1
MNT_DETACH = 0x2


def copy_tree(src: str, dst: str) -> None:
    """`cp -a --reflink=auto src dst` (dst must not exist); a partial copy is removed on failure."""
    if not os.path.isdir(src):
        raise NotFound(f"cannot snapshot: {src} does not exist")
    if os.path.lexists(dst):
        raise AlreadyExists(f"cannot snapshot: {dst} already exists")
    p = subprocess.run(["cp", "-a", "--reflink=auto", "--", src, dst],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        remove_tree(dst)
        msg = p.stderr.strip().splitlines()
        raise HostError(f"cannot copy {src} to {dst}: {msg[-1] if msg else 'cp exit ' + str(p.returncode)}")


def remove_tree(path: str) -> None:
    """Remove a directory tree; missing is fine. Directories without write permission (as a
    sandbox may leave them) are made writable first."""
    def onerror(func, p, exc_info):
        e = exc_info[1]
        if isinstance(e, FileNotFoundError):
            return
        if isinstance(e, PermissionError):
            try:
                os.chmod(os.path.dirname(p), 0o700)
                func(p)
                return
            except OSError:
                pass
        raise e
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path, onerror=onerror)
    except OSError as e:
        raise HostError(f"cannot remove {path}: {os.strerror(e.errno) if e.errno else e}") from e


def _libc():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc, ctypes


def _escape_opt(p: str) -> str:
    # overlayfs splits its options on ',' and lowerdir on ':'; both are escaped with '\'.
    return p.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def mount_overlay(lowerdirs: list[str], upperdir: str | None, workdir: str | None, target: str,
                  read_only: bool = False) -> None:
    """mount(2) an overlayfs at target: lowerdirs (first is topmost), upper and work on the same
    filesystem. Without an upper the mount is read-only."""
    if not lowerdirs:
        raise ValueError("an overlay needs at least one lower directory")
    opts = "lowerdir=" + ":".join(_escape_opt(d) for d in lowerdirs)
    flags = MS_RDONLY if read_only or upperdir is None else 0
    if upperdir is not None:
        if workdir is None:
            raise ValueError("an overlay with an upper directory needs a work directory")
        opts += f",upperdir={_escape_opt(upperdir)},workdir={_escape_opt(workdir)}"
    libc, ctypes = _libc()
    if libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, opts.encode()) != 0:
        e = ctypes.get_errno()
        raise HostError(f"cannot mount an overlay at {target}: {os.strerror(e)}")


def umount(target: str, lazy: bool = False) -> None:
    """umount2(2) target (MNT_DETACH when lazy). EINVAL (not a mount point) and ENOENT are fine."""
    libc, ctypes = _libc()
    if libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
        e = ctypes.get_errno()
        if e in (errno.EINVAL, errno.ENOENT):
            return
        raise HostError(f"cannot unmount {target}: {os.strerror(e)}", errno=e)
