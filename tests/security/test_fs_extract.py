"""`fs cp -r <id>:/dir ./local` writes only below ./local (issue 14, item 8).

What a download brings to the host comes from the sandbox (hostile code) or from the server: the
host extracts it with the project's own extractor, the one uploads use, never with tarfile's
'data' filter (it refuses absolute symlinks, which failed the copy with an internal error and a
half-made directory, and it has had bypasses on the Python 3.11 this machine runs). Symlinks,
absolute ones too, arrive as links and are never followed; an entry that would land outside the
destination fails the copy with one clear line; a copy that fails leaves nothing under the
destination's name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import tempfile
import zipfile

import pytest

from localsb.api.errors import ValidationError
from localsb.engine.files import fs_extract_local
from tests.unit.cli_fake_backend import FakeBackend, cli as cli_inprocess

SETUP = ("set -e; cd /home/agentuity; mkdir -p d/sub d/empty; echo hello > d/f; "
         "head -c 100000 /dev/zero > d/sub/big; ln -s /etc/passwd d/abs; ln -s ../f d/sub/rel; "
         "ln -s /etc d/absdir; ln -s /nonexistent/x d/dangling; ln -s sub d/reldir")


# archives ------------------------------------------------------------------------------------------
def ti(name, kind=tarfile.REGTYPE, data=b"", linkname="", mode=0o644, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def tgz(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zipped(*entries) -> bytes:
    """(name, content, unix mode with its file type)"""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content, mode in entries:
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3
            zi.external_attr = mode << 16
            zf.writestr(zi, content)
    return buf.getvalue()


def snapshot_tree(path) -> dict:
    """Every entry below ``path`` (not following links): kind, mode, content digest or target."""
    out = {}
    for base, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(base, n)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    what = "file:" + hashlib.sha256(fh.read()).hexdigest()
            else:
                what = "dir" if stat.S_ISDIR(st.st_mode) else oct(st.st_mode)
            out[os.path.relpath(p, path)] = (what, stat.S_IMODE(st.st_mode))
    return out


class ArchiveBackend(FakeBackend):
    """A backend (the sandbox or the server) that answers a download with the given bytes."""

    def __init__(self, archive: bytes, fail_after: bool = False):
        super().__init__()
        self.archive, self.fail_after = archive, fail_after

    def fs_download(self, sandbox_id, path, fmt, out, *, org_id=None):
        out.write(self.archive)
        if self.fail_after:
            from localsb.api.errors import NetworkError
            raise NetworkError("connection reset while downloading")
        return len(self.archive)


@pytest.fixture
def area(tmp_path):
    """<tmp>/outside/sentinel (must never change), <tmp>/work (the destination's parent)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_bytes(b"untouched")
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep").write_bytes(b"keep")
    before = snapshot_tree(tmp_path)
    return tmp_path, outside, work, before


# hostile archives --------------------------------------------------------------------------------
def _hostile(outside):
    o = str(outside)
    return {
        "dotdot": tgz(ti("ok"), ti("../escape", data=b"x")),
        "dotdot-deep": tgz(ti("a/", tarfile.DIRTYPE), ti("a/../../escape", data=b"x")),
        "absolute": tgz(ti("ok"), ti(o + "/abs", data=b"x")),
        "symlink-then-file": tgz(ti("link", tarfile.SYMTYPE, linkname=o), ti("link/pwned", data=b"x")),
        "symlink-dotdot-then-file": tgz(ti("link", tarfile.SYMTYPE, linkname="../.."),
                                        ti("link/outside/pwned", data=b"x")),
        "symlink-chain-then-file": tgz(ti("a", tarfile.SYMTYPE, linkname="."),
                                       ti("b", tarfile.SYMTYPE, linkname="a/../../outside"),
                                       ti("b/pwned", data=b"x")),
        "symlink-to-absolute-dir-then-file": tgz(ti("etc", tarfile.SYMTYPE, linkname="/etc"),
                                                 ti("etc/localsb-pwned", data=b"x")),
        "hardlink-absolute": tgz(ti("hl", tarfile.LNKTYPE, linkname=o + "/sentinel")),
        "hardlink-dotdot": tgz(ti("hl", tarfile.LNKTYPE, linkname="../outside/sentinel")),
        "hardlink-through-symlink": tgz(ti("s", tarfile.SYMTYPE, linkname=o),
                                        ti("hl", tarfile.LNKTYPE, linkname="s/sentinel")),
        "zip-dotdot": zipped(("ok", b"x", 0o100644), ("../escape", b"x", 0o100644)),
        "zip-absolute": zipped((o + "/abs", b"x", 0o100644)),
        "zip-symlink-then-file": zipped(("link", o.encode(), 0o120777), ("link/pwned", b"x", 0o100644)),
    }


HOSTILE = sorted(_hostile("/x"))


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_writes_nothing_outside_the_destination(area, case):
    tmp, outside, work, before = area
    data = _hostile(outside)[case]
    dest = work / "out"
    with pytest.raises(ValidationError):
        fs_extract_local(io.BytesIO(data), str(dest), "")
    assert snapshot_tree(tmp) == before, "the failed extraction left or changed something"
    assert not os.path.exists("/etc/localsb-pwned")
    # into an existing directory: left exactly as it was
    dest.mkdir()
    (dest / "mine").write_bytes(b"mine")
    before = snapshot_tree(tmp)
    with pytest.raises(ValidationError):
        fs_extract_local(io.BytesIO(data), str(dest), "")
    assert snapshot_tree(tmp) == before


@pytest.mark.parametrize("case", HOSTILE)
def test_cp_r_of_a_hostile_download_fails_with_one_line_and_leaves_nothing(area, case):
    tmp, outside, work, before = area
    r = cli_inprocess("sb", "fs", "cp", "-r", "sbx_1:/home/agentuity/d", str(work / "out"),
                      backend=ArchiveBackend(_hostile(outside)[case]))
    assert r.rc == 2, (r.rc, r.err)
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert "Unsafe archive entry" in r.err or "Invalid archive" in r.err, r.err
    assert snapshot_tree(tmp) == before
    assert not os.path.exists("/etc/localsb-pwned")


def test_devices_are_skipped_links_kept_setuid_stripped(area):
    tmp, outside, work, _ = area
    data = tgz(ti("dev/", tarfile.DIRTYPE), ti("dev/null", tarfile.CHRTYPE, dev=(1, 3)),
               ti("dev/sda", tarfile.BLKTYPE, dev=(8, 0)), ti("dev/fifo", tarfile.FIFOTYPE),
               ti("suid", data=b"#!/bin/sh\n", mode=0o4755), ti("sgid", data=b"x", mode=0o2750),
               # a symlink replaced by a directory entry: the directory is made in its place
               ti("d", tarfile.SYMTYPE, linkname=str(outside)), ti("d/", tarfile.DIRTYPE),
               ti("d/inside", data=b"in"))
    res = fs_extract_local(io.BytesIO(data), str(work / "out"), "tar.gz")
    out = work / "out"
    assert sorted(os.listdir(out / "dev")) == []
    assert sorted(res["skipped"]) == ["dev/fifo", "dev/null", "dev/sda"]
    assert stat.S_IMODE(os.stat(out / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "sgid").st_mode) == 0o750
    assert not os.path.islink(out / "d") and (out / "d" / "inside").read_bytes() == b"in"
    assert sorted(os.listdir(outside)) == ["sentinel"]
    assert [n for n in os.listdir(work) if n.startswith(".")] == []


def test_failed_download_leaves_no_partial_destination(area):
    tmp, outside, work, before = area
    good = tgz(ti("a", data=b"a"), ti("sub/", tarfile.DIRTYPE), ti("sub/b", data=b"b"))
    # the connection drops after the archive's bytes arrived: nothing is extracted at all
    r = cli_inprocess("sb", "fs", "cp", "-r", "sbx_1:/d", str(work / "new" / "out"),
                      backend=ArchiveBackend(good, fail_after=True))
    assert r.rc != 0 and "Traceback" not in r.err
    assert snapshot_tree(tmp) == before
    # good entries, then a truncated one: neither the destination nor the parents it made remain
    bad = tgz(ti("a", data=b"a"), ti("sub/", tarfile.DIRTYPE), ti("sub/b", data=b"b" * 100000))
    cut = bad[: len(bad) // 2]
    r = cli_inprocess("sb", "fs", "cp", "-r", "sbx_1:/d", str(work / "new" / "out"),
                      backend=ArchiveBackend(cut))
    assert r.rc == 2 and "Traceback" not in r.err, r.err
    assert snapshot_tree(tmp) == before
    # and the same archive complete arrives whole
    r = cli_inprocess("sb", "fs", "cp", "-r", "sbx_1:/d", str(work / "new" / "out"),
                      backend=ArchiveBackend(good))
    assert r.rc == 0, r.err
    assert (work / "new" / "out" / "sub" / "b").read_bytes() == b"b"
    assert [n for n in os.listdir(work / "new") if n != "out"] == []


# real sandboxes, both backends ------------------------------------------------------------------
def _check_copied_tree(dest):
    assert (dest / "f").read_bytes() == b"hello\n"
    assert os.path.getsize(dest / "sub" / "big") == 100000
    assert os.path.isdir(dest / "empty") and not os.path.islink(dest / "empty")
    links = {"abs": "/etc/passwd", "sub/rel": "../f", "absdir": "/etc", "dangling": "/nonexistent/x",
             "reldir": "sub"}
    for name, target in links.items():
        assert os.path.islink(dest / name), name
        assert os.readlink(dest / name) == target, name


def _passwd_state():
    st = os.stat("/etc/passwd")
    with open("/etc/passwd", "rb") as fh:
        return st.st_mtime_ns, st.st_size, hashlib.sha256(fh.read()).hexdigest()


def _copy_and_check(cli, sid, env, tmp):
    passwd = _passwd_state()
    work = tmp / "work"
    work.mkdir()
    before = set(os.listdir(tmp))
    p = cli("sb", "fs", "cp", "-r", f"{sid}:/home/agentuity/d", str(work / "copy"), "--json", env=env)
    assert p.returncode == 0, (p.stdout, p.stderr)
    res = json.loads(p.stdout)
    assert res["destination"] == str(work / "copy") and res["filesTransferred"] == 2
    assert res["bytesTransferred"] == 100006
    _check_copied_tree(work / "copy")
    assert os.listdir(work) == ["copy"]              # no temporary name left beside it
    assert set(os.listdir(tmp)) == before
    assert _passwd_state() == passwd
    # again into the now existing directory: merged, links still links
    p = cli("sb", "fs", "cp", "-r", f"{sid}:/home/agentuity/d", str(work / "copy"), env=env)
    assert p.returncode == 0, p.stderr
    assert b"2 files, 100006 bytes" in p.stderr
    _check_copied_tree(work / "copy")
    assert os.listdir(work) == ["copy"] and _passwd_state() == passwd


def test_cp_r_download_with_absolute_symlinks_local_backend(cli, tmp_path):
    p = cli("sb", "create", "--json", check=0)
    sid = json.loads(p.stdout)["sandboxId"]
    cli("sb", "exec", sid, "--", "sh", "-c", SETUP, check=0)
    _copy_and_check(cli, sid, None, tmp_path)


def test_cp_r_download_with_absolute_symlinks_cloud_backend(cli, state_dir, tmp_path):
    from mockcloud.testing import ServerProcess
    srv = ServerProcess(str(tmp_path / "mockcloud"), engine_state=state_dir).start()
    try:
        env = dict(srv.client_env(srv.key("acme")), LOCALSB_BACKEND="cloud")
        p = cli("sb", "create", "--json", env=env, check=0)
        sid = json.loads(p.stdout)["sandboxId"]
        cli("sb", "exec", sid, "--", "sh", "-c", SETUP, env=env, check=0)
        out = tmp_path / "cloud"
        out.mkdir()
        _copy_and_check(cli, sid, env, out)
    finally:
        srv.stop()


def test_cp_r_download_onto_a_full_disk_leaves_nothing(cli, tmp_path):
    """A real failure half-way (the local disk fills up): one line, exit 7, and nothing left under
    the destination's name."""
    p = cli("sb", "create", "--json", check=0)
    sid = json.loads(p.stdout)["sandboxId"]
    cli("sb", "exec", sid, "--", "sh", "-c", "set -e; mkdir -p /home/agentuity/d; cd /home/agentuity/d; "
        "echo a > a; head -c 3000000 /dev/zero > m; echo z > z", check=0)
    small = tempfile.mkdtemp(prefix="lsbtest-fsx-", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small], check=True)
    try:
        p = cli("sb", "fs", "cp", "-r", f"{sid}:/home/agentuity/d", os.path.join(small, "out"))
        assert p.returncode == 7, (p.returncode, p.stderr)
        err = p.stderr.decode()
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert os.path.join(small, "out") in err and ".localsb-" not in err, err
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", small], check=True)
        os.rmdir(small)
