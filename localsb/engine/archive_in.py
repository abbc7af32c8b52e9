"""Archive uploads: a tar.gz or zip stream (sniffed, spooled when needed) unpacked into a sandbox by the extractor."""
from __future__ import annotations

import io
import os
import stat as st_
import tarfile
import tempfile
import time
import zipfile
import zlib
from typing import BinaryIO

from localsb.api.errors import ValidationError
from localsb.linux.rootfs_access import RootedFS
from .fileio import CHUNK, SYMLINK_MAX, normalize_format, rooted
from .extractor import Extractor, member_path
from .archive_out import zip_member_name


def detect_format(head: bytes) -> str:
    """'tar.gz', 'zip' or 'tar' from an archive's first bytes (at least 262 for plain tar)."""
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise ValidationError("Unrecognized archive format: expected a tar.gz or zip archive")


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``src``: lets us sniff a stream that cannot seek back."""

    def __init__(self, head: bytes, src):
        self.head = memoryview(head)
        self.src = src

    def readable(self):
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        if hasattr(self.src, "readinto"):
            return self.src.readinto(b) or 0
        data = self.src.read(len(b))
        b[:len(data)] = data
        return len(data)


class _GunzipReader(io.RawIOBase):
    """gunzip ``src`` on the fly: checks every member's CRC and length (wbits=31) and accepts
    concatenated members, as gzip(1) does."""

    def __init__(self, src):
        self.src = src
        self.d = zlib.decompressobj(31)
        self.out = b""
        self.eof = False

    def readable(self):
        return True

    def readinto(self, b) -> int:
        want = len(b)
        while not self.out and not self.eof:
            if self.d.unconsumed_tail:
                data = self.d.unconsumed_tail
            else:
                data = self.src.read(CHUNK)
                if not data:
                    if not self.d.eof:
                        raise ValidationError("Invalid archive: truncated gzip data")
                    self.eof = True
                    break
            self.out = self.d.decompress(data, CHUNK)
            if self.d.eof:
                rest = self.d.unused_data
                self.d = zlib.decompressobj(31)
                if rest:
                    # another member follows (or trailing garbage, which zlib rejects)
                    self.src = _Prefixed(rest, self.src)
                else:
                    nxt = self.src.read(CHUNK)
                    if not nxt:
                        self.eof = True
                    else:
                        self.src = _Prefixed(nxt, self.src)
        n = min(want, len(self.out))
        b[:n] = self.out[:n]
        self.out = self.out[n:]
        return n


class _ForwardReader:
    """A read-only stream that can seek forward only (by reading), which is all tarfile's
    ordinary mode needs to walk an archive in order. tarfile's stream mode ('r|') would do, but
    it copies the rest of its read buffer on every 512-byte header read: quadratic in practice."""

    def __init__(self, src):
        self.src = src
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:
        n = self.src.readinto(b)
        self.pos += n
        return n

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self.pos
        elif whence != 0:
            raise io.UnsupportedOperation("seek from the end")
        if pos < self.pos:
            raise io.UnsupportedOperation("backward seek in an archive stream")
        while self.pos < pos:
            if not self.read(min(pos - self.pos, CHUNK)):
                break
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _extract_tar(ex: Extractor, stream) -> None:
    try:
        tf = tarfile.open(fileobj=_ForwardReader(stream), mode="r:", errors="surrogateescape")
    except tarfile.TarError as exc:
        raise ValidationError(f"Invalid archive: {exc}") from None
    try:
        for m in tf:
            rel = member_path(m.name)
            mtime = float(m.mtime or 0)
            if m.isdir():
                ex.add_dir(rel, m.mode, mtime, m.name)
            elif m.isreg():
                ex.add_file(rel, m.mode, mtime, tf.extractfile(m), m.size, m.name)
            elif m.issym():
                ex.add_symlink(rel, m.linkname, mtime, m.name)
            elif m.islnk():
                ex.add_hardlink(rel, m.linkname, m.name)
            else:
                ex.skip(m.name)     # character/block devices, fifos, other types
    except (tarfile.TarError, EOFError, zlib.error, io.UnsupportedOperation) as exc:
        raise ValidationError(f"Invalid archive: {exc}") from None


def _extract_zip(ex: Extractor, fileobj) -> None:
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValidationError(f"Invalid archive: {exc}") from None
    with zf:
        try:
            for zi in zf.infolist():
                rel = member_path(zip_member_name(zi))
                unix = zi.external_attr >> 16 if zi.create_system == 3 else 0
                kind = st_.S_IFMT(unix)
                mtime = time.mktime(zi.date_time + (0, 0, -1))
                if zi.is_dir() or kind == st_.S_IFDIR:
                    mode = unix & 0o7777 or 0o755
                    ex.add_dir(rel, mode, mtime, zi.filename)
                elif kind == st_.S_IFLNK:
                    if zi.file_size > SYMLINK_MAX:
                        raise ValidationError(f"Invalid archive entry {zi.filename}: symlink "
                                              f"target too long")
                    target = os.fsdecode(zf.read(zi))
                    ex.add_symlink(rel, target, mtime, zi.filename)
                elif kind in (0, st_.S_IFREG):
                    mode = unix & 0o7777 or 0o644
                    with zf.open(zi) as src:
                        ex.add_file(rel, mode, mtime, src, zi.file_size, zi.filename)
                else:
                    ex.skip(zi.filename)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise ValidationError(f"Invalid archive: {exc}") from None


def _seekable_pos(src) -> int | None:
    try:
        if src.seekable():
            return src.tell()
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _sniff(src) -> tuple[bytes, object]:
    """The first bytes of ``src`` and a stream that still starts at them."""
    head = b""
    while len(head) < 512:
        data = src.read(512 - len(head))
        if not data:
            break
        head += data
    return head, io.BufferedReader(_Prefixed(head, src), CHUNK)


def open_archive(src, fmt: str, what: str):
    """Sniff ``src``: -> (kind, stream that still starts at the first byte, start offset of a
    seekable ``src`` or None). ``fmt`` '' accepts any kind; a mismatch is a ValidationError."""
    want = normalize_format(fmt, allow_empty=True)
    start = _seekable_pos(src)
    head, stream = _sniff(src)
    if not head:
        raise ValidationError(f"Invalid archive: empty {what}")
    kind = detect_format(head)
    if want and want != kind and not (want == "tar.gz" and kind == "tar"):
        raise ValidationError(f"Invalid archive: the content is {kind}, not {want}")
    return kind, stream, start


def extract_archive(rfs: RootedFS, target: str, src, opened, spool_dir: str | None) -> dict:
    """Extract an archive (from open_archive) into ``target`` of ``rfs`` with the Extractor:
    all or nothing."""
    kind, stream, start = opened
    spool = None
    try:
        if kind == "zip" and start is not None:
            src.seek(start)
            zsrc = src
        elif kind == "zip":
            zsrc = spool = tempfile.TemporaryFile(dir=spool_dir)
            while True:
                data = stream.read(CHUNK)
                if not data:
                    break
                spool.write(data)
            spool.seek(0)
        ex = Extractor(rfs, target)
        try:
            if kind == "zip":
                _extract_zip(ex, zsrc)
            elif kind == "tar.gz":
                _extract_tar(ex, io.BufferedReader(_GunzipReader(stream), CHUNK))
            else:
                _extract_tar(ex, stream)
            return ex.finish()
        except BaseException:
            ex.abort()
            raise
    finally:
        if spool is not None:
            spool.close()


def fs_upload(root, path, fmt: str, src: BinaryIO, *, spool_dir: str | None = None) -> dict:
    """Extract the archive read from ``src`` (tar.gz or zip; ``fmt`` '' = detect from its first
    bytes) into directory ``path``, created like ``mkdir -p`` when missing.

    All or nothing: a bad or unsafe archive raises a ValidationError naming the entry and leaves
    the target as it was. A zip read from an unseekable stream is spooled to a temporary file in
    ``spool_dir`` first (zip's directory is at its end). Returns {'filesWritten', 'bytesWritten',
    'skipped': [entries not extracted: devices, fifos, sockets]}.
    """
    opened = open_archive(src, fmt, "upload")
    with rooted(root) as rfs:
        return extract_archive(rfs, rfs.resolve(path), src, opened, spool_dir)
