"""Archive downloads: a sandbox's tree streamed out as tar.gz or zip (links kept, never followed)."""
from __future__ import annotations

import os
import posixpath
import queue
import stat as st_
import tarfile
import threading
import time
import zipfile
import zlib
from typing import BinaryIO, Iterable

from localsb.linux.rootfs_access import RootedFS
from .fileio import CHUNK, Counter, DEFAULT_LEVEL, RECORDSIZE, normalize_format, open_entry_file, read_exact, rooted


class _TarGzWriter:
    """A tar stream (POSIX pax format), gzip-compressed with zlib at ``level``.

    Headers and small files are gathered into ~1 MiB blocks. Compression runs in a second
    thread (zlib releases the GIL), so reading files and compressing overlap, as in
    ``tar | gzip``; ``out.write`` is only ever called from the caller's thread. At most 4 blocks
    wait to be compressed, so memory stays flat.
    """

    def __init__(self, out, level: int, compress: bool = True):
        self.out = out
        self.z = zlib.compressobj(level, zlib.DEFLATED, 31, 9) if compress else None
        self.pending = bytearray()
        self.raw = 0
        self.todo: queue.Queue = queue.Queue(maxsize=4)
        self.done: queue.Queue = queue.Queue()
        self.thread = None
        if self.z is not None:
            self.thread = threading.Thread(target=self._compress, name="localsb-gzip",
                                           daemon=True)
            self.thread.start()

    def _compress(self) -> None:
        z = self.z
        while True:
            data = self.todo.get()
            if data is None:
                self.done.put(None)
                return
            try:
                self.done.put(z.compress(data) if data else z.flush())
            except BaseException as exc:    # handed to the caller's thread
                self.done.put(exc)

    def _write_done(self, wait_for_end: bool = False) -> None:
        while True:
            try:
                item = self.done.get(block=wait_for_end)
            except queue.Empty:
                return
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            if item:
                self.out.write(item)

    def _emit(self, data) -> None:
        self.raw += len(data)
        if self.thread is None:
            self.out.write(data)
            return
        self.todo.put(bytes(data))     # a copy: the caller reuses its buffer
        self._write_done()

    def write(self, data) -> None:
        if len(data) >= CHUNK:
            self.flush_pending()
            self._emit(data)
            return
        self.pending += data
        if len(self.pending) >= CHUNK:
            self.flush_pending()

    def flush_pending(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = bytearray()

    def add(self, info: tarfile.TarInfo, data: Iterable | None = None) -> None:
        self.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if data is not None:
            for chunk in data:
                self.write(chunk)
            pad = -info.size % 512
            if pad:
                self.write(bytes(pad))

    def close(self) -> None:
        end = bytes(1024)
        total = self.raw + len(self.pending) + len(end)
        self.write(end + bytes(-total % RECORDSIZE))
        self.flush_pending()
        if self.thread is not None:
            self.todo.put(b"")     # flush the compressor
            self.todo.put(None)
            self._write_done(wait_for_end=True)
            self.thread.join()
            self.thread = None

    def stop(self) -> None:
        """End the compressor thread (after an error; close() already did on success)."""
        if self.thread is not None:
            self.todo.put(None)
            self.thread.join()
            self.thread = None


def _archive_ids(rfs: RootedFS, st: os.stat_result) -> tuple[int, int]:
    """Owner ids as the sandbox sees them: relative to the sandbox root user's host ids."""
    uid = st.st_uid - rfs.owner[0]
    gid = st.st_gid - rfs.owner[1]
    return (uid if 0 <= uid < 1 << 21 else 0), (gid if 0 <= gid < 1 << 21 else 0)


class _ZipInfo(zipfile.ZipInfo):
    """A ZipInfo whose name may be any Linux file name: names that are not UTF-8 are stored as
    their raw bytes without the UTF-8 flag (what Info-ZIP does on Unix), instead of failing."""
    __slots__ = ()

    def _encodeFilenameFlags(self):
        try:
            return super()._encodeFilenameFlags()
        except UnicodeEncodeError:
            return os.fsencode(self.filename), self.flag_bits & ~0x800


def zip_member_name(info: zipfile.ZipInfo) -> str:
    """The member name as a Linux file name: zipfile decodes names without the UTF-8 flag as
    cp437, which maps every byte, so re-encoding gives back the raw bytes."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return os.fsdecode(info.filename.encode("cp437"))
    except UnicodeEncodeError:
        return info.filename


def _zip_time(mtime: float) -> tuple:
    t = time.localtime(max(mtime, 315532800))
    return (max(t.tm_year, 1980), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def fs_download(root, path, fmt: str, out: BinaryIO, *, level: int = DEFAULT_LEVEL) -> int:
    """Stream directory ``path`` (or a single file) to ``out`` as a tar.gz or zip archive.

    Member names are relative to ``path`` (no './' entry). Symlinks are stored as links and never
    followed; other mounts are stored as empty directories; devices, fifos and sockets are left
    out. Errors about ``path`` itself are raised before anything is written. Returns the
    archive's size in bytes.
    """
    fmt = normalize_format(fmt or "tar.gz", allow_empty=False)
    with rooted(root) as rfs:
        abs_path = rfs.resolve(path)
        entries = rfs.walk(abs_path)
        try:    # resolve (and fail on) the path before the first byte of output
            first = next(entries)
        except StopIteration:
            first = None
        counter = Counter(out)
        if fmt == "zip":
            _write_zip(rfs, abs_path, first, entries, counter, level)
        else:
            writer = _TarGzWriter(counter, level, compress=(fmt == "tar.gz"))
            try:
                _write_tar(rfs, abs_path, first, entries, writer)
                writer.close()
            finally:
                writer.stop()
        counter.flush()
        return counter.n


def _iter_with_first(first, rest):
    if first is not None:
        yield first
        yield from rest


def _write_tar(rfs, abs_path, first, entries, writer: _TarGzWriter) -> None:
    buf = bytearray(CHUNK)
    for ent in _iter_with_first(first, entries):
        st = ent.st
        mode = st.st_mode
        info = tarfile.TarInfo(ent.rel)
        info.mtime = int(st.st_mtime)
        info.mode = st_.S_IMODE(mode)
        info.uid, info.gid = _archive_ids(rfs, st)
        info.uname = info.gname = ""
        if st_.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            writer.add(info)
        elif st_.S_ISLNK(mode):
            try:
                info.linkname = os.readlink(ent.name, dir_fd=ent.dir_fd)
            except OSError:
                continue    # replaced while we walked
            info.type = tarfile.SYMTYPE
            writer.add(info)
        elif st_.S_ISREG(mode):
            opened = open_entry_file(ent)
            if opened is None:
                continue
            fd, fst = opened
            try:
                info.size = fst.st_size
                info.mode = st_.S_IMODE(fst.st_mode)
                info.mtime = int(fst.st_mtime)
                writer.add(info, read_exact(fd, fst.st_size, buf,
                                             posixpath.join(abs_path, ent.rel)))
            finally:
                os.close(fd)


def _write_zip(rfs, abs_path, first, entries, counter, level) -> None:
    buf = bytearray(CHUNK)
    with zipfile.ZipFile(counter, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level,
                         allowZip64=True, strict_timestamps=False) as zf:
        for ent in _iter_with_first(first, entries):
            st = ent.st
            mode = st.st_mode
            if st_.S_ISDIR(mode):
                zi = _ZipInfo(ent.rel + "/", _zip_time(st.st_mtime))
                zi.create_system = 3
                zi.external_attr = (st_.S_IFDIR | st_.S_IMODE(mode)) << 16 | 0x10
                zi.compress_type = zipfile.ZIP_STORED
                zf.writestr(zi, b"")
            elif st_.S_ISLNK(mode):
                try:
                    target = os.readlink(ent.name, dir_fd=ent.dir_fd)
                except OSError:
                    continue
                # the Info-ZIP convention: S_IFLNK in the external attributes, target as content
                zi = _ZipInfo(ent.rel, _zip_time(st.st_mtime))
                zi.create_system = 3
                zi.external_attr = (st_.S_IFLNK | 0o777) << 16
                zi.compress_type = zipfile.ZIP_STORED
                zf.writestr(zi, os.fsencode(target))
            elif st_.S_ISREG(mode):
                opened = open_entry_file(ent)
                if opened is None:
                    continue
                fd, fst = opened
                try:
                    zi = _ZipInfo(ent.rel, _zip_time(fst.st_mtime))
                    zi.create_system = 3
                    zi.external_attr = (st_.S_IFREG | st_.S_IMODE(fst.st_mode)) << 16
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    # a ZipInfo made by hand does not inherit ZipFile(compresslevel=): without
                    # this zipfile deflates at level 6 (3.11/3.12 name; 3.13 renamed it)
                    zi._compresslevel = level
                    zi.file_size = fst.st_size
                    with zf.open(zi, "w", force_zip64=fst.st_size >= 1 << 31) as w:
                        for chunk in read_exact(fd, fst.st_size, buf,
                                                 posixpath.join(abs_path, ent.rel)):
                            w.write(chunk)
                finally:
                    os.close(fd)
