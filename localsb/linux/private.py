"""Private host files: the state directory and what localsb keeps in it, out of other users' reach.

Other local users are part of the threat model: the state database holds every sandbox's
``--env`` and commands, ``out/`` their output, the pool their whole filesystems. So the state
directory and its subdirectories are 0700 and the files 0600, set explicitly where each is made
(and forced on what an older localsb left with looser modes), never by a process-wide umask:
localsb also writes files *into* sandboxes (fs cp, ``--file``) and starts their processes, and
those must keep exactly the modes the user asked for.
"""
from __future__ import annotations

import os
import stat

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str) -> str:
    """mkdir(2) ``path`` (missing parents as usual, they are not ours) and force it to 0700 with
    chmod(2) when it already existed with another mode. Returns ``path``."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "Not a directory", path)
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        try:
            os.chmod(path, DIR_MODE)
        except PermissionError:
            pass    # not ours (a shared parent named as a state dir): leave its owner's choice
    return path


def _force(fd: int) -> int:
    if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd


def open_private(path: str, flags: int, dir_fd: int | None = None) -> int:
    """open(2) with O_CREAT and mode 0600 (a file that existed with another mode is fchmod'ed to
    0600): the descriptor. Not O_NOFOLLOW: only root writes below the state directory."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    try:
        return _force(fd)
    except BaseException:
        os.close(fd)
        raise


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for builtins.open(): the file is created (or forced) 0600."""
    return open_private(path, flags)


def private_sqlite(path: str) -> None:
    """A SQLite database and its -wal and -shm files 0600. SQLite creates a database with 0644
    less the umask, and its -wal and -shm with the database's own mode: so the database file is
    made here first, 0600 (an empty file is an empty database), and the files an older version
    left with other modes are chmod'ed."""
    os.close(open_private(path, os.O_RDWR))
    for suffix in ("-wal", "-shm", "-journal"):
        make_private(path + suffix)


def make_private(path: str) -> None:
    """chmod(2) an existing file to 0600 when its mode differs (no-op when absent)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) != FILE_MODE:
        try:
            os.chmod(path, FILE_MODE)
        except FileNotFoundError:
            pass
