"""SSH sessions: entering a sandbox (its namespaces, a cgroup of its own, a PTY or pipes) for a shell, a command or sftp."""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import stat
import struct

from localsb.api import errors as E
from localsb.linux import spawn

from .common import auto_resume, command_env, live_row


WORKDIR = "/home/agentuity"


SHELL = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"]


SFTP_SERVER = ("for p in /usr/lib/openssh/sftp-server /usr/lib/sftp-server /usr/libexec/openssh/sftp-server "
               "/usr/libexec/sftp-server; do [ -x \"$p\" ] && exec \"$p\"; done; "
               "echo 'localsb: this sandbox has no sftp-server (apt-get install openssh-sftp-server in it, "
               "or use scp -O)' >&2; exit 127")


def command_argv(command: str) -> list:
    """A command line as sshd runs it: by the login shell (bash when the sandbox has it)."""
    return ["/bin/sh", "-c", 'if [ -x /bin/bash ]; then exec /bin/bash -c "$1"; fi; exec /bin/sh -c "$1"',
            "sh", command]


# entering a sandbox with a terminal ----------------------------------------------------------------
TIOCSPTLCK = 0x40045431


TIOCGPTPEER = 0x5441


TIOCSCTTY = 0x540E


TIOCSWINSZ = 0x5414


TIOCGWINSZ = 0x5413


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """ioctl(TIOCSWINSZ) on a pty master (the kernel sends SIGWINCH to the foreground group)."""
    try:
        fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, 0, 0))
    except OSError:
        pass


def enter(init_pidfd: int, cgroup_procs: list, argv: list, env: dict, cwd: str = WORKDIR, *,
          stdio: tuple | None = None, pty: tuple | None = None) -> tuple[int, int | None]:
    """fork(2), setns(2) through the init's pidfd, and (for a terminal) the sandbox's own /dev/ptmx
    with TIOCSPTLCK/TIOCGPTPEER/TIOCSCTTY: run ``argv`` inside a sandbox on the given stdio fds, or
    on a new terminal of the sandbox's devpts instance (``pty=(rows, cols)``).

    Forks a waiter that closes every descriptor it inherited but the ones it needs (a gateway's
    sockets and other sessions' pipes must not outlive their owners in it: a pipe whose write end
    a waiter still holds never reaches EOF), joins the cgroups, setns(2)s into every namespace of
    the init behind the pidfd, and forks the command. For a pty it opens /dev/ptmx there (the path
    resolves inside the sandbox), unlocks it (TIOCSPTLCK), hands the master back over a socketpair
    (SCM_RIGHTS), and the command becomes a session leader whose controlling terminal is the slave
    (TIOCGPTPEER, TIOCSCTTY). Returns (waiter pid, master fd or None); the waiter's wait status
    mirrors the command's, as spawn.enter's does.
    """
    from localsb.linux import caps, security
    security.prepare()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            spawn.close_fds({init_pidfd, theirs.fileno(), *(fd for fd in (stdio or ()) if fd is not None)})
            spawn.join_cgroups(cgroup_procs)
            spawn.join_sandbox(init_pidfd)
            slave = None
            if pty is not None:
                # the devpts instance's own ptmx: /dev is the sandbox's tmpfs, and what its root
                # put at /dev/ptmx (a FIFO, say) must not be what the gateway opens
                master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
                                 | os.O_NONBLOCK)
                mst = os.fstat(master)
                if not stat.S_ISCHR(mst.st_mode) or os.major(mst.st_rdev) != 5 or os.minor(mst.st_rdev) != 2:
                    raise OSError(errno.ENOTTY, "/dev/pts/ptmx is not the pty multiplexer")
                os.set_blocking(master, True)
                fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
                set_winsize(master, pty[0], pty[1])
                slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
                socket.send_fds(theirs, [b"M"], [master])
                os.close(master)
            else:
                theirs.send(b"S")
            child = os.fork()
            if child == 0:
                _exec_in(argv, env, cwd, (slave,) * 3 if slave is not None else stdio or (None, None, None),
                         ctty=slave is not None)
            for fd in {slave, *(stdio or ())}:
                if fd is not None and fd > 2:
                    os.close(fd)
            theirs.close()
            caps.drop_all()
            spawn.mirror_exit(child, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        except BaseException as e:  # noqa: BLE001 - never return into the caller's code
            try:
                theirs.send(b"E" + str(e).encode(errors="replace")[:500])
            finally:
                os._exit(127)
    theirs.close()
    try:
        msg, fds, _, _ = socket.recv_fds(ours, 1024, 1)
    finally:
        ours.close()
    if msg.startswith(b"S"):
        return pid, None
    if not fds:
        reap(pid)
        raise OSError(errno.EIO, (msg[1:] if msg.startswith(b"E") else b"the sandbox did not answer").decode())
    return pid, fds[0]


def _exec_in(argv: list, env: dict, cwd: str, stdio: tuple, ctty: bool) -> None:
    """In the final child: stdio (a terminal as controlling tty), new session, harden, exec."""
    from localsb.linux import security
    try:
        os.setsid()
        if ctty:
            fcntl.ioctl(stdio[0], TIOCSCTTY, 0)
        devnull = None
        fds = []
        for fd in stdio:
            if fd is None:
                if devnull is None:
                    devnull = os.open("/dev/null", os.O_RDWR)
                fd = devnull
            fds.append(fd)
        high = [os.dup(fd) for fd in fds]  # first out of 0..2, so dup2 cannot clobber a source
        for i, fd in enumerate(high):
            os.dup2(fd, i)
        os.closerange(3, 65536)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP,
                    signal.SIGQUIT, signal.SIGXFSZ, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
        security.harden()
        os.execvpe(argv[0], argv, env)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"localsb: cannot start {argv[0]}: {e}\r\n".encode())
        finally:
            os._exit(127)
    os._exit(127)


def reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


class Session:
    """What a shell/command needs to run in one sandbox: checked row, pidfd, env, a cgroup."""

    def __init__(self, ctx, sandbox_id: str, org_id=None):
        from localsb.linux.cgroups import SandboxCgroup

        from .store import loads
        self.ctx = ctx
        row = live_row(ctx, sandbox_id, org_id)
        auto_resume(ctx, row)
        self.sandbox_id = row["id"]
        pid = row["init_pid"]
        self.pidfd = os.pidfd_open(pid)
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                if ctx.cgroup_name(row["id"]) not in fh.read():
                    raise OSError(errno.ESRCH, "pid reused")
        except OSError:
            os.close(self.pidfd)
            raise E.SandboxTerminated(sandbox_id, "not running") from None
        self.env = command_env(row["id"], loads(row["env"], {}))
        self.cg = SandboxCgroup.from_dict(loads(row["cgroup"]))
        self.child = ctx.cgroups.create_child(self.cg, "ssh-" + os.urandom(4).hex())
        ctx.store.run("UPDATE sandboxes SET last_activity=? WHERE id=?", ctx.clock.now(), row["id"])

    def procs(self) -> list:
        return self.child.procs_files()

    def start_pipes(self, argv: list, stdin: int | None, stdout: int | None, stderr: int | None) -> int:
        return enter(self.pidfd, self.procs(), argv, dict(self.env), WORKDIR, stdio=(stdin, stdout, stderr))[0]

    def start_pty(self, argv: list, term: str | None, rows: int, cols: int) -> tuple[int, int]:
        env = dict(self.env)
        if term:
            env["TERM"] = term
        return enter(self.pidfd, self.procs(), argv, env, WORKDIR, pty=(rows, cols))

    def touch(self) -> None:
        try:
            self.ctx.store.run("UPDATE sandboxes SET last_activity=? WHERE id=?", self.ctx.clock.now(),
                                  self.sandbox_id)
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        try:
            os.close(self.pidfd)
        except OSError:
            pass
        try:
            if not self.ctx.cgroups.populated(self.child):
                self.ctx.cgroups.remove(self.child)
        except Exception:  # noqa: BLE001 - removed with the sandbox at the latest
            pass


def exit_code(status) -> int:
    return spawn.status_to_exit_code(status)
