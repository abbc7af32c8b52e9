"""Sandbox file operations on a real btrfs volume, as root: device nodes, mount points, owners,
and the big round trips (a 256 MiB file standing in for the 1 GB one, to keep CI fast; the 20,000
file tree at full size).

The volume is a loop-mounted btrfs image made for this module (named lsbtest-files-<pid>) and
removed afterwards.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile

import pytest

from localsb.api.errors import FileNotFoundInSandbox, ValidationError
from localsb.api.specs import FileSpec
from localsb.engine import files as F
from localsb.linux.rootfs_access import RootedFS

MiB = 1 << 20
BIG = 256 * MiB
NFILES = 20000


@pytest.fixture(scope="module")
def volume():
    base = tempfile.mkdtemp(prefix=f"lsbtest-files-{os.getpid()}-", dir="/tmp")
    img = base + ".img"
    with open(img, "wb") as fh:
        fh.truncate(4 << 30)
    subprocess.run(["mkfs.btrfs", "-q", img], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", img, base], check=True)    # loop autoclears on umount
    try:
        yield base
    finally:
        subprocess.run(["umount", base], check=False)
        os.rmdir(base)
        os.unlink(img)


@pytest.fixture
def root(volume):
    r = tempfile.mkdtemp(prefix="root-", dir=volume)
    os.makedirs(os.path.join(r, "home/agentuity"))
    yield r
    subprocess.run(["chattr", "-R", "-i", r], capture_output=True)
    shutil.rmtree(r, ignore_errors=True)


@pytest.fixture
def host(tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    return d


def ws(root):
    return os.path.join(root, "home/agentuity")


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(8 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def tree_state(path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as fh:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode),
                                hashlib.md5(fh.read()).hexdigest())
    return out


# -- device nodes -----------------------------------------------------------------------------------

def test_device_nodes_in_the_root_are_never_opened(root, tmp_path):
    # A device node in the sandbox's volume would be the HOST's device when opened from the host
    # (here /dev/null's numbers, and /dev/mem's): it must be refused before open(2).
    os.mknod(os.path.join(ws(root), "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(os.path.join(ws(root), "mem"), 0o600 | stat.S_IFCHR, os.makedev(1, 1))
    os.symlink("mem", os.path.join(ws(root), "memlink"))
    for p in ("null", "mem", "memlink"):
        with pytest.raises(ValidationError, match="Not a regular file"):
            F.fs_read(root, p, io.BytesIO())
        with pytest.raises(ValidationError, match="Not a regular file"):
            F.fs_write(root, [FileSpec(p, b"x")])
    buf = io.BytesIO()
    F.fs_download(root, ".", "tar.gz", buf)
    buf.seek(0)
    names = tarfile.open(fileobj=buf).getnames()
    assert "null" not in names and "mem" not in names and "memlink" in names
    out = tmp_path / "out"
    F.fs_copy_out(root, ".", str(out))
    assert not (out / "mem").exists() and os.path.islink(out / "memlink")


def test_upload_never_creates_device_nodes(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind in (("mem", tarfile.CHRTYPE), ("sda", tarfile.BLKTYPE),
                           ("fifo", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.devmajor, info.devminor = 1, 1
            tf.addfile(info)
    buf.seek(0)
    res = F.fs_upload(root, "up", "", buf)
    assert sorted(res["skipped"]) == ["fifo", "mem", "sda"]
    assert os.listdir(os.path.join(ws(root), "up")) == []


def test_setuid_stripped_even_as_root(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("suid-root")
        info.mode, info.uid, info.gid, info.size = 0o6755, 0, 0, 4
        tf.addfile(info, io.BytesIO(b"\x7fELF"))
    buf.seek(0)
    F.fs_upload(root, ".", "", buf)
    st = os.lstat(os.path.join(ws(root), "suid-root"))
    assert stat.S_IMODE(st.st_mode) == 0o755


# -- mount points -----------------------------------------------------------------------------------

@pytest.fixture
def bind_mount(root, host):
    mnt = os.path.join(ws(root), "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", "--bind", str(host), mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_walks_never_enter_another_mount(root, host, bind_mount):
    buf = io.BytesIO()
    F.fs_download(root, ".", "tar.gz", buf)
    buf.seek(0)
    names = tarfile.open(fileobj=buf).getnames()
    assert "mnt" in names and "mnt/secret" not in names
    with pytest.raises(ValidationError, match="Refusing to remove a mount point: "
                                              "/home/agentuity/mnt"):
        F.fs_rmdir(root, ".", recursive=True)
    assert (host / "secret").read_text() == "host secret\n"


# -- owners -----------------------------------------------------------------------------------------

def test_new_files_belong_to_the_sandbox_root_user(root):
    # A user-namespaced sandbox's root is some high host uid: what we write must be its own.
    os.chown(root, 100000, 100000)
    with RootedFS(root) as rfs:
        assert rfs.owner == (100000, 100000)
        F.fs_write(rfs, [FileSpec("new/dir/file.txt", b"x")])
        F.fs_mkdir(rfs, "made", recursive=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("arch/f")
            info.uid = info.gid = 0
            tf.addfile(info, io.BytesIO(b""))
            link = tarfile.TarInfo("arch/l")
            link.type, link.linkname = tarfile.SYMTYPE, "f"
            tf.addfile(link)
        buf.seek(0)
        F.fs_upload(rfs, ".", "", buf)
    for rel in ("new", "new/dir", "new/dir/file.txt", "made", "arch", "arch/f", "arch/l"):
        st = os.lstat(os.path.join(ws(root), rel))
        assert (st.st_uid, st.st_gid) == (100000, 100000), rel
    # an existing file keeps its owner when rewritten
    p = os.path.join(ws(root), "theirs")
    with open(p, "w") as fh:
        fh.write("x")
    os.chown(p, 101000, 101000)
    F.fs_write(root, [FileSpec("theirs", b"y")])
    assert os.stat(p).st_uid == 101000


# -- round trips ------------------------------------------------------------------------------------

def _big_file(path, size):
    # real-looking data: binaries from /usr, repeated
    chunk = b""
    for name in sorted(os.listdir("/usr/bin"))[:80]:
        p = os.path.join("/usr/bin", name)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as fh:
                chunk += fh.read(2 * MiB)
        if len(chunk) > 16 * MiB:
            break
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, len(chunk))
            fh.write(chunk[:n])
            left -= n


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_big_file_round_trip(root, tmp_path, fmt):
    src = tmp_path / "big.bin"
    _big_file(src, BIG)
    with open(src, "rb") as fh:
        assert F.fs_write_file(root, "bigdir/big.bin", fh) == BIG
    arch = tmp_path / ("a." + fmt)
    with open(arch, "wb") as out:
        F.fs_download(root, "bigdir", fmt, out)
    with open(arch, "rb") as fh:
        res = F.fs_upload(root, "bigdir2", "", fh)
    assert res["bytesWritten"] == BIG
    out = tmp_path / "back.bin"
    with open(out, "wb") as fh:
        assert F.fs_read(root, "bigdir2/big.bin", fh) == BIG
    assert sha(out) == sha(src)


def test_empty_and_single_file_round_trip(root, tmp_path):
    F.fs_write(root, [FileSpec("e/empty", b""), FileSpec("e/one", b"one")])
    for fmt in ("tar.gz", "zip"):
        buf = io.BytesIO()
        F.fs_download(root, "e", fmt, buf)
        buf.seek(0)
        F.fs_upload(root, "e-" + fmt, fmt, buf)
        assert open(os.path.join(ws(root), "e-" + fmt, "empty"), "rb").read() == b""
        assert open(os.path.join(ws(root), "e-" + fmt, "one"), "rb").read() == b"one"


@pytest.fixture(scope="module")
def big_tree(volume):
    t = os.path.join(volume, "tree-src")
    srcs = []
    for dirpath, _, filenames in os.walk("/usr/lib/python3.11"):
        for n in filenames:
            if n.endswith(".py"):
                with open(os.path.join(dirpath, n), "rb") as fh:
                    srcs.append(fh.read()[:20000])
            if len(srcs) >= 500:
                break
        if len(srcs) >= 500:
            break
    for i in range(NFILES):
        d = os.path.join(t, f"p{i // 400:02d}", f"m{(i // 40) % 10}")
        if i % 40 == 0:
            os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i:05d}")
        if i % 50 == 49:
            os.symlink(f"f{i - 1:05d}" if i % 100 else "/etc/passwd", p)
        else:
            with open(p, "wb") as fh:
                fh.write(srcs[i % len(srcs)] if i % 7 else b"")
            os.chmod(p, (0o644, 0o755, 0o600, 0o640, 0o700)[i % 5])
    os.chmod(os.path.join(t, "p01"), 0o750)
    yield t, tree_state(t)
    shutil.rmtree(t)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_tree_round_trip(root, tmp_path, big_tree, fmt):
    t, state = big_tree
    res = F.fs_copy_in(root, t, "tree")
    assert res["filesTransferred"] == NFILES - NFILES // 50
    arch = tmp_path / ("tree." + fmt)
    with open(arch, "wb") as out:
        F.fs_download(root, "tree", fmt, out)
    with open(arch, "rb") as fh:
        res = F.fs_upload(root, "tree2", "", fh)
    assert res["filesWritten"] == NFILES - NFILES // 50
    assert tree_state(os.path.join(ws(root), "tree2")) == state
    out = tmp_path / "out"
    F.fs_copy_out(root, "tree2", str(out))
    assert tree_state(out) == state


def test_escape_attempts_leave_host_file_untouched(root, host):
    secret = str(host / "secret")
    os.symlink(secret, os.path.join(ws(root), "s"))
    os.symlink(str(host), os.path.join(ws(root), "d"))
    attempts = [
        lambda: F.fs_read(root, "s", io.BytesIO()),
        lambda: F.fs_write(root, [FileSpec("s", b"pwned")]),
        lambda: F.fs_write(root, [FileSpec("d/secret", b"pwned")]),
        lambda: F.fs_rm(root, "d/secret"),
        lambda: F.fs_rmdir(root, "d", recursive=True),
        lambda: F.fs_list(root, "d"),
    ]
    for attempt in attempts:
        try:
            attempt()
        except (FileNotFoundInSandbox, ValidationError) as exc:
            assert str(exc).count("\n") == 0    # one clear line
    assert (host / "secret").read_text() == "host secret\n"
    assert sorted(os.listdir(host)) == ["secret"]
