"""What makes the sandbox's root not the host's root when no user namespace is used.

A reduced capability bounding set (prctl PR_CAPBSET_DROP), no_new_privs, and a seccomp deny list
(libseccomp through pyseccomp). The devices allowlist lives in the cgroup driver.
"""
from __future__ import annotations

import ctypes
import errno

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

# Syscalls no sandboxed program needs and that reach the kernel's most privileged surfaces.
DENY_SYSCALLS = (
    "mount", "umount2", "pivot_root", "unshare", "setns", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv",
    "process_vm_writev", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "syslog", "acct", "open_by_handle_at", "name_to_handle_at",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm", "quotactl",
    "lookup_dcookie", "userfaultfd", "personality", "uselib", "vhangup", "nfsservctl",
    "fanotify_init", "pidfd_getfd", "kcmp",
)

_last_cap = None
_filter = None


def last_cap() -> int:
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as fh:
                _last_cap = int(fh.read())
        except OSError:
            _last_cap = 40
    return _last_cap


def prepare() -> None:
    """Build the seccomp filter in the parent, once, so forked children only load it."""
    global _filter
    if _filter is not None:
        return
    try:
        seccomp = _import_pyseccomp()
    except ImportError:  # pragma: no cover - reported by doctor
        _filter = False
        return
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENY_SYSCALLS:
        try:
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except Exception:  # syscall unknown on this architecture
            pass
    _filter = f


_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def _import_pyseccomp():
    """Import pyseccomp without its ctypes.util.find_library calls: each one runs ldconfig as a
    subprocess (~5 ms), on the path of every run and create. The sonames are Debian's."""
    import ctypes.util
    real = ctypes.util.find_library
    ctypes.util.find_library = lambda name: _SONAMES.get(name) or real(name)
    try:
        import pyseccomp
    finally:
        ctypes.util.find_library = real
    return pyseccomp


def seccomp_available() -> bool:
    prepare()
    return bool(_filter)


def harden() -> None:
    """In a child just before exec: drop capabilities from the bounding set, clear ambient caps,
    set no_new_privs (prctl), load the seccomp filter (seccomp(2) via libseccomp)."""
    for cap in range(last_cap() + 1):
        if cap not in KEEP_CAPS:
            try:
                syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    _drop_effective()
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    if _filter is None:
        prepare()
    if _filter:
        _filter.load()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_effective() -> None:
    """capset(2): limit effective, permitted and inheritable sets to KEEP_CAPS (root keeps them
    across exec only through the bounding set, but the current process must lose them too)."""
    mask = 0
    for cap in KEEP_CAPS:
        mask |= 1 << cap
    hdr = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    rc = syscalls.libc.capset(ctypes.byref(hdr), data)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "capset failed")
