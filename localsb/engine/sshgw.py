# long: to be split along its seams (protocol server, sessions, attach), issue 15
"""SSH into sandboxes: registered keys, the SSH gateway, and `cloud ssh`'s direct attach.

- Keys (`localsb ssh-key add|list|remove`): the user's public keys, as the hosted account keeps
  them, in ``<state>/ssh/authorized_keys.json``.
- The SSH gateway (asyncssh), one process per state directory: ``ssh -p <port> <sbx_id>@localhost``
  (the user name is the sandbox id, as hosted: ``ssh <sbx_id>@ion-<region>.agentuity.cloud``).
  Public-key authentication only, against the registered keys; any other key is refused. A
  session runs inside the sandbox like an exec: a shell with a PTY (the sandbox's own devpts),
  a command (with its exit status), or the ``sftp`` subsystem, served by the sandbox's own
  sftp-server (so scp, which speaks SFTP since OpenSSH 9, and sftp see the sandbox exactly as
  its processes do, mounts included). It runs while keys are registered and an interactive
  sandbox is live. Port: ``LOCALSB_SSH_PORT`` (0: any), default 2222, else a free one.
- ``localsb cloud ssh <id> [command]`` (Engine.ssh_command) needs neither a key nor an ssh client:
  ``python -m localsb.engine.sshgw attach <state> <id> [-- command]`` enters the sandbox directly,
  with a PTY when the terminal is one.

asyncssh is imported only by the gateway process.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
import time

from localsb.api import errors as E
from localsb.linux import spawn

from .context import Context
from .common import auto_resume, command_env, live_row
from .sshkeys import (fingerprint, key_add, key_list, key_remove, keys_registered, parse_public_keys,
                      registered_blobs, ssh_gateway)

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
        _reap(pid)
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


def _reap(pid: int) -> int | None:
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


# `cloud ssh`: the direct attach -----------------------------------------------------------------------
def attach_main(argv: list) -> int:
    """``attach <state_dir> <sandbox_id> [-- command]``: a shell (PTY when stdin is a terminal) or
    one command in the sandbox; returns its exit code."""
    if len(argv) < 2:
        print("usage: python -m localsb.engine.sshgw attach <state-dir> <sandbox-id> [-- command]", file=sys.stderr)
        return 2
    state_dir, sandbox_id = argv[0], argv[1]
    rest = argv[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    command = " ".join(rest) if rest else None
    ctx = Context(state_dir)
    try:
        session = Session(ctx, sandbox_id)
    except E.LocalsbError as e:
        print(f"localsb: {e.message}", file=sys.stderr)
        return 4 if isinstance(e, E.NotFound) else 1
    try:
        tty = os.isatty(0) and os.isatty(1)
        if command is not None or not tty:
            waiter = session.start_pipes(command_argv(command) if command is not None else SHELL, 0, 1, 2)
            return _exit_code(_wait_quiet(waiter))
        return _attach_tty(session)
    finally:
        session.close()


def _wait_quiet(pid: int):
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C goes to the command, not to us
    try:
        return _reap(pid)
    finally:
        signal.signal(signal.SIGINT, old)


def _exit_code(status) -> int:
    return spawn.status_to_exit_code(status)


def _attach_tty(session: Session) -> int:
    import select
    import termios
    import tty
    size = fcntl.ioctl(0, TIOCGWINSZ, b"\0" * 8)
    rows, cols = struct.unpack("HHHH", size)[:2]
    term = os.environ.get("TERM", "xterm")
    waiter, master = session.start_pty(SHELL, term, rows, cols)
    saved = termios.tcgetattr(0)
    resized = []
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: resized.append(1))
    tty.setraw(0)
    status = None
    last_touch = time.monotonic()
    try:
        while True:
            if resized:
                resized.clear()
                r, c = struct.unpack("HHHH", fcntl.ioctl(0, TIOCGWINSZ, b"\0" * 8))[:2]
                set_winsize(master, r, c)
            try:
                ready, _, _ = select.select([0, master], [], [], 1.0)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                _write_all(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    _write_all(master, data)
            if time.monotonic() - last_touch > 10:
                last_touch = time.monotonic()
                session.touch()
            if status is None:
                pid, st = os.waitpid(waiter, os.WNOHANG)
                if pid:
                    status = st
                    # drain what the shell wrote last, then end even if a background job keeps the tty
                    while select.select([master], [], [], 0.05)[0]:
                        try:
                            data = os.read(master, 65536)
                        except OSError:
                            break
                        if not data:
                            break
                        _write_all(1, data)
                    break
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(master)
    if status is None:
        status = _reap(waiter)
    return _exit_code(status)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


# the SSH gateway process ----------------------------------------------------------------------------
def main():
    """Entry point of the gateway interpreter (argv: state_dir listening_fd)."""
    from .gateway import serve_daemon
    serve_daemon(SshGateway)


def host_key_path(state_dir: str) -> str:
    return os.path.join(state_dir, "ssh", "host_ed25519_key")


class SshGateway:
    def __init__(self, state_dir: str, sock: socket.socket):
        self.state_dir = state_dir
        self.sock = sock
        self.ctx = Context(state_dir)
        self.daemon = ssh_gateway(state_dir)

    def _host_key(self):
        import asyncssh
        path = host_key_path(self.state_dir)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            key = asyncssh.generate_private_key("ssh-ed25519", comment="localsb-gateway")
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, key.export_private_key())
            os.close(fd)
            os.rename(tmp, path)
        return asyncssh.read_private_key(path)

    async def serve(self):
        import asyncio

        import asyncssh
        gateway = self

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username):
                return True

            def password_auth_supported(self):
                return False

            def kbdint_auth_supported(self):
                return False

            def public_key_auth_supported(self):
                return True

            def validate_public_key(self, username, key):
                try:
                    return key.public_data in registered_blobs(gateway.state_dir)
                except Exception:  # noqa: BLE001 - an unreadable key file refuses everyone
                    return False

            def session_requested(self):
                return _session_class()(gateway)

        self.sock.setblocking(False)
        acceptor = await asyncssh.listen(sock=self.sock, server_host_keys=[self._host_key()],
                                         server_factory=Server, encoding=None, allow_pty=True,
                                         x11_forwarding=False, agent_forwarding=False,
                                         keepalive_interval=30)
        while True:
            await asyncio.sleep(1.0)
            try:
                self.daemon.exit_if_unneeded(self.ctx.store, acceptor.close)
            except Exception as e:  # noqa: BLE001
                print(f"sshgw: {e}", file=sys.stderr)


_SESSION = None


def _session_class():
    """asyncssh.SSHServerSession (its public callback API) for one channel: a shell, a command or
    the sftp subsystem, run inside the sandbox named by the user name."""
    global _SESSION
    if _SESSION is not None:
        return _SESSION
    import asyncio

    import asyncssh

    class SandboxSession(asyncssh.SSHServerSession):
        STDIN_HIGH = 1 << 18

        def __init__(self, gateway):
            self.gateway = gateway
            self.chan = None
            self.kind = None
            self.command = None
            self.term = None
            self.size = (80, 24)
            self.session = None
            self.master = None
            self.stdin_fd = None
            self.stdin_buf = bytearray()
            self.stdin_eof = False
            self.outputs = {}        # fd -> write function of the channel
            self.paused = False
            self.fds = []
            self.done = None

        # requests ------------------------------------------------------------------------------
        def connection_made(self, chan):
            self.chan = chan

        def pty_requested(self, term_type, term_size, term_modes):
            self.term = term_type or "xterm"
            if term_size and term_size[0] and term_size[1]:
                self.size = (term_size[0], term_size[1])
            return True

        def shell_requested(self):
            self.kind = "shell"
            return True

        def exec_requested(self, command):
            self.kind, self.command = "exec", command
            return True

        def subsystem_requested(self, subsystem):
            if subsystem == "sftp":
                self.kind = "sftp"
                return True
            return False

        def session_started(self):
            self.loop = asyncio.get_running_loop()
            self.done = asyncio.ensure_future(self.run())

        # running -------------------------------------------------------------------------------
        async def run(self):
            username = self.chan.get_extra_info("username") or ""
            try:
                self.session = Session(self.gateway.ctx, username)
            except E.LocalsbError as e:
                self._fail(f"localsb: {e.message}")
                return
            except Exception as e:  # noqa: BLE001
                self._fail(f"localsb: cannot enter {username}: {e}")
                return
            try:
                if self.kind == "sftp":
                    argv = ["/bin/sh", "-c", SFTP_SERVER]
                elif self.kind == "exec":
                    argv = command_argv(self.command)
                else:
                    argv = SHELL
                if self.term is not None and self.kind != "sftp":
                    cols, rows = self.size
                    waiter, self.master = self.session.start_pty(argv, self.term, rows, cols)
                    self.fds.append(self.master)
                    os.set_blocking(self.master, False)
                    self.stdin_fd = self.master
                    self.outputs[self.master] = self.chan.write
                else:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    out_r, out_w = os.pipe2(os.O_CLOEXEC)
                    err_r, err_w = os.pipe2(os.O_CLOEXEC)
                    self.fds += [in_w, out_r, err_r]
                    try:
                        waiter = self.session.start_pipes(argv, in_r, out_w, err_w)
                    finally:
                        for fd in (in_r, out_w, err_w):
                            os.close(fd)
                    for fd in (in_w, out_r, err_r):
                        os.set_blocking(fd, False)
                    self.stdin_fd = in_w
                    self.outputs[out_r] = self.chan.write
                    self.outputs[err_r] = self.chan.write_stderr
                self.eof_seen = asyncio.Event()
                for fd in self.outputs:
                    self.loop.add_reader(fd, self._readable, fd)
                self._flush_stdin()
                status = await _wait_pid(self.loop, waiter, self.session)
                if self.outputs:
                    try:
                        await asyncio.wait_for(self.eof_seen.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass  # a background process keeps the output open: end like sshd does
                self._drain_outputs()
                self.chan.exit(_exit_code(status))
            except Exception as e:  # noqa: BLE001
                self._fail(f"localsb: {e}")
            finally:
                self._close_fds()

        def _fail(self, message):
            try:
                self.chan.write_stderr((message + "\r\n").encode())
                self.chan.exit(255)
            except Exception:  # noqa: BLE001
                pass

        # sandbox output -> channel ---------------------------------------------------------------
        def _readable(self, fd):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""   # EIO: the pty's last slave holder is gone
            if data:
                self.outputs[fd](data)
                return
            self.loop.remove_reader(fd)
            del self.outputs[fd]
            if not self.outputs:
                self.eof_seen.set()

        def _drain_outputs(self):
            for fd in list(self.outputs):
                self.loop.remove_reader(fd)
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        break
                    if not data:
                        break
                    self.outputs[fd](data)
            self.outputs.clear()

        def pause_writing(self):
            self.paused = True
            for fd in self.outputs:
                self.loop.remove_reader(fd)

        def resume_writing(self):
            self.paused = False
            for fd in self.outputs:
                self.loop.add_reader(fd, self._readable, fd)

        # channel -> sandbox input ----------------------------------------------------------------
        def data_received(self, data, datatype):
            if datatype is not None:
                return
            self.stdin_buf += data
            self._flush_stdin()

        def eof_received(self):
            self.stdin_eof = True
            self._flush_stdin()
            return True   # half-open: the command's output still comes

        def _flush_stdin(self):
            fd = self.stdin_fd
            if fd is None:
                if len(self.stdin_buf) > self.STDIN_HIGH:
                    self.chan.pause_reading()
                return
            while self.stdin_buf:
                try:
                    n = os.write(fd, self.stdin_buf)
                    del self.stdin_buf[:n]
                except BlockingIOError:
                    self.loop.add_writer(fd, self._writable)
                    if len(self.stdin_buf) > self.STDIN_HIGH:
                        self.chan.pause_reading()
                    return
                except OSError:
                    self.stdin_buf.clear()
                    break
            self.chan.resume_reading()
            if self.stdin_eof and fd != self.master and fd in self.fds:
                self.fds.remove(fd)
                os.close(fd)
                self.stdin_fd = None

        def _writable(self):
            self.loop.remove_writer(self.stdin_fd)
            self._flush_stdin()

        def terminal_size_changed(self, width, height, pixwidth, pixheight):
            self.size = (width, height)
            if self.master is not None:
                set_winsize(self.master, height, width)

        def connection_lost(self, exc):
            # closing the pty master hangs the terminal up (SIGHUP to the shell), as sshd does
            self._close_fds()

        def _close_fds(self):
            for fd in list(self.outputs):
                try:
                    self.loop.remove_reader(fd)
                except Exception:  # noqa: BLE001
                    pass
            if self.stdin_fd is not None:
                try:
                    self.loop.remove_writer(self.stdin_fd)
                except Exception:  # noqa: BLE001
                    pass
            for fd in self.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.fds = []
            self.stdin_fd = None
            if self.session is not None:
                self.session.close()
                self.session = None

    _SESSION = SandboxSession
    return _SESSION


async def _wait_pid(loop, pid, session):
    """Wait for a child without blocking the loop: its pidfd becomes readable when it exits."""
    import asyncio
    pidfd = os.pidfd_open(pid)
    try:
        last = time.monotonic()
        while True:
            pid_, status = os.waitpid(pid, os.WNOHANG)
            if pid_:
                return status
            fut = loop.create_future()
            loop.add_reader(pidfd, lambda: fut.done() or fut.set_result(None))
            try:
                await asyncio.wait_for(fut, 10.0)
            except asyncio.TimeoutError:
                pass
            finally:
                loop.remove_reader(pidfd)
            if time.monotonic() - last > 10:
                last = time.monotonic()
                session.touch()
    finally:
        os.close(pidfd)


if __name__ == "__main__":
    if sys.argv[1:2] == ["attach"]:
        sys.exit(attach_main(sys.argv[2:]))
    print("usage: python -m localsb.engine.sshgw attach <state-dir> <sandbox-id> [-- command]", file=sys.stderr)
    sys.exit(2)


__all__ = ["key_add", "key_list", "key_remove", "keys_registered", "fingerprint", "parse_public_keys",
           "ssh_gateway", "SshGateway", "Session", "enter", "attach_main", "main"]
