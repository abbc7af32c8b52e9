"""Storage pools and volumes against the real kernel (root): loop-mounted btrfs, subvolumes,
snapshots, quotas, close; the overlay driver and overlayfs mounts.

Each test gets its own state dir /tmp/lsbtest-<random>; the finalizer closes the pool (lazily if
a failure left it busy), checks the loop device is gone and removes the directory.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from localsb.api.errors import (AlreadyExists, HostError, LimitNotEnforceable, StateError,
                                ValidationError)
from localsb.linux import btrfs, loop, overlay, storage
from localsb.linux.cgroups.discover import read_mountinfo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mounted_at(path: str):
    real = os.path.realpath(path)
    return [m for m in read_mountinfo() if m.mountpoint == real]


def _losetup_j(image: str) -> str:
    return subprocess.run(["losetup", "-j", image], capture_output=True, text=True).stdout.strip()


def _teardown(sd: str) -> None:
    image = os.path.join(sd, storage.POOL_IMAGE)
    try:
        if os.path.exists(image):
            storage.close_pool(sd, force=True)
    finally:
        for dev in loop.devices_for(image):
            loop.detach(dev)
        # a pool left mounted (close failed) must never be rm -rf'ed through
        if not _mounted_at(os.path.join(sd, storage.POOL_DIR)):
            shutil.rmtree(sd, ignore_errors=True)


@pytest.fixture
def pool_state_dir(monkeypatch):
    monkeypatch.delenv("LOCALSB_STORAGE", raising=False)
    monkeypatch.setenv("LOCALSB_POOL_SIZE", "1Gi")
    sd = tempfile.mkdtemp(prefix="lsbtest-", dir="/tmp")
    yield sd
    _teardown(sd)


@pytest.fixture
def pool(pool_state_dir):
    return storage.open_pool(pool_state_dir)


@pytest.fixture(params=["btrfsutil", "cli"])
def api(request, monkeypatch):
    """Run a test through btrfsutil and again through the `btrfs` CLI fallback."""
    if request.param == "cli":
        monkeypatch.setattr(btrfs, "_btrfsutil", None)
        monkeypatch.setattr(btrfs, "_btrfsutil_error", "forced by test")
    elif btrfs.btrfsutil() is None:
        pytest.skip(f"btrfsutil does not import: {btrfs._btrfsutil_error}")
    return request.param


# ----- the pool -----------------------------------------------------------------------------

def test_open_pool_mounts_a_loop_btrfs_once(pool_state_dir):
    sd = pool_state_dir
    t = time.perf_counter()
    d = storage.open_pool(sd)
    first = time.perf_counter() - t
    assert d.name == "btrfs" and d.root == os.path.realpath(os.path.join(sd, "pool"))
    (m,) = _mounted_at(d.root)
    assert m.fstype == "btrfs" and m.source.startswith("/dev/loop")
    assert "noatime" in m.options
    assert loop.backing_file(m.source) == os.path.realpath(os.path.join(sd, "pool.img"))
    assert loop.autoclear(m.source), "the loop device must go away with the umount"
    # sparse: 1 GiB apparent, a few MB allocated
    st = os.stat(os.path.join(sd, "pool.img"))
    assert st.st_size == 1 << 30 and st.st_blocks * 512 < 64 << 20
    t = time.perf_counter()
    for _ in range(10):
        again = storage.open_pool(sd)
    per_call = (time.perf_counter() - t) / 10
    assert again.root == d.root and again.name == "btrfs"
    assert len(_mounted_at(d.root)) == 1
    assert storage.driver_name(sd) == "btrfs"
    info = storage.pool_info(sd)
    assert info["mounted"] and info["loop_devices"] == [m.source]
    print(f"first open {first * 1000:.1f} ms, reopen {per_call * 1e6:.0f} us")


def test_concurrent_opens_make_one_mount(pool_state_dir):
    sd = pool_state_dir
    code = "import sys; from localsb.linux import storage; print(storage.open_pool(sys.argv[1]).name)"
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", code, sd], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    assert [r[0].strip() for r in results] == ["btrfs"] * 4
    assert len(_mounted_at(os.path.join(sd, "pool"))) == 1
    assert len(loop.devices_for(os.path.join(sd, "pool.img"))) == 1


def test_close_pool_releases_mount_and_loop_and_keeps_data(pool_state_dir):
    sd = pool_state_dir
    d = storage.open_pool(sd)
    image = os.path.join(sd, "pool.img")
    d.create_volume(os.path.join(d.root, "keep"))
    with open(os.path.join(d.root, "keep", "f"), "w") as f:
        f.write("persisted")
    assert _losetup_j(image)
    storage.close_pool(sd)
    assert _mounted_at(os.path.join(sd, "pool")) == []
    assert _losetup_j(image) == ""
    assert os.path.exists(image), "close_pool must delete nothing"
    storage.close_pool(sd)      # idempotent
    d = storage.open_pool(sd)
    with open(os.path.join(d.root, "keep", "f")) as f:
        assert f.read() == "persisted"


def test_close_busy_pool_fails_clearly_unless_forced(pool_state_dir):
    sd = pool_state_dir
    d = storage.open_pool(sd)
    image = os.path.join(sd, "pool.img")
    fd = os.open(d.root, os.O_RDONLY)       # a user of the mount, like a sandbox's open file
    try:
        with pytest.raises(HostError, match="busy"):
            storage.close_pool(sd)
        assert len(_mounted_at(d.root)) == 1
        storage.close_pool(sd, force=True)
        assert _mounted_at(os.path.join(sd, "pool")) == []
    finally:
        os.close(fd)
    assert loop.wait_released(image, 5.0) == []
    assert _losetup_j(image) == ""


def test_state_dir_on_btrfs_uses_a_pool_subvolume(pool):
    nested = os.path.join(pool.root, "state-on-btrfs")
    os.mkdir(nested)
    try:
        d = storage.open_pool(nested)
        assert d.name == "btrfs" and d.image is None
        assert btrfs.is_subvolume(os.path.join(nested, "pool"))
        assert not os.path.exists(os.path.join(nested, "pool.img"))
        assert storage.open_pool(nested).root == d.root
        storage.close_pool(nested)      # nothing mounted: a no-op
        assert os.path.isdir(d.root)
    finally:
        btrfs.delete_subvolume(os.path.join(nested, "pool"))


def test_pool_size_is_validated(pool_state_dir, monkeypatch):
    monkeypatch.setenv("LOCALSB_POOL_SIZE", "10M")
    with pytest.raises(ValidationError, match="LOCALSB_POOL_SIZE"):
        storage.open_pool(pool_state_dir)
    assert not os.path.exists(os.path.join(pool_state_dir, "pool.img"))
    assert not [n for n in os.listdir(pool_state_dir) if n.startswith("pool.img")]


def test_btrfs_state_dir_refuses_forced_overlay(pool, pool_state_dir, monkeypatch):
    monkeypatch.setenv("LOCALSB_STORAGE", "overlay")
    with pytest.raises(StateError, match="btrfs"):
        storage.open_pool(pool_state_dir)


# ----- volumes ------------------------------------------------------------------------------

def test_volumes_snapshots_isolation_and_delete(pool, api):
    r = pool.root
    base = os.path.join(r, "base")
    pool.create_volume(base)
    with open(os.path.join(base, "f"), "w") as f:
        f.write("base")
    with pytest.raises(AlreadyExists):
        pool.create_volume(base)
    assert pool.is_volume(base)

    ro = os.path.join(r, "ro")
    pool.snapshot(base, ro, read_only=True)
    assert pool.is_volume(ro) and pool.is_read_only(ro)
    with pytest.raises(OSError) as e:
        open(os.path.join(ro, "f"), "w")
    assert e.value.errno == errno.EROFS

    rw = os.path.join(r, "rw")
    pool.snapshot(ro, rw, read_only=False)      # writable snapshot of a read-only snapshot
    assert not pool.is_read_only(rw)
    with open(os.path.join(rw, "f"), "w") as f:
        f.write("changed")
    with open(os.path.join(rw, "new"), "w") as f:
        f.write("x")
    for v in (base, ro):
        with open(os.path.join(v, "f")) as f:
            assert f.read() == "base"
        assert not os.path.exists(os.path.join(v, "new"))

    pool.set_read_only(base, True)
    assert pool.is_read_only(base)
    pool.set_read_only(base, False)
    assert not pool.is_read_only(base)

    # nested subvolume inside a read-only snapshot: delete still removes everything
    pool.create_volume(os.path.join(rw, "inner"))
    pool.set_read_only(rw, True)
    for v in (ro, rw, base):
        pool.delete_volume(v)
        assert not os.path.exists(v)
    pool.delete_volume(base)        # missing is fine
    with pytest.raises(ValidationError):
        pool.create_volume("/tmp/outside-the-pool")
    with pytest.raises(ValidationError):
        pool.delete_volume(os.path.join(r, "..", "pool.img"))


def test_snapshot_timing_and_usage(pool):
    base = os.path.join(pool.root, "base")
    pool.create_volume(base)
    for i in range(200):
        d = os.path.join(base, f"d{i % 10}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(b"x" * 1000)
    os.symlink("/usr", os.path.join(base, "link-not-followed"))
    pool.set_read_only(base, True)
    times = []
    for i in range(10):
        t = time.perf_counter()
        pool.snapshot(base, os.path.join(pool.root, f"s{i}"), read_only=False)
        times.append(time.perf_counter() - t)
    u = pool.usage(os.path.join(pool.root, "s3"))
    assert u == {"bytes": 200 * 1000, "files": 200}
    for i in range(10):
        pool.delete_volume(os.path.join(pool.root, f"s{i}"))
    pool.delete_volume(base)
    times.sort()
    print(f"writable snapshot median {times[5] * 1000:.2f} ms")
    assert times[5] < 0.5       # ms in practice; only a gross regression fails here


def test_quota_stops_writes(pool):
    vol = os.path.join(pool.root, "limited")
    pool.create_volume(vol)
    pool.set_quota(vol, 20 << 20)
    written = 0
    with pytest.raises(OSError) as e:
        with open(os.path.join(vol, "big"), "wb") as f:
            for _ in range(80):
                f.write(b"\1" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
                written += 1
    assert e.value.errno == errno.EDQUOT
    assert 10 <= written <= 21
    # another volume has no limit
    free = os.path.join(pool.root, "free")
    pool.create_volume(free)
    with open(os.path.join(free, "big"), "wb") as f:
        f.write(b"\1" * (40 << 20))
        os.fsync(f.fileno())
    with pytest.raises(ValidationError):
        pool.set_quota(vol, 0)
    pool.delete_volume(vol)
    pool.delete_volume(free)


# ----- overlay driver and overlayfs -----------------------------------------------------------

def test_overlay_driver_when_forced(pool_state_dir, monkeypatch):
    monkeypatch.setenv("LOCALSB_STORAGE", "overlay")
    d = storage.open_pool(pool_state_dir)
    assert d.name == "overlay" and storage.driver_name(pool_state_dir) == "overlay"
    assert _mounted_at(os.path.join(pool_state_dir, "pool")) == []
    base = os.path.join(d.root, "base")
    d.create_volume(base)
    with open(os.path.join(base, "f"), "w") as f:
        f.write("base")
    snap = os.path.join(d.root, "snap")
    d.snapshot(base, snap, read_only=True)
    assert d.is_read_only(snap) and not d.is_read_only(base)
    assert d.usage(snap) == {"bytes": 4, "files": 1}
    with pytest.raises(LimitNotEnforceable):
        d.set_quota(snap, 1 << 20)
    d.delete_volume(snap)
    assert not os.path.exists(snap) and not d.is_read_only(snap)
    monkeypatch.setenv("LOCALSB_STORAGE", "btrfs")
    with pytest.raises(StateError, match="overlay"):
        storage.open_pool(pool_state_dir)


def test_mount_overlay_writes_land_in_upper(tmp_path):
    lower, upper, work, target = (tmp_path / n for n in ("lower", "upper", "work", "target"))
    for p in (lower, upper, work, target):
        p.mkdir()
    (lower / "f").write_text("lower")
    overlay.mount_overlay([str(lower)], str(upper), str(work), str(target))
    try:
        assert (target / "f").read_text() == "lower"
        (target / "f").write_text("changed")
        (target / "new").write_text("n")
        assert (lower / "f").read_text() == "lower" and not (lower / "new").exists()
        assert (upper / "f").read_text() == "changed"
    finally:
        overlay.umount(str(target))
    assert not _mounted_at(str(target))
    overlay.umount(str(target))     # not a mount point any more: fine


def test_loop_devices_for_unknown_file_is_empty():
    assert loop.devices_for(f"/tmp/lsbtest-none-{uuid.uuid4().hex}") == []
