"""The file layer's entry points: write, read, list, mkdir, rm, rmdir, archive download and upload.

Each operation takes the sandbox's root filesystem, as a ``RootedFS`` or as the host path of the
root directory, and works only through it (``localsb.linux.rootfs_access``): every path is
resolved inside the root by the kernel, whatever the sandbox has planted there. Relative sandbox
paths are relative to ``/home/agentuity``. Data streams in 1 MiB chunks, so memory stays flat
whatever the file size. Paused sandboxes need nothing special: a frozen cgroup does not stop the
host from reading its files.

Archives (``fs_download`` / ``fs_upload``) are tar.gz or zip. Downloads store symlinks as links
(never followed), directories and regular files with their permission bits and mtimes; device
nodes, fifos and sockets are left out (their content is not data, and opening a fifo would
block). Uploads never write outside their target directory: entries are first extracted into a
fresh staging directory inside the target, every parent resolved with openat2
(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so no entry can be written through a symlink, not even one
the same archive just created; then the staged tree is renamed into place. An unsafe entry
(absolute, ``..``, through a symlink, a hard link to anything but an earlier file of the same
archive) fails the whole upload with a ValidationError naming it, and the staging directory is
removed: nothing is left behind. Device nodes, fifos and sockets in an archive are skipped
without error (listed in the result); setuid/setgid bits are stripped; ownership in the archive
is ignored (everything belongs to the sandbox's root user). ``fs_extract_local`` runs the same
extractor on the host for ``fs cp -r`` downloads, into a temporary name renamed into place.

The layer's modules, each imported only by the ones after it: fileio.py (one file at a time, and
the helpers the others share), extractor.py (staged writes, every parent resolved beneath the
target), archive_out.py (downloads), archive_in.py (uploads), hostcopy.py (`fs cp -r` on the
host side, direct tree copies).
"""
from __future__ import annotations

from .archive_in import detect_format, fs_upload
from .archive_out import fs_download
from .fileio import (CHUNK, DEFAULT_LEVEL, FORMATS, STAGING_PREFIX, fs_list, fs_mkdir, fs_read, fs_rm, fs_rmdir,
                     fs_write, fs_write_file)
from .hostcopy import fs_copy_in, fs_copy_out, fs_extract_local

__all__ = ["CHUNK", "DEFAULT_LEVEL", "FORMATS", "STAGING_PREFIX", "detect_format", "fs_copy_in", "fs_copy_out",
           "fs_download", "fs_extract_local", "fs_list", "fs_mkdir", "fs_read", "fs_rm", "fs_rmdir", "fs_upload",
           "fs_write", "fs_write_file"]
