"""`cloud ssh`'s direct attach: a shell or one command in a sandbox from this terminal, no key and no ssh client."""
from __future__ import annotations

import fcntl
import os
import signal
import struct
import sys
import time

from localsb.api import errors as E

from .context import Context
from .sshsession import SHELL, Session, TIOCGWINSZ, command_argv, exit_code, reap, set_winsize


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
            return exit_code(_wait_quiet(waiter))
        return _attach_tty(session)
    finally:
        session.close()


def _wait_quiet(pid: int):
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C goes to the command, not to us
    try:
        return reap(pid)
    finally:
        signal.signal(signal.SIGINT, old)


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
        status = reap(waiter)
    return exit_code(status)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]
