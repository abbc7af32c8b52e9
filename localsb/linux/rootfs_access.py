# long: every openat2 walk of a sandbox's tree in one place, so that none escapes review
"""Race-free access to a sandbox's root filesystem from the host.

A sandbox's processes own everything below its root directory: they may plant symlinks to host
files (``/home/agentuity/x -> /etc/shadow``), symlinked parent directories, ``..`` tricks and
symlink loops, and they may swap any of these while we work. So no path-based call is ever made on
a host path joined from user input. Every sandbox path is resolved by the kernel with openat2(2)
and ``RESOLVE_IN_ROOT`` relative to a descriptor of the root (absolute symlinks and ``..`` are
clamped to the root, as a chroot would do, atomically), and every operation then works through
descriptors (the ``*at`` system calls). Walks below a directory never follow symlinks and never
cross mount points.

Paths: a relative sandbox path is relative to the workspace ``/home/agentuity``; paths are
normalised lexically first (``a/../b`` is ``b``, as Go's ``filepath.Clean`` would make it), which
never weakens the guarantee since the kernel does the resolution. A path with a NUL byte is
rejected. Errors are ``localsb.api.errors`` classes whose message names the sandbox path.
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat as st_
from datetime import datetime, timezone
from typing import Iterator, NamedTuple

from localsb.api.errors import (AlreadyExists, FileNotFoundInSandbox, Forbidden, HostError,
                                LocalsbError, PayloadTooLarge, ValidationError)

WORKSPACE = "/home/agentuity"

# linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# openat2 has the same number on every architecture of the unified syscall table (5.6+).
SYS_openat2 = 437

# How a sandbox path is resolved from the root descriptor: chroot-like, and never through
# /proc-style magic links (those could point at host objects).
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
# How a single step below an already-open directory is taken during walks and archive
# extraction: no symlink anywhere, nothing above the directory, no other mount.
STRICT_BENEATH = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc; find_library would run ldconfig
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))


def openat2(dirfd: int, path, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` under the ``resolve`` restrictions.

    Returns a new O_CLOEXEC descriptor; raises OSError with the errno. EAGAIN (the kernel saw a
    concurrent rename while resolving ``..`` under RESOLVE_IN_ROOT/BENEATH) and EINTR are retried.
    """
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise OSError(errno.EINVAL, "path contains a NUL byte", path)
    if not flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0x410000)):
        mode = 0    # openat2 rejects a mode without O_CREAT/O_TMPFILE
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    for _ in range(128):
        fd = _syscall(ctypes.c_long(SYS_openat2), ctypes.c_long(dirfd), ctypes.c_char_p(raw),
                      ctypes.byref(how), _HOW_SIZE)
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err), os.fsdecode(raw))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(raw))


def fs_error(exc: OSError, path: str, doing: str = "") -> LocalsbError:
    """Map an OSError on sandbox ``path`` to one clear localsb error naming that path."""
    what = f" ({doing})" if doing else ""
    e = exc.errno
    if e == errno.ENOENT:
        return FileNotFoundInSandbox(f"No such file or directory: {path}", path=path)
    if e == errno.ENOTDIR:
        return ValidationError(f"Not a directory: {path}", path=path)
    if e == errno.EISDIR:
        return ValidationError(f"Is a directory: {path}", path=path)
    if e == errno.EEXIST:
        return AlreadyExists(f"File exists: {path}", path=path)
    if e == errno.ENOTEMPTY:
        return ValidationError(f"Directory not empty: {path}", path=path)
    if e == errno.ELOOP:
        return ValidationError(f"Too many levels of symbolic links: {path}", path=path)
    if e == errno.EXDEV:
        return ValidationError(f"Path leaves its directory or crosses a mount point: {path}",
                               path=path)
    if e in (errno.EACCES, errno.EPERM):
        return Forbidden(f"Permission denied: {path}{what}", path=path)
    if e == errno.EROFS:
        return Forbidden(f"Read-only file system: {path}", path=path)
    if e in (errno.ENOSPC, errno.EDQUOT):
        return PayloadTooLarge(f"No space left on the sandbox disk writing {path}", path=path)
    if e == errno.ENAMETOOLONG:
        return ValidationError(f"File name too long: {path}", path=path)
    if e == errno.EMFILE:
        return HostError(f"Too many open files walking {path} (directory tree too deep)", path=path)
    return HostError(f"{os.strerror(e) if e else exc}: {path}{what}", path=path)


def normalize(path, workspace: str = WORKSPACE) -> str:
    """The absolute, lexically clean sandbox path for ``path`` (relative = under the workspace)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        raise ValidationError(f"Invalid path: {path!r}")
    if "\0" in path:
        raise ValidationError(f"Invalid path (contains a NUL byte): {path!r}")
    if not path.startswith("/"):
        path = workspace + "/" + path
    path = posixpath.normpath(path)
    if path.startswith("//"):   # normpath keeps a leading '//' (POSIX leaves it implementation-defined)
        path = "/" + path.lstrip("/")
    return path


def mode_string(mode: int) -> str:
    return "%04o" % (mode & 0o7777)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_info(path: str, st: os.stat_result, link_target: str | None = None) -> dict:
    """A FileInfo dict (reference §3.9) from an lstat result."""
    info = {
        "path": path,
        "size": st.st_size,
        "isDir": st_.S_ISDIR(st.st_mode),
        "mode": mode_string(st.st_mode),
        "modTime": rfc3339(st.st_mtime),
    }
    if st_.S_ISLNK(st.st_mode):
        info["isSymlink"] = True
        info["linkTarget"] = link_target if link_target is not None else ""
    return info


class WalkEntry(NamedTuple):
    """One entry of RootedFS.walk. ``dir_fd`` (the containing directory, opened O_RDONLY) is only
    valid until the walk moves on; ``name`` is a single component in it."""
    rel: str                # path relative to the walked directory ('' never appears)
    name: str
    dir_fd: int
    st: os.stat_result      # lstat
    mountpoint: bool = False    # a directory on another mount: listed, never entered


def _close(fd):
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def open_beneath(dir_fd: int, rel: str, flags: int, mode: int = 0) -> int:
    """openat2(2) with RESOLVE_BENEATH|NO_SYMLINKS|NO_MAGICLINKS|NO_XDEV: ``rel`` below ``dir_fd``
    without any symlink, ``..`` above it or mount crossing (raises OSError: ELOOP / EXDEV)."""
    return openat2(dir_fd, rel, flags, mode, STRICT_BENEATH)


def reopen(fd: int, flags: int) -> int:
    """open(2) of ``/proc/self/fd/N``: a new open file of the very inode an O_PATH descriptor
    holds. Used to open content only after fstat has shown a regular file (opening a device node
    can act on the host; opening a fifo blocks), with no path lookup the sandbox could race."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC | os.O_NOCTTY)


def open_regular_at(dir_fd: int, name: str, flags: int = os.O_RDONLY):
    """Open regular file ``name`` of ``dir_fd`` (one component, never followed): O_PATH, fstat,
    then reopen. Returns (fd, stat) or None when it is gone or not a regular file."""
    try:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(pfd)
        if not st_.S_ISREG(st.st_mode):
            return None
        return reopen(pfd, flags), st
    finally:
        os.close(pfd)


def scandir_sorted(dir_fd: int) -> list:
    """getdents64(2) via os.scandir on a dup of ``dir_fd``: the directory's entries, sorted."""
    with os.scandir(dir_fd) as it:
        return sorted(it, key=lambda e: e.name)


def rmtree_contents_at(parent_fd: int, name: str, display: str) -> None:
    """Empty directory ``name`` of ``parent_fd`` with unlinkat(2), descending through openat2
    (RESOLVE_BENEATH|NO_SYMLINKS|NO_XDEV) descriptors: a symlink is removed, never followed, and a
    mount point inside is an error with nothing in it touched. Iterative, one descriptor per
    level, so a deep tree cannot exhaust the Python stack. ``display`` names the directory in
    errors (a sandbox path)."""
    stack: list[list] = []  # [fd, pending entries or None, display path]

    def push(pfd, nm, shown):
        try:
            fd = open_beneath(pfd, nm, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise ValidationError(f"Refusing to remove a mount point: {shown}",
                                      path=shown) from None
            raise fs_error(exc, shown) from None
        stack.append([fd, None, shown])

    push(parent_fd, name, display)
    try:
        while stack:
            top = stack[-1]
            fd, pending, shown = top
            if pending is None:
                top[1] = pending = scandir_sorted(fd)
            if pending:
                ent = pending.pop()
                child = shown.rstrip("/") + "/" + ent.name
                try:
                    if ent.is_dir(follow_symlinks=False):
                        push(fd, ent.name, child)
                    else:
                        os.unlink(ent.name, dir_fd=fd)
                except FileNotFoundError:
                    pass    # removed concurrently: fine
                except OSError as exc:
                    raise fs_error(exc, child) from None
                continue
            stack.pop()
            os.close(fd)
            if stack:
                nm = posixpath.basename(shown)
                try:
                    os.rmdir(nm, dir_fd=stack[-1][0])
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY:
                        raise fs_error(exc, shown) from None
                    # something was created meanwhile (the sandbox races us): go again
                    push(stack[-1][0], nm, shown)
    finally:
        for fd, _, _ in stack:
            _close(fd)


class RootedFS:
    """A sandbox root filesystem seen from the host; every operation stays inside ``root``.

    ``root`` is the host path of the directory whose contents are the sandbox's ``/`` (or an open
    descriptor of it, which is then duplicated). New files, directories and links are chowned to
    ``owner`` (uid, gid); by default the owner of the root directory, i.e. the sandbox's root user
    as mapped on the host, so that a user-namespaced sandbox can modify what was written for it.
    Use as a context manager, or call close().
    """

    def __init__(self, root, *, workspace: str = WORKSPACE, owner: tuple[int, int] | None = None):
        self.workspace = workspace
        self.root_path = root if isinstance(root, str) else f"<fd {root}>"
        try:
            if isinstance(root, int):
                self.root_fd = os.dup(root)
            else:
                self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise HostError(f"Sandbox root filesystem unavailable: {self.root_path} "
                            f"({exc.strerror})") from None
        st = os.fstat(self.root_fd)
        self.owner = owner if owner is not None else (st.st_uid, st.st_gid)
        self._must_chown = tuple(self.owner) != (os.geteuid(), os.getegid())

    # lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "root_fd", -1) >= 0:
            self.close()

    # paths --------------------------------------------------------------------------------------
    def resolve(self, path) -> str:
        """Normalise a user path to an absolute sandbox path (no filesystem access)."""
        return normalize(path, self.workspace)

    def chown_new(self, fd_or_name, dir_fd: int | None = None) -> None:
        """fchown(2)/fchownat(AT_SYMLINK_NOFOLLOW) a just-created object to the sandbox owner."""
        if not self._must_chown:
            return
        uid, gid = self.owner
        if dir_fd is None:
            os.fchown(fd_or_name, uid, gid)
        else:
            os.chown(fd_or_name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def _open(self, abs_path: str, flags: int, mode: int = 0, doing: str = "") -> int:
        try:
            return openat2(self.root_fd, abs_path, flags, mode, IN_ROOT)
        except OSError as exc:
            raise fs_error(exc, abs_path, doing) from None

    def open_parent(self, path) -> tuple[int, str, str]:
        """openat2(RESOLVE_IN_ROOT) the parent directory of ``path`` (O_PATH).

        Returns (parent_fd, final_name, abs_path); the caller closes parent_fd. The final component
        is never resolved here, so the caller decides whether to follow it.
        """
        abs_path = self.resolve(path)
        if abs_path == "/":
            raise ValidationError("Not allowed on the sandbox root directory: /")
        parent, name = posixpath.split(abs_path)
        fd = self._open(parent, os.O_PATH | os.O_DIRECTORY)
        return fd, name, abs_path

    # opening ------------------------------------------------------------------------------------
    def open_file(self, path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
        """openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS) ``path``; symlinks are followed, inside
        the root only. A file created here is chowned to the sandbox owner."""
        abs_path = self.resolve(path)
        creating = bool(flags & os.O_CREAT)
        fd = self._open(abs_path, flags, mode)
        if creating and self._must_chown:
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and st.st_nlink == 1 and st.st_size == 0:
                self.chown_new(fd)
        return fd

    def open_regular(self, path, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result, str]:
        """Open regular file ``path`` (symlinks followed inside the root) for its content:
        openat2(O_PATH), fstat, then reopen, so a directory, device node or fifo is refused
        before it is ever opened. Returns (fd, stat, abs_path)."""
        abs_path = self.resolve(path)
        pfd = self._open(abs_path, os.O_PATH)
        try:
            st = os.fstat(pfd)
            if st_.S_ISDIR(st.st_mode):
                raise ValidationError(f"Is a directory: {abs_path}", path=abs_path)
            if not st_.S_ISREG(st.st_mode):
                raise ValidationError(f"Not a regular file: {abs_path}", path=abs_path)
            try:
                return reopen(pfd, flags), st, abs_path
            except OSError as exc:
                raise fs_error(exc, abs_path) from None
        finally:
            os.close(pfd)

    def open_for_write(self, path, mode: int = 0o644) -> tuple[int, str]:
        """Open ``path`` for writing from offset 0, truncated: an existing regular file (found
        through openat2 O_PATH + fstat, then reopened), or a new one (O_CREAT|O_EXCL, chowned to
        the sandbox owner). Anything else is refused without being opened. -> (fd, abs_path)"""
        abs_path = self.resolve(path)
        if abs_path == "/":
            raise ValidationError("Is a directory: /", path="/")
        for _ in range(8):
            try:
                fd, _st, _ = self.open_regular(abs_path, os.O_WRONLY | os.O_TRUNC)
                return fd, abs_path
            except FileNotFoundInSandbox as exc:
                if exc.details.get("path") != abs_path:
                    raise
            try:
                fd = openat2(self.root_fd, abs_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOCTTY, mode, IN_ROOT)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise fs_error(exc, abs_path) from None
                try:    # a dangling symlink: create what it names, inside the root
                    fd = openat2(self.root_fd, abs_path, os.O_WRONLY | os.O_CREAT | os.O_NOCTTY
                                 | os.O_NONBLOCK, mode, IN_ROOT)
                except OSError as exc2:
                    if exc2.errno == errno.EEXIST:
                        continue    # raced: look again
                    raise fs_error(exc2, abs_path) from None
                st = os.fstat(fd)
                if not st_.S_ISREG(st.st_mode):
                    os.close(fd)
                    raise ValidationError(f"Not a regular file: {abs_path}", path=abs_path)
                os.ftruncate(fd, 0)
                if st.st_size == 0 and st.st_uid == os.geteuid():
                    self.chown_new(fd)
                return fd, abs_path
            self.chown_new(fd)
            return fd, abs_path
        raise fs_error(OSError(errno.EAGAIN, "changed while opening"), abs_path)

    def open_dir(self, path) -> int:
        """openat2(RESOLVE_IN_ROOT) ``path`` as a directory (O_RDONLY|O_DIRECTORY)."""
        return self._open(self.resolve(path), os.O_RDONLY | os.O_DIRECTORY)

    # metadata -----------------------------------------------------------------------------------
    def stat(self, path) -> os.stat_result:
        """fstat(2) of an O_PATH descriptor from openat2(RESOLVE_IN_ROOT): follows symlinks inside
        the root."""
        fd = self._open(self.resolve(path), os.O_PATH)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def lstat(self, path) -> os.stat_result:
        """fstatat(2, AT_SYMLINK_NOFOLLOW) of the final component in its openat2-resolved parent."""
        abs_path = self.resolve(path)
        if abs_path == "/":
            return os.fstat(self.root_fd)
        pfd, name, abs_path = self.open_parent(abs_path)
        try:
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError as exc:
            raise fs_error(exc, abs_path) from None
        finally:
            os.close(pfd)

    def exists(self, path, follow: bool = False) -> bool:
        try:
            self.stat(path) if follow else self.lstat(path)
            return True
        except FileNotFoundInSandbox:
            return False

    def readlink(self, path) -> str:
        """readlinkat(2) on the final component (never followed)."""
        pfd, name, abs_path = self.open_parent(path)
        try:
            return os.readlink(name, dir_fd=pfd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise ValidationError(f"Not a symbolic link: {abs_path}", path=abs_path) from None
            raise fs_error(exc, abs_path) from None
        finally:
            os.close(pfd)

    # changing -----------------------------------------------------------------------------------
    def mkdir(self, path, mode: int = 0o755, *, parents: bool = False,
              exist_ok: bool = False) -> list[str]:
        """mkdirat(2) in the openat2-resolved parent; with ``parents`` each missing ancestor too.

        Returns the absolute sandbox paths created, outermost first. An existing directory is an
        error (AlreadyExists) unless ``parents`` or ``exist_ok``; an existing non-directory always
        is.
        """
        abs_path = self.resolve(path)
        if abs_path == "/":
            if parents or exist_ok:
                return []
            raise AlreadyExists("File exists: /", path="/")
        created: list[str] = []
        if not parents:
            self._mkdir_one(abs_path, mode, exist_ok, created)
            return created
        try:
            if st_.S_ISDIR(self.stat(abs_path).st_mode):
                return created      # the common case of fs_write: nothing to make
        except LocalsbError:
            pass
        # top down, one component at a time (iterative: a path may have ~2000 components)
        parts = abs_path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._mkdir_one("/" + "/".join(parts[:i]), mode if i == len(parts) else 0o755,
                            True, created)
        return created

    def _mkdir_one(self, abs_path: str, mode: int, exist_ok: bool, created: list) -> None:
        parent, name = posixpath.split(abs_path)
        pfd = self._open(parent, os.O_PATH | os.O_DIRECTORY)
        try:
            try:
                os.mkdir(name, mode, dir_fd=pfd)
            except FileExistsError:
                # an existing directory, or a symlink to one inside the root, will do
                try:
                    is_dir = st_.S_ISDIR(self.stat(abs_path).st_mode)
                except LocalsbError:
                    is_dir = False
                if not is_dir:
                    raise ValidationError(f"File exists and is not a directory: {abs_path}",
                                          path=abs_path) from None
                if not exist_ok:
                    raise AlreadyExists(f"File exists: {abs_path}", path=abs_path) from None
                return
            except OSError as exc:
                raise fs_error(exc, abs_path) from None
            self.chown_new(name, pfd)
            created.append(abs_path)
        finally:
            os.close(pfd)

    def symlink(self, target: str, path) -> None:
        """symlinkat(2) in the openat2-resolved parent (``target`` is stored, never resolved)."""
        if "\0" in target:
            raise ValidationError(f"Invalid symlink target (contains a NUL byte): {target!r}")
        pfd, name, abs_path = self.open_parent(path)
        try:
            os.symlink(target, name, dir_fd=pfd)
            self.chown_new(name, pfd)
        except OSError as exc:
            raise fs_error(exc, abs_path) from None
        finally:
            os.close(pfd)

    def unlink(self, path) -> None:
        """unlinkat(2) of the final component (a symlink itself is removed, never its target)."""
        pfd, name, abs_path = self.open_parent(path)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if st_.S_ISDIR(st.st_mode):
                raise ValidationError(f"Is a directory: {abs_path} (use rmdir)", path=abs_path)
            os.unlink(name, dir_fd=pfd)
        except OSError as exc:
            raise fs_error(exc, abs_path) from None
        finally:
            os.close(pfd)

    def rmdir(self, path, *, recursive: bool = False) -> None:
        """unlinkat(2, AT_REMOVEDIR); recursively through descriptors that never follow a symlink
        nor enter another mount (a mount point inside is an error, and nothing in it is touched)."""
        pfd, name, abs_path = self.open_parent(path)
        try:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                raise fs_error(exc, abs_path) from None
            if not st_.S_ISDIR(st.st_mode):
                raise ValidationError(f"Not a directory: {abs_path}", path=abs_path)
            if recursive:
                self._rmtree_contents(pfd, name, abs_path)
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ValidationError(
                        f"Directory not empty: {abs_path} (remove its contents first, or remove "
                        f"it recursively)", path=abs_path) from None
                raise fs_error(exc, abs_path) from None
        finally:
            os.close(pfd)

    def _rmtree_contents(self, parent_fd: int, name: str, abs_path: str) -> None:
        rmtree_contents_at(parent_fd, name, abs_path)

    # listing ------------------------------------------------------------------------------------
    def listdir(self, path=".") -> list[dict]:
        """getdents64(2), fstatat(AT_SYMLINK_NOFOLLOW) and readlinkat(2) in an openat2
        (RESOLVE_IN_ROOT) directory descriptor: FileInfo dicts for the entries of directory
        ``path`` (a file lists as itself), sorted by name; a symlink is reported, never followed.
        """
        abs_path = self.resolve(path)
        try:
            fd = openat2(self.root_fd, abs_path, os.O_RDONLY | os.O_DIRECTORY, 0, IN_ROOT)
        except OSError as exc:
            if exc.errno != errno.ENOTDIR:
                raise fs_error(exc, abs_path) from None
            st = self.stat(abs_path)
            if not st_.S_ISDIR(st.st_mode) and abs_path != "/":
                # like ls(1): a file lists as itself
                return [file_info(posixpath.basename(abs_path), st)]
            raise fs_error(exc, abs_path) from None
        out = []
        try:
            for ent in scandir_sorted(fd):
                try:
                    st = ent.stat(follow_symlinks=False)
                    target = os.readlink(ent.name, dir_fd=fd) if st_.S_ISLNK(st.st_mode) else None
                except (FileNotFoundError, OSError) as exc:
                    if isinstance(exc, FileNotFoundError) or exc.errno == errno.EINVAL:
                        continue    # removed, or swapped from a link to a file, while we listed
                    raise
                out.append(file_info(ent.name, st, target))
        finally:
            os.close(fd)
        return out

    def walk(self, path=".") -> Iterator[WalkEntry]:
        """getdents64(2) and fstatat(2) through openat2 descriptors: yield every entry below
        directory ``path`` depth-first, a directory before its contents, names sorted.

        ``path`` itself is resolved with RESOLVE_IN_ROOT (a symlink to a directory is followed,
        inside the root); each step below it with RESOLVE_BENEATH|NO_SYMLINKS|NO_XDEV, so nothing
        is followed and other mounts are listed but not entered. Iterative (one descriptor per
        level). If ``path`` is not a directory, the single entry is yielded (rel = its basename;
        a symlink stays a symlink).
        """
        abs_path = self.resolve(path)
        try:
            top = openat2(self.root_fd, abs_path, os.O_RDONLY | os.O_DIRECTORY, 0, IN_ROOT)
        except OSError as exc:
            if exc.errno != errno.ENOTDIR or abs_path == "/":
                raise fs_error(exc, abs_path) from None
            yield from self._walk_single(abs_path)
            return
        # each level's entries are kept in reverse order, so that pop() takes the next one
        stack: list[list] = [[top, scandir_sorted(top)[::-1], ""]]
        try:
            while stack:
                fd, pending, prefix = stack[-1]
                if not pending:
                    os.close(fd)
                    stack.pop()
                    continue
                ent = pending.pop()
                rel = prefix + ent.name
                try:
                    st = ent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not st_.S_ISDIR(st.st_mode):
                    yield WalkEntry(rel, ent.name, fd, st)
                    continue
                try:
                    child = open_beneath(fd, ent.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno == errno.EXDEV:
                        yield WalkEntry(rel, ent.name, fd, st, True)
                        continue
                    if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        continue    # replaced while we walked
                    raise fs_error(exc, posixpath.join(abs_path, rel)) from None
                yield WalkEntry(rel, ent.name, fd, st)
                try:
                    entries = scandir_sorted(child)[::-1]
                except OSError as exc:
                    os.close(child)
                    raise fs_error(exc, posixpath.join(abs_path, rel)) from None
                stack.append([child, entries, rel + "/"])
        finally:
            for fd, _, _ in stack:
                _close(fd)

    def _walk_single(self, abs_path: str) -> Iterator[WalkEntry]:
        # Not a directory: the entry itself, never followed (as tar(1) archives a named symlink
        # as a link). Its parent is an O_PATH descriptor, enough for the *at calls.
        pfd, name, abs_path = self.open_parent(abs_path)
        try:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                raise fs_error(exc, abs_path) from None
            yield WalkEntry(name, name, pfd, st)
        finally:
            os.close(pfd)
