"""Capability sets of the processes that stand between the host and a sandbox (PID 1, waiters).

capset(2) for the effective, permitted and inheritable sets; prctl(2) PR_CAPBSET_DROP for the
bounding set. The sandbox's commands get theirs from security.harden().
"""
from __future__ import annotations

import ctypes

from . import security, syscalls


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(mask: int) -> None:
    """capset(2): effective and permitted = ``mask``, inheritable empty (version 3 header)."""
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    if syscalls.libc.capset(ctypes.byref(hdr), data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "capset failed")


def keep_mask() -> int:
    mask = 0
    for cap in security.KEEP_CAPS:
        mask |= 1 << cap
    return mask


def limit_capabilities() -> None:
    """Drop from the bounding set and from capset(2) everything a sandboxed command would not get."""
    for cap in range(security.last_cap() + 1):
        if cap not in security.KEEP_CAPS:
            try:
                syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
            except OSError:
                pass
    capset(keep_mask())


def drop_all() -> None:
    """Not dumpable, empty bounding and ambient sets, no capability left (PID 1 after setup, a
    waiter once its command is forked)."""
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    for cap in range(security.last_cap() + 1):
        try:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
        except OSError:
            pass
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    capset(0)
