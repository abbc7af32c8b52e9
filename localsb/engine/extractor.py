"""The extractor: entries of an archive or a tree written into a staging directory, every parent resolved beneath it."""
from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat as st_

from localsb.api.errors import Conflict, LocalsbError, ValidationError
from localsb.linux.rootfs_access import RootedFS, fs_error, open_beneath, rmtree_contents_at, scandir_sorted
from .fileio import CHUNK, STAGING_PREFIX, copy_fd_fd, safe_mode


def member_path(name: str) -> str:
    """The archive member's path relative to the target, or a ValidationError for an unsafe one."""
    if "\0" in name:
        raise ValidationError(f"Unsafe archive entry (NUL byte in name): {name!r}")
    if name.startswith("/"):
        raise ValidationError(f"Unsafe archive entry (absolute path): {name}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValidationError(f"Unsafe archive entry (contains '..'): {name}")
    return "/".join(parts)


class Extractor:
    """Materialises archive entries below a fresh staging directory in the target, then merges
    the staged tree into the target with renameat(2).

    Inside the staging directory every parent is opened with openat2(RESOLVE_BENEATH|
    RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV) and every final component is created with O_EXCL /
    O_NOFOLLOW / *at calls that do not follow links, so nothing can be written through a
    symlink, including one this archive created. The merge never follows a symlink already in the
    target either: it replaces it (as tar(1) does for a directory entry).
    """

    def __init__(self, rfs: RootedFS, target: str):
        self.rfs = rfs
        self.target = target
        self.created_dirs = rfs.mkdir(target, parents=True)
        self.target_fd = -1
        self.staging_fd = -1
        self.staging_name = STAGING_PREFIX + secrets.token_hex(6)
        self.cache: dict[str, int] = {}                 # staged directory -> O_PATH fd
        self.stale: list[int] = []
        self.dirs: dict[str, tuple[int, float]] = {}    # explicit directory entries
        self.files: set[str] = set()                    # regular files (hard-link targets)
        self.skipped: list[str] = []
        self.files_written = 0
        self.bytes_written = 0
        self.buf = bytearray(CHUNK)
        try:
            self.target_fd = rfs.open_dir(target)
            try:
                os.mkdir(self.staging_name, 0o700, dir_fd=self.target_fd)
                self.staging_fd = open_beneath(self.target_fd, self.staging_name,
                                               os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as exc:
                raise fs_error(exc, target) from None
            rfs.chown_new(self.staging_fd)
        except BaseException:
            self.abort()
            raise

    def shown(self, rel: str) -> str:
        return posixpath.join(self.target, rel) if rel else self.target

    # parents ----------------------------------------------------------------------------------
    def _drop_cache(self) -> None:
        # Closed only at the next entry (_close_stale): a caller may still hold one of them.
        self.stale.extend(self.cache.values())
        self.cache.clear()

    def _close_stale(self) -> None:
        for fd in self.stale:
            os.close(fd)
        self.stale.clear()

    def _parent_fd(self, rel_dir: str, entry: str) -> int:
        if not rel_dir:
            return self.staging_fd
        fd = self.cache.get(rel_dir)
        if fd is not None:
            return fd
        try:
            fd = open_beneath(self.staging_fd, rel_dir, os.O_PATH | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._parent_error(exc, rel_dir, entry)
            # create the missing parents one component at a time (mkdir -p within staging)
            cur, done = self.staging_fd, []
            for comp in rel_dir.split("/"):
                done.append(comp)
                sub = "/".join(done)
                nxt = self.cache.get(sub)
                if nxt is None:
                    try:
                        os.mkdir(comp, 0o755, dir_fd=cur)
                        self.rfs.chown_new(comp, cur)
                    except FileExistsError:
                        pass
                    except OSError as exc2:
                        self._parent_error(exc2, sub, entry)
                    try:
                        nxt = open_beneath(cur, comp, os.O_PATH | os.O_DIRECTORY)
                    except OSError as exc2:
                        self._parent_error(exc2, sub, entry)
                    self._cache_put(sub, nxt)
                cur = nxt
            return cur
        self._cache_put(rel_dir, fd)
        return fd

    def _cache_put(self, rel: str, fd: int) -> None:
        if len(self.cache) >= 256:
            self._drop_cache()
        self.cache[rel] = fd

    def _parent_error(self, exc: OSError, rel_dir: str, entry: str):
        if exc.errno == errno.ELOOP:
            raise ValidationError(f"Unsafe archive entry {entry}: {rel_dir} is a symlink and "
                                  f"nothing is extracted through a symlink", entry=entry) from None
        if exc.errno == errno.ENOTDIR:
            raise ValidationError(f"Invalid archive entry {entry}: {rel_dir} is not a directory",
                                  entry=entry) from None
        if exc.errno == errno.EXDEV:
            raise ValidationError(f"Unsafe archive entry {entry}: it leaves the target",
                                  entry=entry) from None
        raise fs_error(exc, self.shown(rel_dir)) from None

    def _clear_slot(self, pfd: int, name: str, rel: str, entry: str, for_dir: bool) -> bool:
        """Make room for a new entry at ``rel`` (a later entry replaces an earlier one, as with
        tar). Returns True when an existing directory should simply be kept (``for_dir``)."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if st_.S_ISDIR(st.st_mode):
            if for_dir:
                return True
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError:
                raise ValidationError(f"Invalid archive entry {entry}: a directory of the same "
                                      f"name is not empty", entry=entry) from None
            self._drop_cache()
            self.dirs = {k: v for k, v in self.dirs.items()
                         if k != rel and not k.startswith(rel + "/")}
        else:
            os.unlink(name, dir_fd=pfd)
        self.files.discard(rel)
        return False

    # entries ----------------------------------------------------------------------------------
    def add_dir(self, rel: str, mode: int, mtime: float, entry: str) -> None:
        self._close_stale()
        if not rel:
            return  # the target itself ('./'): its mode and owner are left alone
        pfd = self._parent_fd(posixpath.dirname(rel), entry)
        name = posixpath.basename(rel)
        try:
            os.mkdir(name, 0o755, dir_fd=pfd)
            self.rfs.chown_new(name, pfd)
        except FileExistsError:
            if not self._clear_slot(pfd, name, rel, entry, for_dir=True):
                os.mkdir(name, 0o755, dir_fd=pfd)
                self.rfs.chown_new(name, pfd)
        except OSError as exc:
            raise fs_error(exc, self.shown(rel)) from None
        # the real mode is applied at the end: a read-only directory must still take children
        self.dirs[rel] = (safe_mode(mode), mtime)

    def add_file(self, rel: str, mode: int, mtime: float, src, size: int, entry: str) -> None:
        self._close_stale()
        if not rel:
            raise ValidationError(f"Invalid archive entry {entry}: a file in place of the target")
        pfd = self._parent_fd(posixpath.dirname(rel), entry)
        name = posixpath.basename(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(name, flags, 0o600, dir_fd=pfd)
            except FileExistsError:
                self._clear_slot(pfd, name, rel, entry, for_dir=False)
                fd = os.open(name, flags, 0o600, dir_fd=pfd)
        except OSError as exc:
            raise fs_error(exc, self.shown(rel)) from None
        try:
            if isinstance(src, int):
                # a local copy: a file that shrank meanwhile is copied as it now is
                try:
                    written = copy_fd_fd(src, fd, size)
                except OSError as exc:
                    raise fs_error(exc, self.shown(rel)) from None
            else:
                written = self._copy_stream(src, fd, rel)
                if written != size:
                    raise ValidationError(f"Invalid archive: entry {entry} is truncated")
            try:
                os.fchmod(fd, safe_mode(mode))
                self.rfs.chown_new(fd)
                os.utime(fd, (mtime, mtime))
            except OSError as exc:
                raise fs_error(exc, self.shown(rel)) from None
        finally:
            os.close(fd)
        self.files.add(rel)
        self.files_written += 1
        self.bytes_written += written

    def _copy_stream(self, src, fd: int, rel: str) -> int:
        # Errors reading ``src`` (the archive, maybe a network stream) pass untouched; errors
        # writing name the sandbox path.
        view = memoryview(self.buf)
        written = 0
        while True:
            n = src.readinto(view)
            if not n:
                return written
            chunk = view[:n]
            try:
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
            except OSError as exc:
                raise fs_error(exc, self.shown(rel)) from None
            written += n

    def add_symlink(self, rel: str, target: str, mtime: float, entry: str) -> None:
        self._close_stale()
        if not rel:
            raise ValidationError(f"Invalid archive entry {entry}: a symlink in place of the "
                                  f"target")
        if "\0" in target or not target:
            raise ValidationError(f"Invalid archive entry {entry}: bad symlink target")
        pfd = self._parent_fd(posixpath.dirname(rel), entry)
        name = posixpath.basename(rel)
        try:
            try:
                os.symlink(target, name, dir_fd=pfd)
            except FileExistsError:
                self._clear_slot(pfd, name, rel, entry, for_dir=False)
                os.symlink(target, name, dir_fd=pfd)
            self.rfs.chown_new(name, pfd)
            os.utime(name, (mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        except OSError as exc:
            raise fs_error(exc, self.shown(rel)) from None

    def add_hardlink(self, rel: str, linkname: str, entry: str) -> None:
        self._close_stale()
        try:
            src_rel = member_path(linkname)
        except ValidationError:
            src_rel = None
        if not src_rel or src_rel not in self.files:
            raise ValidationError(f"Unsafe archive entry {entry}: hard link to {linkname}, which "
                                  f"is not a file extracted earlier from the same archive",
                                  entry=entry)
        if not rel:
            raise ValidationError(f"Invalid archive entry {entry}: a link in place of the target")
        if rel == src_rel:
            return
        sname = posixpath.basename(src_rel)
        pfd = self._parent_fd(posixpath.dirname(rel), entry)
        spfd = self._parent_fd(posixpath.dirname(src_rel), entry)
        name = posixpath.basename(rel)
        try:
            try:
                os.link(sname, name, src_dir_fd=spfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                self._clear_slot(pfd, name, rel, entry, for_dir=False)
                os.link(sname, name, src_dir_fd=spfd, dst_dir_fd=pfd, follow_symlinks=False)
        except OSError as exc:
            raise fs_error(exc, self.shown(rel)) from None
        self.files.add(rel)
        self.files_written += 1

    def skip(self, entry: str) -> None:
        self.skipped.append(entry)

    # finishing --------------------------------------------------------------------------------
    def _apply_dir_attrs(self, dfd: int, mode: int, mtime: float) -> None:
        os.fchmod(dfd, mode)
        os.utime(dfd, (mtime, mtime))

    def finish(self) -> dict:
        self._drop_cache()
        self._close_stale()
        # Directory modes and times last, deepest first, on descriptors (fchmod): a path-based
        # chmod would follow a symlink the sandbox swapped in meanwhile.
        for rel in sorted(self.dirs, key=lambda r: r.count("/"), reverse=True):
            mode, mtime = self.dirs[rel]
            try:
                fd = open_beneath(self.staging_fd, rel, os.O_RDONLY | os.O_DIRECTORY
                                  | os.O_NOFOLLOW)
            except OSError as exc:
                raise fs_error(exc, self.shown(rel)) from None
            try:
                self._apply_dir_attrs(fd, mode, mtime)
            finally:
                os.close(fd)
        self._merge(self.staging_fd, self.target_fd, "", dry_run=True)
        self._merge(self.staging_fd, self.target_fd, "", dry_run=False)
        self._remove_staging()
        return {"filesWritten": self.files_written, "bytesWritten": self.bytes_written,
                "skipped": self.skipped}

    def _merge(self, sfd: int, dfd: int, rel: str, dry_run: bool) -> None:
        """Move the staged entries of ``sfd`` into ``dfd``: renameat(2) what is new or replaces
        a non-directory, recurse where both sides are directories. The dry run only checks for
        the one conflict that cannot be resolved (a non-empty directory where the archive has a
        file), so a failing upload changes nothing in the target."""
        for ent in scandir_sorted(sfd):
            name = ent.name
            r = posixpath.join(rel, name) if rel else name
            try:
                s_isdir = ent.is_dir(follow_symlinks=False)
                try:
                    d = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    d = None
                if d is not None and st_.S_ISDIR(d.st_mode):
                    if s_isdir:
                        try:
                            s_sub = open_beneath(sfd, name, os.O_RDONLY | os.O_DIRECTORY
                                                 | os.O_NOFOLLOW)
                            d_sub = open_beneath(dfd, name, os.O_RDONLY | os.O_DIRECTORY
                                                 | os.O_NOFOLLOW)
                        except OSError as exc:
                            raise fs_error(exc, self.shown(r)) from None
                        try:
                            self._merge(s_sub, d_sub, r, dry_run)
                            if not dry_run:
                                if r in self.dirs:
                                    self._apply_dir_attrs(d_sub, *self.dirs[r])
                                os.rmdir(name, dir_fd=sfd)
                        finally:
                            os.close(s_sub)
                            os.close(d_sub)
                        continue
                    # a file from the archive where the target has a directory
                    empty = not _dir_has_entries(dfd, name)
                    if not empty:
                        raise Conflict(f"Cannot replace directory {self.shown(r)} with a "
                                       f"non-directory from the archive", path=self.shown(r))
                    if not dry_run:
                        os.rmdir(name, dir_fd=dfd)
                elif d is not None and s_isdir and not dry_run:
                    os.unlink(name, dir_fd=dfd)     # a file or symlink where a directory comes
                if not dry_run:
                    os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
            except LocalsbError:
                raise
            except RecursionError:
                raise ValidationError("Invalid archive: directory tree too deep") from None
            except OSError as exc:
                raise fs_error(exc, self.shown(r)) from None

    def _remove_staging(self) -> None:
        if self.staging_fd >= 0:
            os.close(self.staging_fd)
            self.staging_fd = -1
        if self.target_fd >= 0:
            try:
                os.rmdir(self.staging_name, dir_fd=self.target_fd)
            except FileNotFoundError:
                pass
            except OSError:
                rmtree_contents_at(self.target_fd, self.staging_name,
                                   self.shown(self.staging_name))
                os.rmdir(self.staging_name, dir_fd=self.target_fd)
            os.close(self.target_fd)
            self.target_fd = -1

    def abort(self) -> None:
        """Remove everything this upload made: the staging tree and the target directories it
        created (when still empty)."""
        self._drop_cache()
        self._close_stale()
        try:
            self._remove_staging()
        except (LocalsbError, OSError):
            pass
        for d in reversed(self.created_dirs):
            try:
                self.rfs.rmdir(d)
            except LocalsbError:
                break


def _dir_has_entries(dfd: int, name: str) -> bool:
    """Whether directory ``name`` of ``dfd`` has entries (opened without following links)."""
    fd = open_beneath(dfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with os.scandir(fd) as it:
            return any(True for _ in it)
    finally:
        os.close(fd)
