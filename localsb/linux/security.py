"""What makes the sandbox's root not the host's root.

Capabilities limited to caps.KEEP_CAPS (caps.py), no_new_privs, and a seccomp allowlist
modelled on Docker's default profile: libseccomp (through pyseccomp) compiles it to BPF once per
policy and libseccomp version (cached under CACHE_DIR), the parent reads it once (``prepare``), and
each sandboxed command loads it just before exec (``harden``: prctl PR_SET_SECCOMP). The devices
allowlist lives in the cgroup driver.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat

from . import caps, syscalls


# --- the seccomp policy ---------------------------------------------------------------------------
#
# Every syscall not allowed below fails with EPERM (the default action). Syscalls of another ABI
# (i386, x32) kill the thread (the bad-arch action), so only the native 64-bit ABI is listed.
#
# The list is Docker's default profile (moby profiles/seccomp, 2026) as it applies to a container
# with Docker's default capabilities (so chroot, for CAP_SYS_CHROOT), less what a sandbox does not
# get here: ptrace and process_vm_readv/writev (Docker allows them on kernels >= 4.8; no debugger
# inside), name_to_handle_at, adjtimex and clock_adjtime. Docker already refuses io_uring, bpf,
# perf_event_open, keyctl, userfaultfd, the mount API, unshare and setns, modules, kexec and the
# rest of REFUSED_SYSCALLS: they stay unlisted here too. Names a kernel or libseccomp does not
# know on the native architecture are skipped.
ALLOW_SYSCALLS = (
    # files and directories
    "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "chroot",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat", "lchown", "umask",
    "open", "openat", "openat2", "creat", "close", "close_range",
    "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "mkdir", "mkdirat", "rmdir", "mknod", "mknodat", "readlink", "readlinkat",
    "stat", "lstat", "fstat", "newfstatat", "statx", "statfs", "fstatfs", "getdents", "getdents64",
    "truncate", "ftruncate", "fallocate", "utime", "utimes", "utimensat", "futimesat",
    "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr",
    "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr",
    "lremovexattr", "fremovexattr", "removexattrat",
    # reading the caller's own mount table (what /proc/self/mountinfo shows)
    "listmount", "statmount",
    # descriptors and I/O
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "lseek", "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
    "dup", "dup2", "dup3", "fcntl", "flock", "ioctl", "pipe", "pipe2",
    "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fadvise64", "readahead", "cachestat",
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    # waiting for events
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2",
    "eventfd", "eventfd2", "signalfd", "signalfd4", "timerfd_create", "timerfd_settime",
    "timerfd_gettime", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "fanotify_mark",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "mlockall", "munlock", "munlockall", "remap_file_pages", "membarrier", "memfd_create",
    "memfd_secret", "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack", "mseal",
    # processes and threads (clone, clone3 and personality have rules of their own below)
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "set_tid_address", "set_robust_list", "get_robust_list", "futex", "futex_waitv", "futex_wake",
    "futex_wait", "futex_requeue", "rseq", "restart_syscall", "gettid", "getpid", "getppid",
    "getpgid", "getpgrp", "setpgid", "getsid", "setsid", "prctl", "arch_prctl", "modify_ldt",
    "set_thread_area", "get_thread_area", "pidfd_open", "pidfd_send_signal", "process_mrelease",
    "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    "uretprobe", "riscv_flush_icache", "riscv_hwprobe",
    # user and group ids, capabilities
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "setuid", "setgid",
    "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "getgroups",
    "setgroups", "capget", "capset",
    # signals
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigreturn", "sigaltstack",
    "pause", "alarm",
    # clocks and timers (reading them; setting the clock is refused)
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "times", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_settime",
    "timer_gettime", "timer_getoverrun",
    # scheduling, limits, system information
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
    "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval", "getpriority",
    "setpriority", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit", "prlimit64", "getrusage",
    "getcpu", "sysinfo", "uname", "getrandom",
    # System V and POSIX IPC (the sandbox's own ipc namespace)
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "shmget",
    "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
    # sockets (socket and socketpair have rules of their own below)
    "bind", "connect", "listen", "accept", "accept4", "getsockname", "getpeername", "getsockopt",
    "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
)

# Refused by the default action, named here so that the policy reads whole and tests can hold it.
REFUSED_SYSCALLS = (
    # namespaces and mounts: a sandbox never makes or enters a namespace, never mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree",
    "open_tree_attr", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # other processes' memory and descriptors
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
    # the kernel's largest attack surfaces
    "bpf", "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "keyctl", "add_key", "request_key", "fanotify_init",
    "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules",
    # the machine: modules, kexec, reboot, swap, accounting, kernel log, clock, I/O ports, quotas
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "syslog", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "iopl", "ioperm", "quotactl", "quotactl_fd", "sethostname", "setdomainname",
    "vhangup", "uselib", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
    "get_mempolicy", "set_mempolicy", "mbind", "migrate_pages", "move_pages",
    "set_mempolicy_home_node", "_sysctl", "sysfs", "ustat",
)

# clone(2) is allowed only without a CLONE_NEW* flag. CLONE_NEWTIME (0x80) shares its bit with the
# exit signal of clone(2), where 0x80 is an invalid signal anyway: refusing it costs nothing.
CLONE_NEW_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                   | 0x40000000 | 0x00000080)  # NS CGROUP UTS IPC USER PID NET TIME
# clone3(2) passes its flags in memory, which seccomp cannot read: it answers ENOSYS, as an older
# kernel would, and glibc (threads, posix_spawn) falls back to clone(2).
ENOSYS_SYSCALLS = ("clone3",)

# socket(2): AF_UNIX, AF_INET, AF_INET6, and AF_NETLINK with NETLINK_ROUTE (ip, getifaddrs,
# getaddrinfo's AI_ADDRCONFIG). Other families answer EAFNOSUPPORT and other netlink protocols
# EPROTONOSUPPORT: what a kernel built without them says, which programs take for "not available"
# (libpam, for one, fails `su` when its audit socket gets EPERM but carries on without audit on
# EPROTONOSUPPORT). socketpair(2): AF_UNIX only.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6)

# personality(2): the values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, their sum, and the
# query 0xffffffff. No ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the like.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Syscalls newer than some libseccomp releases (2.5.4 knows up to 450): x86_64 numbers.
_X86_64_NUMBERS = {
    "uretprobe": 335, "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453,
    "futex_wake": 454, "futex_wait": 455, "futex_requeue": 456, "statmount": 457, "listmount": 458,
    "mseal": 462, "setxattrat": 463, "getxattrat": 464, "listxattrat": 465, "removexattrat": 466,
}

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096

# The compiled program, kept between processes: building it takes libseccomp ~2 ms after a ~3 ms
# import, on the path of every `run` made without a resident process; reading it back takes
# ~0.2 ms. Root's only (0700, like the user-namespace locks beside it); a file is used only if
# root owns it and its directory and no one else can write them.
CACHE_DIR = "/run/localsb/seccomp"

_prepared = False
_filter = None        # the libseccomp filter, when this process built it
_program = None       # the compiled BPF program (struct sock_fprog) that harden() loads
_program_code = None  # the buffer _program points into
_rules = 0
_from_cache = False
_rule_errors: list = []


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _policy(sc, arch: int):
    """The allowlist as libseccomp rules: (action, syscall name, argument comparisons)."""
    allow, arg = sc.ALLOW, sc.Arg
    for name in ALLOW_SYSCALLS:
        yield allow, name, ()
    # s390 passes clone's flags second
    flags_arg = 1 if arch in (sc.Arch.S390, sc.Arch.S390X) else 0
    yield allow, "clone", (arg(flags_arg, sc.MASKED_EQ, CLONE_NEW_FLAGS, 0),)
    for name in ENOSYS_SYSCALLS:
        yield sc.ERRNO(errno.ENOSYS), name, ()
    # Comparisons are on the whole 64-bit register: a family with high bits set is refused, not
    # truncated into an allowed one.
    no_family = sc.ERRNO(errno.EAFNOSUPPORT)
    for family in SOCKET_FAMILIES:
        yield allow, "socket", (arg(0, sc.EQ, family),)
    yield allow, "socket", (arg(0, sc.EQ, AF_NETLINK), arg(2, sc.EQ, NETLINK_ROUTE))
    yield sc.ERRNO(errno.EPROTONOSUPPORT), "socket", (arg(0, sc.EQ, AF_NETLINK),
                                                      arg(2, sc.NE, NETLINK_ROUTE))
    # libseccomp takes one comparison per argument and rule, so "any other family" is spelled
    # out: each number below AF_NETLINK, then everything above it.
    for family in range(AF_NETLINK):
        if family not in SOCKET_FAMILIES:
            yield no_family, "socket", (arg(0, sc.EQ, family),)
    yield no_family, "socket", (arg(0, sc.GT, AF_NETLINK),)
    yield allow, "socketpair", (arg(0, sc.EQ, AF_UNIX),)
    yield no_family, "socketpair", (arg(0, sc.NE, AF_UNIX),)
    for persona in PERSONALITIES:
        yield allow, "personality", (arg(0, sc.EQ, persona),)


def _syscall_number(sc, arch: int, name: str):
    nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    if nr < 0 and arch == sc.Arch.X86_64:
        nr = _X86_64_NUMBERS.get(name, nr)
    return nr if nr >= 0 else None  # negative: not a syscall of this architecture


def prepare() -> None:
    """Compile the seccomp allowlist to BPF in the parent, once, so forked children only hand the
    program to the kernel: read back from CACHE_DIR when this policy was compiled before by this
    libseccomp, else built with libseccomp (seccomp_export_bpf) and cached."""
    _prepare(use_cache=True)


def _prepare(use_cache: bool) -> None:
    global _prepared, _filter, _program, _program_code, _rules, _from_cache
    if _prepared:
        return
    _prepared = True
    key = _cache_key() if use_cache else None
    cached = _cache_read(key) if key else None
    if cached is not None:
        _rules, code = cached
        _program, _program_code = _fprog(code)
        _from_cache = True
        return
    try:
        sc = _import_pyseccomp()
    except ImportError:  # pragma: no cover - reported by doctor
        return
    f = sc.SyscallFilter(defaction=sc.ERRNO(errno.EPERM))
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL)
    try:
        f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # a binary tree of syscall numbers, not a linear scan
    except OSError:  # pragma: no cover - libseccomp < 2.5
        pass
    arch = sc.system_arch()
    rules = 0
    for action, name, args in _policy(sc, arch):
        nr = _syscall_number(sc, arch, name)
        if nr is None:
            continue
        try:
            f.add_rule(action, nr, *args)
            rules += 1
        except OSError as e:  # never weakens the filter: an unlisted syscall stays refused
            _rule_errors.append(f"{name}: {e.strerror}")
    _filter, _rules = f, rules
    code = _export(f)
    if code is not None:
        _program, _program_code = _fprog(code)
        if key and not _rule_errors:
            _cache_write(key, rules, code)


def _export(f):
    """seccomp_export_bpf(3) into a memfd: the program as the kernel takes it, or None (then
    load_seccomp() lets libseccomp load the filter itself)."""
    try:
        fd = os.memfd_create("localsb-seccomp", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # pragma: no cover
        return None
    try:
        class _Fd:
            def fileno(self):
                return fd
        f.export_bpf(_Fd())
        size = os.lseek(fd, 0, os.SEEK_END)
        code = os.pread(fd, size, 0)
    except OSError:  # pragma: no cover
        return None
    finally:
        os.close(fd)
    return code if _valid_program(code) else None


def _valid_program(code: bytes) -> bool:
    return 0 < len(code) <= 8 * BPF_MAXINSNS and len(code) % 8 == 0


def _fprog(code: bytes):
    buf = ctypes.create_string_buffer(code, len(code))
    return _SockFprog(len(code) // 8, ctypes.addressof(buf)), buf


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _cache_key():
    """What the compiled program depends on: this module (the policy; size and mtime, as Python's
    own bytecode cache), the libseccomp that compiles it, the machine. None: no cache (not root,
    no libseccomp, no source file)."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(__file__)
        lib = ctypes.CDLL(_SONAMES["seccomp"])
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        v = lib.seccomp_version().contents
    except (OSError, AttributeError, ValueError):
        return None
    return f"{os.uname().machine}-{v.major}.{v.minor}.{v.micro}-{st.st_size}-{st.st_mtime_ns}"


def _trusted(st) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _cache_read(key: str):
    try:
        if not _trusted(os.stat(CACHE_DIR)):
            return None
        fd = os.open(os.path.join(CACHE_DIR, key + ".bpf"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (_trusted(st) and stat.S_ISREG(st.st_mode)) or st.st_size > 4 + 8 * BPF_MAXINSNS:
            return None
        data = os.pread(fd, st.st_size, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    rules, code = int.from_bytes(data[:4], "little"), data[4:]
    return (rules, code) if _valid_program(code) else None


def _cache_write(key: str, rules: int, code: bytes) -> None:
    """Write ``<key>.bpf`` (rule count, then the program) under a temporary name, then rename:
    a reader sees a whole file or none."""
    tmp = os.path.join(CACHE_DIR, f".{key}.{os.getpid()}.tmp")
    try:
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        if not _trusted(os.stat(CACHE_DIR)):
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, rules.to_bytes(4, "little") + code)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(CACHE_DIR, key + ".bpf"))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


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
    return _program is not None or _filter is not None


def seccomp_info() -> dict:
    """What `localsb doctor` says of the filter: mode, actions, rule count."""
    if not seccomp_available():
        return {"mode": None, "error": "pyseccomp or libseccomp is missing: no seccomp filter"}
    info = {"mode": "allowlist", "model": "Docker's default profile", "defaultAction": "errno EPERM",
            "badArchAction": "kill", "rules": _rules,
            "instructions": _program.len if _program is not None else None,
            "compiled": "cached in " + CACHE_DIR if _from_cache else "by libseccomp in this process"}
    if _rule_errors:
        info["ruleErrors"] = list(_rule_errors)
    return info


def load_seccomp() -> None:
    """Set no_new_privs and load the prepared filter into this thread: prctl(PR_SET_SECCOMP) with
    the program prepare() compiled, or seccomp_load(3) when it could not be exported."""
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    # Never the cache here: a child that was not prepared may already stand in the sandbox's
    # filesystem, where CACHE_DIR would name a file the sandbox wrote.
    _prepare(use_cache=False)
    if _program is not None:
        syscalls.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(_program))
    elif _filter is not None:
        _filter.load()


def harden() -> None:
    """In a child just before exec: limit the bounding, ambient, effective and permitted sets to
    KEEP_CAPS (caps.limit_capabilities), set no_new_privs and load the seccomp allowlist prepared
    in the parent (load_seccomp)."""
    caps.limit_capabilities()
    load_seccomp()
