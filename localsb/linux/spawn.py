# long: the namespace entry sequence (keeper, PID 1, waiters) reads in order, one file
"""Start processes in new namespaces, and enter them.

``start`` forks a keeper that joins the sandbox's cgroups and its user namespace (root inside is
the sandbox's own host id range, never host root), unshare(2)s the pid, net, uts, ipc and cgroup
namespaces (owned by that user namespace) and forks the sandbox's PID 1, which makes its mount
namespace and builds the root (private mounts, bind of the root, fresh /proc with the OCI runtime
spec's read-only and masked paths, a minimal /dev, tmpfs /tmp, read-only /sys), pivot_root(2)s
into it, brings up loopback, drops every capability, and then either reaps orphans forever (an
interactive sandbox's init) or runs one command and exits with its status (a one-shot sandbox).
``enter`` forks a waiter that joins the cgroups, setns(2)s into all of the init's namespaces
(user namespace included) at once through a pidfd and forks the command inside them.

No Python interpreter is started: every process here is a fork of the caller. Everything a child
needs is imported before fork, because the host's stdlib is invisible after pivot_root.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from . import caps, security, syscalls as sc, userns as _userns

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# The OCI runtime spec's defaults (runc, crun): kernel knobs read-only, host-wide information masked.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "key-users", "kmsg", "timer_list", "sched_debug", "latency_stats",
               "slabinfo", "vmallocinfo", "config.gz", "acpi", "scsi", "sys/fs/binfmt_misc",
               "pagetypeinfo", "zoneinfo", "buddyinfo", "kallsyms", "modules", "iomem", "ioports",
               "mtrr", "dma", "interrupts", "softirqs", "cgroups", "partitions", "diskstats", "swaps",
               "fb", "devices", "locks", "kpagecount", "kpageflags", "kpagecgroup", "mdstat", "misc",
               "execdomains", "vmstat", "crypto", "sysvipc", "tty/driver", "dynamic_debug", "bootconfig")
SYS_MASKED = ("firmware", "kernel/debug", "kernel/security", "kernel/tracing", "kernel/config",
              "fs/bpf", "fs/pstore", "fs/fuse/connections")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class RootSpec:
    root: str                 # host path of the directory that becomes '/'
    hostname: str
    tmp_size: str = "1g"
    readonly_paths: tuple = ()  # paths inside the root to bind read-only
    netns_fd: int | None = None  # join this network namespace (made and wired beforehand) instead of a new one
    userns_fd: int | None = None  # the sandbox's user namespace (userns.make_userns); None: none (unsafe)
    keep_fds: tuple = ()         # descriptors the keeper holds for the sandbox's life (its id range's lock)


@dataclass
class ProcSpec:
    argv: list
    env: dict = field(default_factory=dict)
    cwd: str = "/"
    stdin: int | None = None   # fds in the caller; None -> /dev/null
    stdout: int | None = None
    stderr: int | None = None
    harden: bool = True


@dataclass
class Started:
    keeper_pid: int      # the caller's direct child; exits with the sandbox's PID 1
    init_pid: int        # host pid of the sandbox's PID 1
    status_fd: int       # one-shot: read_exit_status() from it
    carry: list = field(default_factory=lambda: [b""])  # bytes read past PID 1's ready line


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass


def _read_lines(fd: int, timeout: float = 10.0, carry: list | None = None):
    """Lines from a report pipe. ``carry`` keeps bytes read past the last line taken, so a later
    reader of the same pipe gets them (a fast command's exit line can arrive with PID 1's ready
    line in one read)."""
    carry = carry if carry is not None else [b""]
    deadline = time.monotonic() + timeout
    while True:
        buf = carry[0]
        if b"\n" in buf:
            line, carry[0] = buf.split(b"\n", 1)
            yield line
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("sandbox init did not report")
        poller = select.poll()     # not select(): a server's descriptors can go past 1024
        poller.register(fd, select.POLLIN)
        if not poller.poll(min(remaining, 3600.0) * 1000):
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            if carry[0]:
                line, carry[0] = carry[0], b""
                yield line
            return
        carry[0] += chunk


def join_cgroups(procs_files) -> None:
    """Write our pid to each cgroup.procs (in a child, before it enters the sandbox)."""
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def _lo_up() -> None:
    """SIOCSIFFLAGS on 'lo' with IFF_UP|IFF_RUNNING: a new netns starts with loopback down."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14s", b"lo", 0x1 | 0x40, b"\0" * 14)
        fcntl.ioctl(s.fileno(), 0x8914, ifreq)  # SIOCSIFFLAGS
    finally:
        s.close()


def _touch(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)


SCRATCH = "/tmp"   # in PID 1's private copy of the host's mounts: where the root is attached


def _build_root(spec: RootSpec, tree_fd: int) -> None:
    """mount(2), move_mount(2) and pivot_root(2): runs as the new PID 1 inside fresh namespaces.

    ``tree_fd`` is a detached clone of the root's mount tree (open_tree(2), made by the keeper
    while still host root): PID 1, root of the sandbox's user namespace only, could not even
    walk the path to the root (the state directory is 0700, host root's). It attaches the tree
    on a tmpfs of its own, builds /proc, /dev, /tmp, /sys in it and pivots there."""
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("tmpfs", SCRATCH, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=16k,mode=700")
    root = SCRATCH + "/root"
    os.mkdir(root)
    sc.move_mount(tree_fd, root)
    os.close(tree_fd)
    for ro in spec.readonly_paths:
        p = root + ro
        sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, p, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
    for d in ("proc", "dev", "tmp", "sys"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    sc.mount("proc", f"{root}/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    _mask_proc(f"{root}/proc")
    dev = f"{root}/dev"
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=755,size=64k")
    for node in DEV_NODES:
        _touch(f"{dev}/{node}")
        sc.mount(f"/dev/{node}", f"{dev}/{node}", None, sc.MS_BIND)
    os.mkdir(f"{dev}/pts")
    sc.mount("devpts", f"{dev}/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    sc.mount("tmpfs", f"{dev}/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777,size=64m")
    os.symlink("/proc/self/fd", f"{dev}/fd")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
    _mount_tmp(f"{root}/tmp", spec.tmp_size)
    _mount_sys(f"{root}/sys")
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    socket.sethostname(spec.hostname)
    _lo_up()


def _mask_proc(proc: str) -> None:
    """Bind /proc's kernel knobs read-only over themselves; hide host-wide files behind /dev/null
    and directories behind an empty read-only tmpfs (what runc does with the OCI defaults)."""
    for name in PROC_READONLY:
        p = f"{proc}/{name}"
        if os.path.exists(p):
            sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(None, p, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                     | sc.MS_NOEXEC)
    for name in PROC_MASKED:
        _mask(f"{proc}/{name}")


def _mask(p: str) -> None:
    try:
        st = os.lstat(p)
    except OSError:
        return
    import stat as _st
    if _st.S_ISDIR(st.st_mode):
        sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=0,mode=555")
    else:
        sc.mount("/dev/null", p, None, sc.MS_BIND)


def _mount_tmp(tmp: str, size: str) -> None:
    """A tmpfs /tmp, with what the root had there already (files given with --file, or kept in a
    snapshot's /tmp) copied in: a tmpfs mounted over them would hide them."""
    keep = []
    try:
        keep = os.listdir(tmp)
    except OSError:
        pass
    old = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY) if keep else None
    sc.mount("tmpfs", tmp, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"mode=1777,size={size}")
    if old is not None:
        try:
            _copy_tree_fd(old, tmp)
        finally:
            os.close(old)


def _copy_tree_fd(src_fd: int, dst: str) -> None:
    """Copy a directory's entries (files, directories, symlinks; modes and owners) from an open
    descriptor into ``dst``; never follows a symlink."""
    import shutil
    import stat as _st
    for name in os.listdir(src_fd):
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        target = os.path.join(dst, name)
        if _st.S_ISDIR(st.st_mode):
            os.mkdir(target, _st.S_IMODE(st.st_mode))
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                _copy_tree_fd(sub, target)
            finally:
                os.close(sub)
        elif _st.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), target)
        elif _st.S_ISREG(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                with os.fdopen(os.dup(fd), "rb") as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            finally:
                os.close(fd)
        else:
            continue
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        if not _st.S_ISLNK(st.st_mode):
            os.chmod(target, _st.S_IMODE(st.st_mode))


def _mount_sys(sys_dir: str) -> None:
    """A read-only sysfs, its host-wide corners masked. sysfs needs the network namespace to be
    owned by our user namespace; where it is not, /sys stays an empty read-only tmpfs."""
    flags = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    try:
        sc.mount("sysfs", sys_dir, "sysfs", flags)
    except PermissionError:
        sc.mount("tmpfs", sys_dir, "tmpfs", flags, "size=0,mode=555")
        return
    for name in SYS_MASKED:
        _mask(f"{sys_dir}/{name}")


def join_sandbox(init_pidfd: int) -> None:
    """setns(2) into every namespace of the init behind ``init_pidfd`` at once, its user namespace
    included, and become root of that namespace (the sandbox's range, never host root). An init
    without a user namespace of its own (LOCALSB_INSECURE_NO_USERNS) is joined without one."""
    try:
        sc.setns(init_pidfd, sc.SANDBOX_NAMESPACES | sc.CLONE_NEWUSER)
    except OSError as e:
        if e.errno != errno.EINVAL:   # EINVAL: it is our own user namespace
            raise
        sc.setns(init_pidfd, sc.SANDBOX_NAMESPACES)
        return
    _userns.enter_as_root()


def _exec_child(proc: ProcSpec) -> None:
    """In the final child: wire stdio, reset signals, harden, execve. Never returns."""
    try:
        devnull = None
        fds = []
        for want, fd in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
            if fd is None:
                if devnull is None:
                    devnull = os.open("/dev/null", os.O_RDWR)
                fd = devnull
            fds.append(fd)
        # dup to high numbers first so that dup2 onto 0..2 cannot clobber a source
        high = [os.dup(fd) for fd in fds]
        for i, fd in enumerate(high):
            os.dup2(fd, i)
        os.closerange(3, 65536)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP,
                    signal.SIGQUIT, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.umask(0o022)
        os.setsid()
        try:
            os.chdir(proc.cwd)
        except OSError:
            os.chdir("/")
        if proc.harden:
            security.harden()
        env = {k: v for k, v in proc.env.items()}
        argv0 = proc.argv[0]
        try:
            if "/" in argv0:
                os.execve(argv0, proc.argv, env)
            else:
                os.execvpe(argv0, proc.argv, env)
        except FileNotFoundError:
            os.write(2, f"{argv0}: command not found\n".encode())
            os._exit(127)
        except PermissionError:
            os.write(2, f"{argv0}: permission denied\n".encode())
            os._exit(126)
        except OSError as e:
            os.write(2, f"{argv0}: {e.strerror}\n".encode())
            os._exit(126)
    except BaseException as e:  # noqa: BLE001 - must never return into the caller's code
        try:
            os.write(2, f"localsb: cannot start command: {e}\n".encode())
        finally:
            os._exit(127)
    os._exit(127)


def _init_main(spec: RootSpec, report_fd: int, proc: ProcSpec | None, tree_fd: int) -> None:
    """PID 1 of the sandbox. Never returns."""
    code = 1
    try:
        _build_root(spec, tree_fd)
        # PID 1 is a fork of the caller (a CLI call, a supervisor): not dumpable, so the sandbox's
        # root (same uid, no CAP_SYS_PTRACE) cannot read its memory through /proc/1/mem.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
        main_pid = None
        if proc is not None:
            main_pid = os.fork()
            if main_pid == 0:
                os.close(report_fd)
                _exec_child(proc)
        # From here PID 1 only reaps: it keeps no capability inside the sandbox.
        caps.drop_all()
        _write(report_fd, b"R\n")
        close_fds({report_fd} if proc is not None else (), low=0)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                if main_pid is None:
                    sig = signal.sigwait({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
                    if sig != signal.SIGCHLD:
                        os._exit(0)
                    continue
                os._exit(code)
            except InterruptedError:
                continue
            if main_pid is not None and pid == main_pid:
                _write(report_fd, b"X%d\n" % status)
                # Leaving PID 1 makes the kernel kill every other process of the namespace.
                os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _write(report_fd, b"E" + str(e).encode(errors="replace").replace(b"\n", b" ") + b"\n")
        os._exit(code)


def _open_fds():
    try:
        return [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def close_fds(keep=(), low: int = 3) -> None:
    """Close every open descriptor from ``low`` up, except ``keep`` (a forked child must not
    hold its parent's pipes, sockets or database)."""
    keep = set(keep)
    for fd in _open_fds():
        if fd >= low and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def start(spec: RootSpec, cgroup_procs: list, proc: ProcSpec | None = None,
          timeout: float = 10.0) -> Started:
    """Fork the keeper and the sandbox's PID 1; return once the root is built.

    With ``proc``, PID 1 runs that one command and reports its wait status (read_exit_status).
    Raises HostError-worthy OSError with the child's message if the root cannot be built.
    """
    security.prepare()
    r, w = os.pipe2(os.O_CLOEXEC)
    keeper = os.fork()
    if keeper == 0:
        try:
            os.close(r)
            join_cgroups(cgroup_procs)
            # The keeper stays in the host's mount namespace: PID 1 makes its own (in _build_root)
            # and pivots out of the copy at once. A keeper holding a full copy of the host's mount
            # table would pin every mount of that moment (other state dirs' btrfs pools and their
            # loop devices) for the sandbox's whole life.
            tree = sc.open_tree(spec.root, sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_RECURSIVE)
            if spec.netns_fd is not None:
                sc.setns(spec.netns_fd, sc.CLONE_NEWNET)    # first: joining a netns needs its owner's privilege
            if spec.userns_fd is not None:
                sc.setns(spec.userns_fd, sc.CLONE_NEWUSER)
                _userns.enter_as_root()
            if spec.netns_fd is not None:
                sc.unshare(sc.SANDBOX_NAMESPACES & ~sc.CLONE_NEWNET & ~sc.CLONE_NEWNS)
            else:
                sc.unshare(sc.SANDBOX_NAMESPACES & ~sc.CLONE_NEWNS)
            init = os.fork()
            if init == 0:
                _init_main(spec, w, proc, tree)
            _write(w, b"P%d\n" % init)
            # The keeper closes everything it inherited but the id range's reservation, then waits
            # for PID 1 and mirrors its end.
            close_fds(spec.keep_fds)
            caps.drop_all()    # it only waits from here: no privilege inside the sandbox's namespaces

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            while True:
                try:
                    _, status = os.waitpid(init, 0)
                    break
                except InterruptedError:
                    continue
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)
        except BaseException as e:  # noqa: BLE001
            _write(w, b"E" + str(e).encode(errors="replace").replace(b"\n", b" ") + b"\n")
            os._exit(1)
    os.close(w)
    init_pid = None
    ready = False
    try:
        # The keeper's "P<pid>" and PID 1's "R" race: wait for both.
        carry = [b""]
        for line in _read_lines(r, timeout, carry):
            if line.startswith(b"P"):
                init_pid = int(line[1:])
            elif line == b"R":
                ready = True
            elif line.startswith(b"E"):
                raise OSError(errno.EIO, line[1:].decode(errors="replace"))
            if ready and init_pid is not None:
                return Started(keeper, init_pid, r, carry)
        raise OSError(errno.EIO, "sandbox init exited during setup")
    except BaseException:
        os.close(r)
        try:
            os.kill(keeper, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if init_pid:
            try:
                os.kill(init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(keeper)
        raise


def read_exit_status(started: Started) -> int | None:
    """Block until a one-shot sandbox's command ends; return its raw wait status (None if PID 1
    died without reporting, e.g. killed with the whole cgroup)."""
    status = None
    try:
        for line in _read_lines(started.status_fd, timeout=10 ** 9, carry=started.carry):
            if line.startswith(b"X"):
                status = int(line[1:])
    finally:
        os.close(started.status_fd)
    _reap(started.keeper_pid)
    return status


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def enter(init_pidfd: int, cgroup_procs: list, proc: ProcSpec) -> int:
    """Fork a waiter that joins the cgroups, setns(2)s into every namespace of the init behind
    ``init_pidfd`` and forks ``proc`` inside. Returns the waiter's pid; its wait status mirrors
    the command's (a signal death is re-raised on itself)."""
    security.prepare()
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        join_cgroups(cgroup_procs)
        join_sandbox(init_pidfd)
        _wait_for_command(proc)
    except BaseException as e:  # noqa: BLE001
        _waiter_failed(proc.stderr, e)


def _wait_for_command(proc: ProcSpec) -> None:
    """In a waiter that has entered the sandbox: fork ``proc``, then end as it ends. Never returns."""
    child = os.fork()
    if child == 0:
        _exec_child(proc)
    caps.drop_all()
    # The waiter keeps nothing open: an inherited pipe end (stdin feeder, client fds) would
    # keep the command from seeing EOF or the caller's pump from ending.
    close_fds()
    mirror_exit(child)


def _waiter_failed(err_fd: int | None, e: BaseException) -> None:
    """In a waiter: say why the command could not start, on its stderr, and exit 127."""
    try:
        os.write(err_fd if err_fd is not None else 2, f"localsb: cannot enter sandbox: {e}\n".encode())
    finally:
        os._exit(127)


class ReadyWaiter:
    """A waiter forked ahead of its command: it has joined its cgroups and setns(2)'d into the
    sandbox, and waits for the command on a socket; ``launch`` hands it over.

    Joining a cgroup is a migration, and on this kind of host (cgroup v1 controllers) the first
    migration after ~10 ms without one waits for an RCU grace period (5-8 ms, more under load).
    A supervisor keeps one of these ready, so an exec pays that wait ahead of time instead of in
    front of its caller. Otherwise it behaves as ``enter``: its wait status mirrors the command's.
    """

    def __init__(self, init_pidfd: int, cgroup_procs: list):
        security.prepare()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            self._serve(child.detach(), init_pidfd, cgroup_procs)
        child.close()
        self.pid = pid
        self._sock = parent

    @staticmethod
    def _serve(sock_fd: int, init_pidfd: int, cgroup_procs: list) -> None:
        """In the waiter. Never returns."""
        err = None
        try:
            # Forked from a threaded supervisor: drop every descriptor first (another execution's
            # pipe end held here would keep that execution's reader from seeing EOF).
            close_fds({sock_fd, init_pidfd})
            join_cgroups(cgroup_procs)
            join_sandbox(init_pidfd)
            os.close(init_pidfd)
            # Waiting for its command, it holds no more than the command itself will get.
            sc.prctl(sc.PR_SET_DUMPABLE, 0)
            caps.limit_capabilities()
            sock = socket.socket(fileno=sock_fd)
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
            while data and not data.endswith(b"\n"):
                more = sock.recv(1 << 20)
                if not more:
                    break
                data += more
            if not data.endswith(b"\n"):
                os._exit(0)     # discarded: no command came
            sock.send(b"k")     # taken: from here on this waiter's status is the command's
            sock.close()
            msg = json.loads(data)
            it = iter(fds)
            stdio = [next(it) if has else None for has in msg["fds"]]
            err = stdio[2]
            proc = ProcSpec(msg["argv"], env=msg["env"], cwd=msg["cwd"], stdin=stdio[0], stdout=stdio[1],
                            stderr=stdio[2], harden=msg["harden"])
            _wait_for_command(proc)
        except BaseException as e:  # noqa: BLE001
            _waiter_failed(err, e)

    def launch(self, proc: ProcSpec) -> int:
        """Hand ``proc`` to the waiter; return its pid (to wait on). Raises OSError if the waiter
        is gone (killed with its cgroup, say): the caller then falls back to ``enter``."""
        stdio = [proc.stdin, proc.stdout, proc.stderr]
        msg = {"argv": list(proc.argv), "env": proc.env, "cwd": proc.cwd, "harden": proc.harden,
               "fds": [fd is not None for fd in stdio]}
        try:
            socket.send_fds(self._sock, [(json.dumps(msg) + "\n").encode()],
                            [fd for fd in stdio if fd is not None])
            # The waiter says it has the command: one that died before (killed from outside)
            # started nothing, and the caller can start the command elsewhere.
            self._sock.settimeout(10.0)
            if self._sock.recv(1) != b"k":
                raise OSError(errno.EPIPE, "the ready waiter is gone")
        finally:
            self._sock.close()
        return self.pid

    def discard(self) -> None:
        """End the waiter without a command and reap it."""
        self._sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(self.pid)


def mirror_exit(child: int, ignore=(signal.SIGTERM, signal.SIGINT)) -> None:
    """In a waiter: wait for ``child`` and end the same way (a signal death is re-raised on
    itself), so the waiter's own parent reads the command's status. Never returns."""
    for sig in ignore:
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def await_exit(pid: int, tick=None, interval: float = 0.05) -> None:
    """Block until the child ``pid`` has exited (it stays unreaped: the caller's waitpid reads
    its status), calling ``tick()`` every ``interval`` seconds meanwhile. A pidfd wakes us the
    moment it exits, where a sleep-and-poll loop would add its interval to every command."""
    try:
        pfd = os.pidfd_open(pid)
    except (ProcessLookupError, ChildProcessError):
        return
    try:
        poller = select.poll()     # not select(): a busy server's descriptors go past 1024
        poller.register(pfd, select.POLLIN)
        while not poller.poll(interval * 1000):
            if tick is not None:
                tick()
    finally:
        os.close(pfd)


def status_to_exit_code(status: int | None) -> int:
    """Shell convention: exit code, or 128+signal for a signal death."""
    if status is None:
        return 137
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def set_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: orphaned keepers and waiters are reparented to us, not to host init."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


def pidfd_open(pid: int) -> int:
    return os.pidfd_open(pid)


__all__ = ["RootSpec", "ProcSpec", "Started", "start", "enter", "ReadyWaiter", "await_exit", "read_exit_status",
           "status_to_exit_code", "set_subreaper", "pidfd_open", "DEFAULT_PATH", "sys"]
