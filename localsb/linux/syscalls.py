"""Thin ctypes bindings for the syscalls the standard library lacks on Python 3.11.

unshare(2), setns(2), mount(2), umount2(2), pivot_root(2), prctl(2), and the new mount API's
open_tree(2), mount_setattr(2), move_mount(2) (idmapped mounts). Each wrapper raises OSError with
errno on failure, like the os module does.
"""
from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc; find_library would run ldconfig
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SANDBOX_NAMESPACES = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
                      | CLONE_NEWPID | CLONE_NEWNET)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SYS_pivot_root = 155
SYS_pidfd_send_signal = 424
SYS_open_tree = 428
SYS_move_mount = 429
SYS_mount_setattr = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _b(s):
    return s.encode() if isinstance(s, str) else s


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2); with a pidfd and several CLONE_NEW* flags it joins them atomically (kernel >= 5.8)."""
    _check(libc.setns(fd, nstype), "setns")


def mount(source, target, fstype, flags=0, data=None) -> None:
    """mount(2)."""
    rc = libc.mount(_b(source) if source else None, _b(target), _b(fstype) if fstype else None,
                    flags, _b(data) if data else None)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target}: {os.strerror(e)}")


def umount(target, flags=0) -> None:
    """umount2(2)."""
    rc = libc.umount2(_b(target), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def pivot_root(new_root, put_old) -> None:
    """pivot_root(2) (x86_64 syscall 155)."""
    _check(libc.syscall(SYS_pivot_root, _b(new_root), _b(put_old)), "pivot_root")


def prctl(option, a2=0, a3=0, a4=0, a5=0) -> int:
    """prctl(2)."""
    rc = libc.prctl(option, a2, a3, a4, a5)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl({option}): {os.strerror(e)}")
    return rc


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """pidfd_send_signal(2): signal a process by pidfd, immune to pid reuse."""
    _check(libc.syscall(SYS_pidfd_send_signal, pidfd, sig, None, 0), "pidfd_send_signal")


def open_tree(path, flags: int) -> int:
    """open_tree(2) (x86_64 428): a detached clone of the mount tree at ``path`` with OPEN_TREE_CLONE."""
    fd = libc.syscall(SYS_open_tree, AT_FDCWD, _b(path), flags)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"open_tree {path}: {os.strerror(e)}")
    return fd


def mount_setattr(fd: int, attr_set: int, userns_fd: int = 0, recursive: bool = True) -> None:
    """mount_setattr(2) (x86_64 442) on a detached tree: e.g. MOUNT_ATTR_IDMAP with a user namespace."""
    attr = _MountAttr(attr_set, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(libc.syscall(SYS_mount_setattr, fd, b"", flags, ctypes.byref(attr), ctypes.sizeof(attr)),
           "mount_setattr")


def move_mount(fd: int, target) -> None:
    """move_mount(2) (x86_64 429): attach the detached tree ``fd`` at ``target``."""
    _check(libc.syscall(SYS_move_mount, fd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount {target}")
