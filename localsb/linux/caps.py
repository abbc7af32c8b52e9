"""Capability sets of the processes that stand between the host and a sandbox (PID 1, waiters).

capset(2) for the effective, permitted and inheritable sets; prctl(2) PR_CAPBSET_DROP for the
bounding set. KEEP_CAPS is what a sandboxed command keeps (security.harden applies it).
"""
from __future__ import annotations

import ctypes

from . import syscalls

# Docker's default set minus CAP_MKNOD (device nodes are useless behind the devices cgroup) and
# CAP_NET_RAW (no raw sockets needed; ping is not a feature). Keeps apt-get/dpkg working as root.
KEEP_CAPS = {
    0,   # CAP_CHOWN
    1,   # CAP_DAC_OVERRIDE
    3,   # CAP_FOWNER
    4,   # CAP_FSETID
    5,   # CAP_KILL
    6,   # CAP_SETGID
    7,   # CAP_SETUID
    8,   # CAP_SETPCAP
    10,  # CAP_NET_BIND_SERVICE
    18,  # CAP_SYS_CHROOT
    29,  # CAP_AUDIT_WRITE
    31,  # CAP_SETFCAP
}

_last_cap = None


def last_cap() -> int:
    """/proc/sys/kernel/cap_last_cap (read once)."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as fh:
                _last_cap = int(fh.read())
        except OSError:
            _last_cap = 40
    return _last_cap


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
    for cap in KEEP_CAPS:
        mask |= 1 << cap
    return mask


def _restrict(keep: set) -> None:
    """prctl(PR_CAPBSET_DROP) every capability not in ``keep`` (EINVAL: past this kernel's last),
    clear the ambient set, capset(2) to ``keep``."""
    import errno
    for cap in range(last_cap() + 1):
        if cap not in keep:
            try:
                syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    capset(mask)


def limit_capabilities() -> None:
    """Keep only what a sandboxed command gets (KEEP_CAPS): its own harden(), and a waiter
    forked ahead while it waits for its command."""
    _restrict(KEEP_CAPS)


def drop_all() -> None:
    """Not dumpable and no capability left in any set (PID 1 after setup, the keeper after forking
    PID 1, a waiter once its command is forked)."""
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    _restrict(set())
