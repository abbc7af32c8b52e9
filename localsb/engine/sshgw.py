"""The SSH gateway's protocol server (asyncssh), and the entry point of `cloud ssh`'s direct attach.

SSH into sandboxes, the whole picture (the modules: sshkeys.py, sshsession.py, sshattach.py, this one):

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

import os
import socket
import sys
import time

from localsb.api import errors as E

from .context import Context
from .sshkeys import registered_blobs, ssh_gateway
from .sshsession import SFTP_SERVER, SHELL, Session, command_argv, exit_code, set_winsize


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
                self.chan.exit(exit_code(status))
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
        from .sshattach import attach_main
        sys.exit(attach_main(sys.argv[2:]))
    print("usage: python -m localsb.engine.sshgw attach <state-dir> <sandbox-id> [-- command]", file=sys.stderr)
    sys.exit(2)


__all__ = ["SshGateway", "host_key_path", "main"]
