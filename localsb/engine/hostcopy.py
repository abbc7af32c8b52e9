"""Host-side transfer: `fs cp -r` downloads unpacked on this machine, and the local backend's direct tree copies."""
from __future__ import annotations

import os
import posixpath
import secrets
import stat as st_
from typing import BinaryIO

from localsb.api.errors import FileNotFoundInSandbox, LocalsbError, ValidationError
from localsb.linux.rootfs_access import RootedFS, fs_error, rmtree_contents_at
from .fileio import open_entry_file, rooted
from .extractor import Extractor
from .archive_in import extract_archive, open_archive


def fs_extract_local(src: BinaryIO, local_path: str, fmt: str = "", *,
                     spool_dir: str | None = None) -> dict:
    """Extract a downloaded archive (tar.gz, tar or zip) into the local directory ``local_path``
    with the upload extractor, on the host's own filesystem, so the host is as safe as a sandbox
    is from an upload: nothing is written outside the destination (an absolute or '..' entry, an
    entry through a symlink, a hard link to anything but an earlier file of the archive fail the
    whole extraction with a ValidationError naming it); symlinks, absolute ones too, arrive as
    links and are never followed; devices, fifos and sockets are skipped; setuid/setgid bits are
    stripped; everything belongs to the caller. (tarfile's 'data' filter is not relied on: it
    refuses absolute symlinks outright, and has had bypasses on the Python 3.11 this runs on.)

    A destination that does not exist is built under a temporary name beside it and renamed into
    place when complete, its missing parents made like ``mkdir -p``: a failure leaves nothing
    under its name (nor the parents this call made). Into an existing directory the staged tree is
    merged only once complete, as an upload. -> {'filesWritten', 'bytesWritten', 'skipped'}
    """
    opened = open_archive(src, fmt, "download")
    dest = os.path.abspath(local_path)
    parent, name = os.path.split(dest)
    tmp_name = f".{name}.localsb-{secrets.token_hex(6)}"
    tmp = os.path.join(parent, tmp_name)
    try:
        with _local_fs() as lfs:
            try:
                st = os.stat(dest)      # the user's own symlink to a directory is followed, as cp does
            except FileNotFoundError:
                st = None
            except OSError as exc:
                raise fs_error(exc, dest) from None
            if st is not None:
                if not st_.S_ISDIR(st.st_mode):
                    raise ValidationError(f"Not a directory: {dest}", path=dest)
                return extract_archive(lfs, dest, src, opened, spool_dir)
            made = lfs.mkdir(parent, parents=True)
            try:
                res = extract_archive(lfs, tmp, src, opened, spool_dir)
                try:
                    os.rename(tmp, dest)
                except OSError as exc:
                    raise fs_error(exc, dest) from None
                return res
            except BaseException:
                _remove_local_tree(lfs, parent, tmp_name)
                for d in reversed(made):
                    try:
                        lfs.rmdir(d)
                    except LocalsbError:
                        break
                raise
    except LocalsbError as exc:     # errors name the destination, and the disk is this machine's
        exc.message = exc.message.replace(tmp, dest).replace("on the sandbox disk", "on the local disk")
        raise


def _remove_local_tree(lfs: RootedFS, parent: str, name: str) -> None:
    """Remove directory ``name`` of ``parent`` and its contents (symlinks removed, never
    followed); absent is fine, and a failure to clean up never hides the error being raised."""
    try:
        pfd = lfs.open_dir(parent)
    except LocalsbError:
        return
    try:
        rmtree_contents_at(pfd, name, os.path.join(parent, name))
        os.rmdir(name, dir_fd=pfd)
    except (LocalsbError, OSError):
        pass
    finally:
        os.close(pfd)


def _copy_walk(src_rfs: RootedFS, src_path: str, ex: Extractor) -> None:
    """Feed every entry of ``src_rfs.walk(src_path)`` to ``ex`` (a tree copy, like cp -a)."""
    for ent in src_rfs.walk(src_path):
        st = ent.st
        if st_.S_ISDIR(st.st_mode):
            ex.add_dir(ent.rel, st.st_mode, st.st_mtime, ent.rel)
        elif st_.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(ent.name, dir_fd=ent.dir_fd)
            except OSError:
                continue
            ex.add_symlink(ent.rel, target, st.st_mtime, ent.rel)
        elif st_.S_ISREG(st.st_mode):
            opened = open_entry_file(ent)
            if opened is None:
                continue
            fd, fst = opened
            try:
                ex.add_file(ent.rel, fst.st_mode, fst.st_mtime, fd, fst.st_size, ent.rel)
            finally:
                os.close(fd)
        else:
            ex.skip(ent.rel)


def _local_fs() -> RootedFS:
    # The host's own namespace, for the local side of a copy: paths relative to the cwd.
    return RootedFS("/", workspace=os.getcwd(), owner=(os.geteuid(), os.getegid()))


def fs_copy_in(root, local_path: str, path) -> dict:
    """Copy a local file or directory tree into the sandbox at ``path`` (the copy's own path;
    parents created), like ``cp -a``: modes and mtimes kept, symlinks copied as links, devices
    and fifos skipped. Safe as an upload (staged, then renamed into place; all or nothing).
    -> {'filesTransferred', 'bytesTransferred', 'directoriesCreated': [sandbox paths]}"""
    with _local_fs() as lfs:
        src_abs = lfs.resolve(local_path)
        try:
            st = lfs.lstat(src_abs)
        except FileNotFoundInSandbox:
            raise ValidationError(f"Local path not found: {local_path}") from None
        with rooted(root) as rfs:
            dest = rfs.resolve(path)
            if dest == "/" and not st_.S_ISDIR(st.st_mode):
                raise ValidationError("Is a directory: /")
            target = dest if st_.S_ISDIR(st.st_mode) else posixpath.dirname(dest)
            ex = Extractor(rfs, target)
            try:
                if st_.S_ISDIR(st.st_mode):
                    _copy_walk(lfs, src_abs, ex)
                else:
                    _copy_single(lfs, src_abs, st, posixpath.basename(dest), ex)
                res = ex.finish()
            except BaseException:
                ex.abort()
                raise
    return {"filesTransferred": res["filesWritten"], "bytesTransferred": res["bytesWritten"],
            "directoriesCreated": ex.created_dirs}


def _copy_single(src_rfs, src_abs, st, name, ex) -> None:
    for ent in src_rfs.walk(src_abs):     # the single entry, opened without following
        if st_.S_ISLNK(ent.st.st_mode):
            ex.add_symlink(name, os.readlink(ent.name, dir_fd=ent.dir_fd), ent.st.st_mtime, name)
            return
        opened = open_entry_file(ent)
        if opened is None:
            raise ValidationError(f"Not a regular file: {src_abs}")
        fd, fst = opened
        try:
            ex.add_file(name, fst.st_mode, fst.st_mtime, fd, fst.st_size, name)
        finally:
            os.close(fd)


def fs_copy_out(root, path, local_path: str) -> dict:
    """Copy sandbox file or directory ``path`` to ``local_path`` (the copy's own path; parents
    created), like ``cp -a`` without following any symlink of the sandbox: links are copied as
    links, and nothing is written through one. -> {'filesTransferred', 'bytesTransferred'}"""
    with rooted(root) as rfs, _local_fs() as lfs:
        src_abs = rfs.resolve(path)
        st = rfs.stat(src_abs)      # follows a symlink named by the user, inside the root
        dest = lfs.resolve(local_path)
        is_dir = st_.S_ISDIR(st.st_mode)
        ex = Extractor(lfs, dest if is_dir else posixpath.dirname(dest))
        try:
            if is_dir:
                _copy_walk(rfs, src_abs, ex)
            else:
                fd, fst, _ = rfs.open_regular(src_abs)
                try:
                    ex.add_file(posixpath.basename(dest), fst.st_mode, fst.st_mtime, fd,
                                fst.st_size, src_abs)
                finally:
                    os.close(fd)
            res = ex.finish()
        except BaseException:
            ex.abort()
            raise
    return {"filesTransferred": res["filesWritten"], "bytesTransferred": res["bytesWritten"]}
