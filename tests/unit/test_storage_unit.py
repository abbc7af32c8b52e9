"""Storage pieces that need no root: the overlay (plain directory) driver, usage walks, path
containment, pool settings, loop-device lookup in a fake sysfs, statfs."""
from __future__ import annotations

import os

import pytest

from localsb.api.errors import (AlreadyExists, LimitNotEnforceable, NotFound, StateError,
                                ValidationError)
from localsb.linux import btrfs, loop, storage


@pytest.fixture
def overlay_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSB_STORAGE", "overlay")
    return storage.open_pool(str(tmp_path / "state"))


def test_forced_overlay_pool_is_provisioned_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSB_STORAGE", "overlay")
    sd = str(tmp_path / "state")
    d = storage.open_pool(sd)
    assert d.name == "overlay" and d.root == os.path.realpath(os.path.join(sd, "pool"))
    assert "LOCALSB_STORAGE=overlay" in d.info()["reason"]
    assert storage.driver_name(sd) == "overlay"
    # once provisioned, the state dir keeps its driver even without the variable
    monkeypatch.delenv("LOCALSB_STORAGE")
    assert storage.open_pool(sd).name == "overlay"
    monkeypatch.setenv("LOCALSB_STORAGE", "btrfs")
    with pytest.raises(StateError, match="overlay"):
        storage.open_pool(sd)
    storage.close_pool(sd)      # nothing mounted: a no-op that removes nothing
    assert os.path.isdir(d.root)


def test_invalid_storage_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSB_STORAGE", "zfs")
    with pytest.raises(ValidationError, match="LOCALSB_STORAGE"):
        storage.open_pool(str(tmp_path))


def test_overlay_volumes_snapshot_readonly_delete(overlay_pool):
    d = overlay_pool
    base = os.path.join(d.root, "base")
    d.create_volume(base)
    with pytest.raises(AlreadyExists):
        d.create_volume(base)
    os.makedirs(os.path.join(base, "etc"))
    with open(os.path.join(base, "etc", "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n")
    os.symlink("etc/hosts", os.path.join(base, "link"))
    snap = os.path.join(d.root, "snap")
    d.snapshot(base, snap, read_only=True)
    assert d.is_volume(snap) and d.is_read_only(snap) and not d.is_read_only(base)
    assert os.readlink(os.path.join(snap, "link")) == "etc/hosts"
    rw = os.path.join(d.root, "rw")
    d.snapshot(snap, rw, read_only=False)
    with open(os.path.join(rw, "etc", "hosts"), "w") as f:
        f.write("changed")
    with open(os.path.join(base, "etc", "hosts")) as f:
        assert f.read() == "127.0.0.1 localhost\n"
    with pytest.raises(AlreadyExists):
        d.snapshot(base, rw, read_only=False)
    with pytest.raises(NotFound):
        d.snapshot(os.path.join(d.root, "missing"), os.path.join(d.root, "x"), read_only=False)
    assert not os.path.exists(os.path.join(d.root, "x"))
    d.set_read_only(snap, False)
    assert not d.is_read_only(snap)
    d.set_read_only(snap, True)
    d.delete_volume(snap)
    assert not os.path.exists(snap) and not d.is_read_only(snap)
    d.delete_volume(snap)       # missing is fine
    with pytest.raises(LimitNotEnforceable, match="quota|disk"):
        d.set_quota(rw, 1 << 30)


def test_nested_volume_read_only_markers_do_not_collide(overlay_pool):
    d = overlay_pool
    os.makedirs(os.path.join(d.root, "a"))
    d.create_volume(os.path.join(d.root, "a", "b"))
    d.create_volume(os.path.join(d.root, "a%2Fb"))
    d.set_read_only(os.path.join(d.root, "a", "b"), True)
    assert not d.is_read_only(os.path.join(d.root, "a%2Fb"))


def test_paths_outside_the_pool_are_refused(overlay_pool, tmp_path):
    d = overlay_pool
    for bad in (str(tmp_path / "elsewhere"), d.root, os.path.join(d.root, "..", "pool.lock"),
                os.path.join(d.root, "x", "..", "..", "y")):
        with pytest.raises(ValidationError, match="not inside the storage pool"):
            d.create_volume(bad)
    os.symlink(str(tmp_path), os.path.join(d.root, "escape"))
    with pytest.raises(ValidationError):
        d.create_volume(os.path.join(d.root, "escape", "v"))


def test_usage_counts_regular_files_without_following_symlinks(tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "f1").write_bytes(b"x" * 10)
    (root / "a" / "f2").write_bytes(b"y" * 20)
    (root / "a" / "b" / "f3").write_bytes(b"")
    os.symlink("/usr", root / "to-usr")
    os.symlink("f1", root / "to-f1")
    os.mkfifo(root / "fifo")
    assert storage.StorageDriver(str(tmp_path)).usage(str(root)) == {"bytes": 30, "files": 3}
    assert storage.StorageDriver(str(tmp_path)).usage(str(tmp_path / "missing")) == {"bytes": 0, "files": 0}


def test_pool_size_setting(monkeypatch):
    monkeypatch.delenv("LOCALSB_POOL_SIZE", raising=False)
    assert storage._pool_size() == 64 * 10**9
    monkeypatch.setenv("LOCALSB_POOL_SIZE", "2Gi")
    assert storage._pool_size() == 2 << 30
    for bad in ("lots", "100M", "0"):
        monkeypatch.setenv("LOCALSB_POOL_SIZE", bad)
        with pytest.raises(ValidationError, match="LOCALSB_POOL_SIZE"):
            storage._pool_size()


def test_driver_name_of_an_empty_state_dir(tmp_path):
    assert storage.driver_name(str(tmp_path)) in (None, "btrfs")     # btrfs only if /tmp is btrfs
    assert storage.driver_name(str(tmp_path / "missing")) is None
    assert storage.pool_info(str(tmp_path / "missing"))["driver"] is None


def test_statfs_type():
    assert btrfs.fs_type("/proc") == 0x9FA0          # PROC_SUPER_MAGIC
    assert not btrfs.is_btrfs("/proc")
    with pytest.raises(OSError):
        btrfs.fs_type("/nonexistent/path")


def test_loop_lookup_in_a_fake_sysfs(tmp_path, monkeypatch):
    sysb = tmp_path / "block"
    for name, backing, ac in (("loop0", "/var/img/a.img", "1"), ("loop3", "/var/img/b.img (deleted)", "0"),
                              ("sda", None, None), ("loop5", None, None)):
        (sysb / name).mkdir(parents=True)
        if backing:
            (sysb / name / "loop").mkdir()
            (sysb / name / "loop" / "backing_file").write_text(backing + "\n")
            (sysb / name / "loop" / "autoclear").write_text(ac + "\n")
    monkeypatch.setattr(loop, "_SYS_BLOCK", str(sysb))
    assert loop.devices_for("/var/img/a.img") == ["/dev/loop0"]
    assert loop.devices_for("/var/img/b.img") == ["/dev/loop3"]
    assert loop.devices_for("/var/img/c.img") == []
    assert loop.backing_file("/dev/loop0") == "/var/img/a.img"
    assert loop.backing_file("/dev/loop5") is None
    assert loop.autoclear("/dev/loop0") and not loop.autoclear("/dev/loop3")
