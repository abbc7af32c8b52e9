"""Engine file operations on a plain directory standing for a sandbox root.

"host" is a directory outside the root standing for the host's files: no operation, archive or
planted symlink may read or change it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
import tracemalloc
import zipfile

import pytest

from localsb.api.errors import (AlreadyExists, Conflict, FileNotFoundInSandbox, LocalsbError,
                                ValidationError)
from localsb.api.specs import FileSpec
from localsb.engine import files as F
from localsb.linux.rootfs_access import RootedFS

MiB = 1 << 20


@pytest.fixture
def ws(root):
    return root / "home/agentuity"


def host_unchanged(host):
    assert sorted(os.listdir(host)) == ["secret", "subdir"]
    assert (host / "secret").read_text() == "host secret\n"
    assert os.listdir(host / "subdir") == []


def tree_state(path) -> dict:
    """rel -> (kind, mode, content or link target) for everything below path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, path)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", None, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode),
                                hashlib.sha256(fh.read()).hexdigest())
            else:
                out[rel] = ("special", stat.S_IMODE(st.st_mode), None)
    return out


class Sink:
    """A write-only stream without a descriptor (like an HTTP response): counts and hashes."""

    def __init__(self):
        self.n = 0
        self.h = hashlib.sha256()

    def write(self, b):
        self.n += len(b)
        self.h.update(b)
        return len(b)


# -- archive builders -----------------------------------------------------------------------------

def ti(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, linkname="", mtime=1700000000):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.linkname = linkname
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return info, (data if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else None)


def make_tgz(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zi(name, data=b"", mode=0o644, kind=stat.S_IFREG):
    info = zipfile.ZipInfo(name, (2023, 11, 14, 22, 13, 20))
    info.create_system = 3
    info.external_attr = (kind | mode) << 16
    return info, data


def make_zip(*members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def upload(root, data: bytes, path="up", fmt=""):
    return F.fs_upload(str(root), path, fmt, io.BytesIO(data))


def no_staging_left(d):
    for dirpath, dirnames, filenames in os.walk(d):
        assert not [n for n in dirnames + filenames if n.startswith(F.STAGING_PREFIX)], dirpath


# -- write / read ---------------------------------------------------------------------------------

def test_write_creates_parents_relative_to_workspace(root, ws):
    res = F.fs_write(str(root), [FileSpec("a/b/c.txt", b"hello"), {"path": "/opt/x", "content":
                                                                    b""}])
    assert res == {"filesWritten": 2}
    assert (ws / "a/b/c.txt").read_bytes() == b"hello"
    assert (root / "opt/x").read_bytes() == b""
    assert stat.S_IMODE(os.stat(ws / "a/b/c.txt").st_mode) == 0o644 & ~_umask()
    F.fs_write(str(root), [FileSpec("a/b/c.txt", b"hi")])      # truncates
    assert (ws / "a/b/c.txt").read_bytes() == b"hi"


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_write_checks_every_path_first(root, ws):
    with pytest.raises(ValidationError, match="NUL"):
        F.fs_write(str(root), [FileSpec("ok.txt", b"x"), FileSpec("bad\0name", b"x")])
    assert not (ws / "ok.txt").exists()
    with pytest.raises(ValidationError, match="non-empty 'path'"):
        F.fs_write(str(root), [{"path": "", "content": b"x"}])
    with pytest.raises(ValidationError, match="Is a directory: /"):
        F.fs_write(str(root), [FileSpec("/", b"x")])


def test_write_through_planted_symlinks_stays_inside(root, ws, host):
    os.symlink(str(host / "secret"), ws / "abs")
    os.symlink(str(host), ws / "dirlink")
    os.symlink("/etc/shadow", ws / "shadow")
    F.fs_write(str(root), [FileSpec("shadow", b"sandbox's own")])
    assert (root / "etc/shadow").read_bytes() == b"sandbox's own"
    with pytest.raises(FileNotFoundInSandbox):
        F.fs_write(str(root), [FileSpec("abs", b"pwned")])
    with pytest.raises(ValidationError, match="File exists and is not a directory"):
        F.fs_write(str(root), [FileSpec("dirlink/new", b"pwned")])
    host_unchanged(host)


def test_write_refuses_special_files_without_hanging(root, ws):
    os.mkfifo(ws / "fifo")
    with pytest.raises(ValidationError, match="Not a regular file: /home/agentuity/fifo"):
        F.fs_write(str(root), [FileSpec("fifo", b"x")])
    with pytest.raises(ValidationError, match="Is a directory: /home/agentuity$"):
        F.fs_write(str(root), [FileSpec(".", b"x")])


def test_read_streams_bytes(root, ws, tmp_path):
    data = os.urandom(3 * MiB + 17)
    (ws / "f.bin").write_bytes(data)
    buf = io.BytesIO()
    assert F.fs_read(str(root), "f.bin", buf) == len(data)
    assert buf.getvalue() == data
    # a real file as output (the kernel copies), after something already buffered in it
    out = tmp_path / "out.bin"
    with open(out, "wb") as fh:
        fh.write(b"HEAD")
        assert F.fs_read(str(root), "/home/agentuity/f.bin", fh) == len(data)
        fh.write(b"TAIL")
    assert out.read_bytes() == b"HEAD" + data + b"TAIL"
    (ws / "empty").write_bytes(b"")
    buf = io.BytesIO()
    assert F.fs_read(str(root), "empty", buf) == 0 and buf.getvalue() == b""


def test_read_errors(root, ws, host):
    out = io.BytesIO()
    with pytest.raises(FileNotFoundInSandbox, match=r"^No such file or directory: "
                                                    r"/home/agentuity/missing.txt$"):
        F.fs_read(str(root), "missing.txt", out)
    (ws / "d").mkdir()
    with pytest.raises(ValidationError, match=r"^Is a directory: /home/agentuity/d$"):
        F.fs_read(str(root), "d", out)
    os.mkfifo(ws / "fifo")
    with pytest.raises(ValidationError, match="Not a regular file"):
        F.fs_read(str(root), "fifo", out)
    os.symlink("/etc/shadow", ws / "shadow")
    os.symlink("../../../../../../../../../etc/shadow", ws / "shadow2")
    os.symlink(str(host / "secret"), ws / "secret")
    for p in ("shadow", "shadow2", "secret", "/etc/shadow"):
        with pytest.raises(FileNotFoundInSandbox):
            F.fs_read(str(root), p, out)
    os.symlink("loop", ws / "loop")
    with pytest.raises(ValidationError, match="Too many levels of symbolic links: "
                                              "/home/agentuity/loop"):
        F.fs_read(str(root), "loop", out)
    with pytest.raises(ValidationError, match="NUL"):
        F.fs_read(str(root), "x\0", out)
    assert out.getvalue() == b""


def _sparse_file(path, size):
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off in range(0, size, 40 * MiB):
            fh.seek(off)
            fh.write(os.urandom(MiB))


def test_read_memory_is_flat(root, ws):
    size = 200 * MiB
    _sparse_file(ws / "big", size)
    sink = Sink()
    tracemalloc.start()
    try:
        n = F.fs_read(str(root), "big", sink)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == size == sink.n
    assert peak < 4 * MiB, f"fs_read of 200 MB peaked at {peak / MiB:.1f} MiB"


def test_write_file_streams(root, ws, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(2 * MiB + 5)
    src.write_bytes(data)
    with open(src, "rb") as fh:
        fh.read(5)      # streams from the current position
        assert F.fs_write_file(str(root), "deep/dir/f.bin", fh, mode=0o4755) == len(data) - 5
    assert (ws / "deep/dir/f.bin").read_bytes() == data[5:]
    assert stat.S_IMODE(os.stat(ws / "deep/dir/f.bin").st_mode) == 0o755   # setuid stripped
    assert F.fs_write_file(str(root), "b.bin", io.BytesIO(data)) == len(data)
    assert (ws / "b.bin").read_bytes() == data


# -- list / mkdir / rm / rmdir ----------------------------------------------------------------------

def test_list(root, ws):
    (ws / "f").write_bytes(b"abc")
    (ws / "d").mkdir()
    os.symlink("f", ws / "l")
    res = F.fs_list(str(root))
    assert [f["path"] for f in res["files"]] == ["d", "f", "l"]
    f = res["files"][1]
    assert set(f) == {"path", "size", "isDir", "mode", "modTime"}
    assert f["size"] == 3 and f["isDir"] is False and len(f["mode"]) == 4
    assert time.strptime(f["modTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert res["files"][2]["isSymlink"] and res["files"][2]["linkTarget"] == "f"
    assert F.fs_list(str(root), "/home")["files"][0]["path"] == "agentuity"
    with pytest.raises(FileNotFoundInSandbox, match="/home/agentuity/nope"):
        F.fs_list(str(root), "nope")


def test_mkdir_rm_rmdir(root, ws):
    assert F.fs_mkdir(str(root), "a") == ["/home/agentuity/a"]
    with pytest.raises(AlreadyExists, match="/home/agentuity/a"):
        F.fs_mkdir(str(root), "a")
    assert F.fs_mkdir(str(root), "a", recursive=True) == []
    with pytest.raises(FileNotFoundInSandbox, match="/home/agentuity/x/y"):
        F.fs_mkdir(str(root), "x/y/z")
    F.fs_mkdir(str(root), "x/y/z", recursive=True)
    (ws / "x/y/z/f").write_text("f")
    with pytest.raises(ValidationError, match=r"Is a directory: /home/agentuity/x"):
        F.fs_rm(str(root), "x")
    assert F.fs_rm(str(root), "x/y/z/f") is True
    assert F.fs_rm(str(root), "x/y/z/f") is False
    (ws / "x/y/z/f").write_text("f")
    with pytest.raises(ValidationError, match=r"^Directory not empty: /home/agentuity/x "):
        F.fs_rmdir(str(root), "x")
    assert (ws / "x/y/z/f").exists()
    with pytest.raises(ValidationError, match=r"^Not a directory: /home/agentuity/x/y/z/f$"):
        F.fs_rmdir(str(root), "x/y/z/f")
    assert F.fs_rmdir(str(root), "x", recursive=True) is True
    assert F.fs_rmdir(str(root), "x", recursive=True) is False
    assert F.fs_rmdir(str(root), "a") is True
    with pytest.raises(ValidationError, match="root directory"):
        F.fs_rmdir(str(root), "/", recursive=True)
    # a symlink to a directory is not a directory to remove (and its target survives)
    (ws / "real").mkdir()
    os.symlink("real", ws / "alias")
    with pytest.raises(ValidationError, match="Not a directory: /home/agentuity/alias"):
        F.fs_rmdir(str(root), "alias", recursive=True)
    assert F.fs_rm(str(root), "alias") is True and (ws / "real").is_dir()


# -- download -------------------------------------------------------------------------------------

def _build_tree(d, host=None):
    (d / "sub/deeper").mkdir(parents=True)
    (d / "empty.txt").write_bytes(b"")
    (d / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(d / "exec.sh", 0o755)
    (d / "private").write_bytes(b"p" * 5000)
    os.chmod(d / "private", 0o600)
    (d / "sub/deeper/data.bin").write_bytes(os.urandom(300_000))
    (d / "sub/ünïcode ñame.txt").write_text("unicode")
    (d / ("long" * 40)).write_text("a name over 100 bytes")
    (d / os.fsdecode(b"latin1-\xe9")).write_text("not utf-8")
    os.symlink("exec.sh", d / "rel-link")
    os.symlink("/etc/passwd", d / "abs-link")
    os.symlink("sub", d / "dir-link")
    os.symlink("nowhere", d / "dangling")
    if host is not None:
        os.symlink(str(host), d / "host-link")
    (d / "ro").mkdir()
    (d / "ro/inside").write_text("in a read-only dir")
    os.chmod(d / "ro", 0o555)
    os.chmod(d / "sub", 0o750)
    os.utime(d / "private", (1600000000, 1600000000))


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_download_stores_links_and_modes(root, ws, host, fmt):
    _build_tree(ws / "t", host)
    os.mkfifo(ws / "t/fifo")
    buf = io.BytesIO()
    n = F.fs_download(str(root), "t", fmt, buf)
    assert n == len(buf.getvalue())
    buf.seek(0)
    if fmt == "tar.gz":
        assert buf.getvalue()[:2] == b"\x1f\x8b"
        with tarfile.open(fileobj=buf) as tf:
            m = {x.name: x for x in tf.getmembers()}
            assert m["host-link"].issym() and m["host-link"].linkname == str(host)
            assert m["dir-link"].issym()
            assert not any(k.startswith("host-link/") or k.startswith("dir-link/") for k in m)
            assert m["exec.sh"].mode == 0o755 and m["private"].mode == 0o600
            assert m["private"].mtime == 1600000000
            assert m["sub"].isdir() and m["sub"].mode == 0o750
            assert "fifo" not in m
            assert tf.extractfile("sub/deeper/data.bin").read() == \
                (ws / "t/sub/deeper/data.bin").read_bytes()
    else:
        with zipfile.ZipFile(buf) as zf:
            m = {x.filename: x for x in zf.infolist()}
            link = m["host-link"]
            assert stat.S_ISLNK(link.external_attr >> 16)
            assert zf.read(link) == str(host).encode()
            assert stat.S_IMODE(m["exec.sh"].external_attr >> 16) == 0o755
            assert stat.S_ISDIR(m["sub/"].external_attr >> 16)
            assert "fifo" not in m
            assert not any(k.startswith("host-link/") for k in m)
    host_unchanged(host)


def test_download_errors_before_output(root, ws):
    for path, err in (("missing", FileNotFoundInSandbox), ("x\0", ValidationError)):
        out = io.BytesIO()
        with pytest.raises(err):
            F.fs_download(str(root), path, "tar.gz", out)
        assert out.getvalue() == b""
    with pytest.raises(ValidationError, match="Unsupported archive format"):
        F.fs_download(str(root), ".", "rar", io.BytesIO())


def test_download_single_file_and_symlinked_top(root, ws):
    (ws / "d").mkdir()
    (ws / "d/f.txt").write_text("x")
    os.symlink("d", ws / "dl")
    buf = io.BytesIO()
    F.fs_download(str(root), "d/f.txt", "tar.gz", buf)
    buf.seek(0)
    assert tarfile.open(fileobj=buf).getnames() == ["f.txt"]
    buf = io.BytesIO()
    F.fs_download(str(root), "dl", "tar.gz", buf)
    buf.seek(0)
    assert tarfile.open(fileobj=buf).getnames() == ["f.txt"]


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_download_memory_is_flat(root, ws, fmt):
    size = 200 * MiB
    (ws / "big").mkdir()
    _sparse_file(ws / "big/file", size)
    sink = Sink()
    tracemalloc.start()
    try:
        F.fs_download(str(root), "big", fmt, sink)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink.n > 5 * MiB
    assert peak < 12 * MiB, f"{fmt} download of 200 MB peaked at {peak / MiB:.1f} MiB"


# -- upload: round trips --------------------------------------------------------------------------

def _chmod_back(d):
    for dirpath, dirnames, _ in os.walk(d):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, 0o755)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_round_trip_tree(root, ws, fmt):
    _build_tree(ws / "t")
    buf = io.BytesIO()
    F.fs_download(str(root), "t", fmt, buf)
    buf.seek(0)
    res = F.fs_upload(str(root), "copy", "", buf)
    assert res["skipped"] == []
    assert tree_state(ws / "copy") == tree_state(ws / "t")
    assert os.readlink(ws / "copy/abs-link") == "/etc/passwd"
    if fmt == "tar.gz":
        assert os.stat(ws / "copy/private").st_mtime == 1600000000
    no_staging_left(ws)
    _chmod_back(ws)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_round_trip_many_files(root, ws, fmt):
    t = ws / "many"
    for i in range(2000):
        d = t / f"d{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i}"
        if i % 20 == 0:
            os.symlink(f"f{i + 1}", p)
        else:
            p.write_bytes(os.urandom(i % 700))
            os.chmod(p, (0o644, 0o755, 0o600, 0o640)[i % 4])
    buf = io.BytesIO()
    F.fs_download(str(root), "many", fmt, buf)
    buf.seek(0)
    res = F.fs_upload(str(root), "many2", fmt, buf)
    assert res["filesWritten"] == 1900
    assert tree_state(ws / "many2") == tree_state(t)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_round_trip_empty_file_and_empty_dir(root, ws, fmt):
    (ws / "e").mkdir()
    (ws / "e/empty").write_bytes(b"")
    buf = io.BytesIO()
    F.fs_download(str(root), "e", fmt, buf)
    buf.seek(0)
    F.fs_upload(str(root), "e2", fmt, buf)
    assert (ws / "e2/empty").read_bytes() == b""
    (ws / "nothing").mkdir()
    buf = io.BytesIO()
    F.fs_download(str(root), "nothing", fmt, buf)
    buf.seek(0)
    F.fs_upload(str(root), "nothing2", fmt, buf)
    assert os.listdir(ws / "nothing2") == []


def test_upload_memory_is_flat(root, ws, tmp_path):
    size = 200 * MiB
    (ws / "big").mkdir()
    _sparse_file(ws / "big/file", size)
    arch = tmp_path / "big.tgz"
    with open(arch, "wb") as fh:
        F.fs_download(str(root), "big", "tar.gz", fh)
    tracemalloc.start()
    try:
        with open(arch, "rb") as fh:
            res = F.fs_upload(str(root), "big2", "", fh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res["bytesWritten"] == size
    assert peak < 12 * MiB, f"upload of 200 MB peaked at {peak / MiB:.1f} MiB"
    with open(ws / "big/file", "rb") as a, open(ws / "big2/file", "rb") as b:
        while True:
            x, y = a.read(8 * MiB), b.read(8 * MiB)
            assert x == y
            if not x:
                break


# -- upload: format handling ----------------------------------------------------------------------

class Unseekable(io.RawIOBase):
    def __init__(self, data):
        self.b = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self.b.readinto(b)


def test_upload_detects_format(root, ws):
    tgz = make_tgz(ti("a.txt", data=b"tar"))
    zp = make_zip(zi("b.txt", b"zip"))
    F.fs_upload(str(root), "u", "", io.BytesIO(tgz))
    F.fs_upload(str(root), "u", "", Unseekable(zp))     # zip from a stream: spooled
    F.fs_upload(str(root), "u", "zip", io.BytesIO(zp))
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tf:
        info, data = ti("c.txt", data=b"plain")
        tf.addfile(info, io.BytesIO(data))
    F.fs_upload(str(root), "u", "", io.BytesIO(plain.getvalue()))
    assert sorted(os.listdir(ws / "u")) == ["a.txt", "b.txt", "c.txt"]
    # multi-member gzip (as pigz or a concatenating client may send)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info, data = ti("d.txt", data=b"multi")
        tf.addfile(info, io.BytesIO(data))
    r = raw.getvalue()
    F.fs_upload(str(root), "u", "tar.gz", io.BytesIO(gzip.compress(r[:700]) + gzip.compress(r[700:])))
    assert (ws / "u/d.txt").read_bytes() == b"multi"


@pytest.mark.parametrize("data,fmt,match", [
    (b"", "", "empty upload"),
    (b"garbage" * 100, "", "Unrecognized archive format"),
    (make_zip(zi("a", b"x")), "tar.gz", "the content is zip, not tar.gz"),
    (make_tgz(ti("a", data=b"x")), "zip", "the content is tar.gz, not zip"),
    (make_tgz(ti("a", data=b"x" * 100000))[:-30], "", "Invalid archive"),
    (gzip.compress(b"not a tar at all" * 100), "", "Invalid archive"),
    (b"PK\x03\x04" + b"\0" * 200, "", "Invalid archive"),
    (make_tgz(ti("a", data=b"x")), "rar", "Unsupported archive format"),
], ids=["empty", "garbage", "zip-as-tgz", "tgz-as-zip", "truncated-tgz", "gzip-not-tar",
        "broken-zip", "unknown-format"])
def test_upload_bad_archives_change_nothing(root, ws, data, fmt, match):
    (ws / "up").mkdir()
    (ws / "up/keep").write_text("keep")
    before = tree_state(ws)
    with pytest.raises(ValidationError, match=match):
        upload(root, data, fmt=fmt)
    assert tree_state(ws) == before


def test_upload_truncated_midway_leaves_nothing(root, ws):
    big = os.urandom(3 * MiB)
    data = make_tgz(ti("first.txt", data=b"first"), ti("big", data=big))
    with pytest.raises(ValidationError, match="Invalid archive"):
        upload(root, data[:len(data) // 2], path="new/target")
    # the target directories this upload created are gone too
    assert not (ws / "new").exists()


# -- upload: security -----------------------------------------------------------------------------

@pytest.fixture
def target(ws):
    (ws / "up").mkdir()
    (ws / "up/keep").write_text("keep")
    return ws / "up"


def _assert_rejected(root, ws, host, target, data, match):
    before = tree_state(ws)
    with pytest.raises(ValidationError, match=match):
        upload(root, data)
    assert tree_state(ws) == before     # nothing written anywhere, no staging left
    host_unchanged(host)


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "a/b/../../../evil.txt",
                                  "..", "./../evil.txt"])
def test_upload_rejects_dotdot(root, ws, host, target, name):
    data = make_tgz(ti("fine.txt", data=b"ok"), ti(name, data=b"evil"))
    _assert_rejected(root, ws, host, target, data, r"contains '\.\.'")
    data = make_zip(zi("fine.txt", b"ok"), zi(name, b"evil"))
    _assert_rejected(root, ws, host, target, data, r"contains '\.\.'")


def test_upload_rejects_absolute(root, ws, host, target):
    name = str(host / "secret")
    _assert_rejected(root, ws, host, target, make_tgz(ti(name, data=b"pwned")), "absolute path")
    _assert_rejected(root, ws, host, target, make_zip(zi(name, b"pwned")), "absolute path")


@pytest.mark.parametrize("link_target", ["HOST", "/etc", "..", ".", "sub", "../../.."])
def test_upload_rejects_writing_through_its_own_symlink(root, ws, host, target, link_target):
    link_target = str(host) if link_target == "HOST" else link_target
    tgz = make_tgz(ti("sub", tarfile.DIRTYPE, mode=0o755),
                   ti("lnk", tarfile.SYMTYPE, linkname=link_target),
                   ti("lnk/pwned", data=b"pwned"))
    _assert_rejected(root, ws, host, target, tgz, "lnk is a symlink and nothing is extracted "
                                                  "through a symlink")
    zp = make_zip(zi("sub/", b"", 0o755, stat.S_IFDIR),
                  zi("lnk", link_target.encode(), 0o777, stat.S_IFLNK),
                  zi("lnk/pwned", b"pwned"))
    _assert_rejected(root, ws, host, target, zp, "through a symlink")


def test_upload_symlink_entries_are_kept_as_links(root, ws, host, target):
    tgz = make_tgz(ti("to-host", tarfile.SYMTYPE, linkname=str(host / "secret")),
                   ti("to-shadow", tarfile.SYMTYPE, linkname="/etc/shadow"))
    upload(root, tgz)
    assert os.readlink(target / "to-host") == str(host / "secret")
    # reading it through the sandbox API stays inside the root
    with pytest.raises(FileNotFoundInSandbox):
        F.fs_read(str(root), "up/to-host", io.BytesIO())
    # and a later upload writing a file of that name replaces the link, never writes through it
    upload(root, make_tgz(ti("to-host", data=b"replaced")))
    assert not os.path.islink(target / "to-host")
    assert (target / "to-host").read_bytes() == b"replaced"
    host_unchanged(host)


def test_upload_does_not_follow_symlinks_already_in_target(root, ws, host, target):
    # the sandbox planted links to the host in the upload target before the upload
    os.symlink(str(host), target / "dir")
    os.symlink(str(host / "secret"), target / "file")
    os.symlink(os.path.relpath(host, target), target / "reldir")
    tgz = make_tgz(ti("dir/pwned", data=b"x"), ti("file", data=b"x"),
                   ti("reldir", tarfile.DIRTYPE), ti("reldir/pwned", data=b"x"))
    upload(root, tgz)
    host_unchanged(host)
    # the links were replaced by what the archive holds (as tar(1) does)
    assert (target / "dir").is_dir() and not (target / "dir").is_symlink()
    assert (target / "dir/pwned").read_bytes() == b"x"
    assert not (target / "file").is_symlink()


def test_upload_target_path_through_symlink_stays_in_root(root, ws, host):
    os.symlink(str(host), ws / "hostdir")
    inside = root / str(host).lstrip("/")
    inside.mkdir(parents=True)
    F.fs_upload(str(root), "hostdir", "", io.BytesIO(make_tgz(ti("a", data=b"x"))))
    assert (inside / "a").read_bytes() == b"x"
    host_unchanged(host)


@pytest.mark.parametrize("linkname", ["HOSTSECRET", "/etc/passwd", "../keep", "keep",
                                      "missing-earlier", "later"])
def test_upload_rejects_hardlinks_outside_the_archive(root, ws, host, target, linkname):
    linkname = str(host / "secret") if linkname == "HOSTSECRET" else linkname
    tgz = make_tgz(ti("hl", tarfile.LNKTYPE, linkname=linkname), ti("later", data=b"x"))
    _assert_rejected(root, ws, host, target, tgz, "hard link to")


def test_upload_hardlink_to_earlier_entry_is_kept(root, ws, target):
    tgz = make_tgz(ti("a/orig", data=b"shared"), ti("b/hl", tarfile.LNKTYPE, linkname="a/orig"))
    res = upload(root, tgz)
    assert res["filesWritten"] == 2
    assert os.stat(target / "a/orig").st_ino == os.stat(target / "b/hl").st_ino
    assert (target / "b/hl").read_bytes() == b"shared"


def test_upload_skips_devices_and_fifos(root, ws, target):
    tgz = make_tgz(ti("null", tarfile.CHRTYPE), ti("sda", tarfile.BLKTYPE),
                   ti("pipe", tarfile.FIFOTYPE), ti("real", data=b"x"))
    res = upload(root, tgz)
    assert sorted(res["skipped"]) == ["null", "pipe", "sda"]
    assert sorted(os.listdir(target)) == ["keep", "real"]
    zp = make_zip(zi("zpipe", b"", 0o644, stat.S_IFIFO), zi("zchr", b"", 0o644, stat.S_IFCHR),
                  zi("zreal", b"y"))
    res = upload(root, zp)
    assert sorted(res["skipped"]) == ["zchr", "zpipe"]
    assert sorted(os.listdir(target)) == ["keep", "real", "zreal"]


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_upload_strips_setuid_setgid(root, ws, target, fmt):
    if fmt == "tar.gz":
        data = make_tgz(ti("suid", data=b"x", mode=0o4755), ti("sgid", data=b"x", mode=0o2755),
                        ti("sgiddir", tarfile.DIRTYPE, mode=0o2775),
                        ti("sticky", tarfile.DIRTYPE, mode=0o1777))
    else:
        data = make_zip(zi("suid", b"x", 0o4755), zi("sgid", b"x", 0o2755),
                        zi("sgiddir/", b"", 0o2775, stat.S_IFDIR),
                        zi("sticky/", b"", 0o1777, stat.S_IFDIR))
    upload(root, data)
    mode = lambda n: stat.S_IMODE(os.lstat(target / n).st_mode)  # noqa: E731
    assert mode("suid") == 0o755 and mode("sgid") == 0o755
    assert mode("sgiddir") == 0o775 and mode("sticky") == 0o1777


def test_upload_conflict_changes_nothing(root, ws, target):
    (target / "d").mkdir()
    (target / "d/inner").write_text("x")
    before = tree_state(ws)
    with pytest.raises(Conflict, match="Cannot replace directory /home/agentuity/up/d"):
        upload(root, make_tgz(ti("a-new-file", data=b"x"), ti("d", data=b"file now")))
    assert tree_state(ws) == before


def test_upload_merges_and_replaces(root, ws, target):
    (target / "d").mkdir(mode=0o700)
    (target / "d/old").write_text("old")
    (target / "f").write_text("old")
    upload(root, make_tgz(ti("d/new", data=b"new"), ti("f", data=b"new"),
                          ti("dup", data=b"first"), ti("dup", data=b"second")))
    assert sorted(os.listdir(target / "d")) == ["new", "old"]
    assert stat.S_IMODE(os.stat(target / "d").st_mode) == 0o700     # implied dir: mode kept
    assert (target / "f").read_bytes() == b"new"
    assert (target / "dup").read_bytes() == b"second"
    upload(root, make_tgz(ti("d", tarfile.DIRTYPE, mode=0o751)))
    assert stat.S_IMODE(os.stat(target / "d").st_mode) == 0o751     # explicit: applied
    no_staging_left(ws)


def test_upload_into_missing_target_creates_it(root, ws):
    F.fs_upload(str(root), "/srv/app/x", "", io.BytesIO(make_tgz(ti("a", data=b"1"))))
    assert (root / "srv/app/x/a").read_bytes() == b"1"
    (ws / "file").write_text("x")
    with pytest.raises(ValidationError, match="File exists and is not a directory: "
                                              "/home/agentuity/file"):
        F.fs_upload(str(root), "file", "", io.BytesIO(make_tgz(ti("a", data=b"1"))))


# -- direct tree copies ---------------------------------------------------------------------------

def test_copy_in_and_out(root, ws, tmp_path, host):
    src = tmp_path / "local"
    src.mkdir()
    _build_tree(src)
    res = F.fs_copy_in(str(root), str(src), "proj/copy")
    assert res["directoriesCreated"] == ["/home/agentuity/proj", "/home/agentuity/proj/copy"]
    assert tree_state(ws / "proj/copy") == tree_state(src)
    # the sandbox plants a link to the host; copying out stores the link, reads nothing through it
    os.symlink(str(host), ws / "proj/copy/planted")
    out = tmp_path / "out"
    res = F.fs_copy_out(str(root), "proj/copy", str(out))
    assert tree_state(out) == tree_state(ws / "proj/copy")
    assert os.readlink(out / "planted") == str(host)
    assert res["filesTransferred"] == sum(1 for v in tree_state(src).values() if v[0] == "file")
    # single files, both ways
    F.fs_copy_in(str(root), str(src / "exec.sh"), "single.sh")
    assert (ws / "single.sh").read_bytes() == (src / "exec.sh").read_bytes()
    assert stat.S_IMODE(os.stat(ws / "single.sh").st_mode) == 0o755
    F.fs_copy_out(str(root), "single.sh", str(tmp_path / "x/y/single.sh"))
    assert (tmp_path / "x/y/single.sh").read_bytes() == (src / "exec.sh").read_bytes()
    with pytest.raises(ValidationError, match="Local path not found"):
        F.fs_copy_in(str(root), str(tmp_path / "nope"), "x")
    with pytest.raises(FileNotFoundInSandbox):
        F.fs_copy_out(str(root), "nope", str(tmp_path / "nope"))
    _chmod_back(ws)
    _chmod_back(tmp_path)
    host_unchanged(host)


def test_errors_are_localsb_errors(root):
    with pytest.raises(LocalsbError):
        F.fs_read(str(root), "missing", io.BytesIO())
    with RootedFS(str(root)) as rfs:    # a RootedFS works as well as a path
        assert F.fs_write(rfs, [FileSpec("x", b"1")]) == {"filesWritten": 1}
        assert F.fs_rm(rfs, "x") is True


def test_upload_many_directories_and_cross_links(root, ws, target):
    # more directories than the extractor keeps open at once, with hard links across them
    members = []
    for i in range(600):
        members.append(ti(f"d{i:03d}/f", data=str(i).encode()))
        if i >= 300:
            members.append(ti(f"d{i:03d}/hl", tarfile.LNKTYPE, linkname=f"d{i - 300:03d}/f"))
    res = upload(root, make_tgz(*members))
    assert res["filesWritten"] == 900
    for i in range(300, 600):
        assert (target / f"d{i:03d}/hl").read_bytes() == str(i - 300).encode()
        assert os.stat(target / f"d{i:03d}/hl").st_ino == os.stat(target / f"d{i - 300:03d}/f").st_ino
    # no descriptor leaked by the extractor
    assert len(os.listdir("/proc/self/fd")) < 64


def test_upload_rejects_nul_in_names(root, ws, host, target):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("ok\0/../../evil" + "x" * 120)    # only pax can carry a NUL
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    _assert_rejected(root, ws, host, target, buf.getvalue(), "NUL byte in name")


class Broken:
    """An output whose reader went away after a while (a dropped HTTP client)."""

    def __init__(self, after):
        self.left = after

    def write(self, b):
        self.left -= len(b)
        if self.left < 0:
            raise BrokenPipeError("client went away")
        return len(b)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_download_to_a_dropped_client_stops_cleanly(root, ws, fmt):
    import threading
    (ws / "d").mkdir()
    for i in range(8):
        (ws / f"d/f{i}").write_bytes(os.urandom(MiB))
    before = threading.active_count()
    with pytest.raises(BrokenPipeError):
        F.fs_download(str(root), "d", fmt, Broken(2 * MiB))
    assert threading.active_count() == before   # the compressor thread is gone


def test_upload_from_a_failing_stream_passes_its_error_and_cleans_up(root, ws, target):
    data = make_tgz(ti("a", data=os.urandom(3 * MiB)))

    class Dropping(io.RawIOBase):
        def __init__(self):
            self.b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            if self.b.tell() > len(data) // 2:
                raise ConnectionResetError("peer reset")
            return self.b.readinto(memoryview(b)[:65536])

    before = tree_state(ws)
    with pytest.raises(ConnectionResetError):
        F.fs_upload(str(root), "up", "", Dropping())
    assert tree_state(ws) == before
