"""Storage drivers: a pool directory in which 'volumes' (btrfs subvolumes, or plain directories with
the overlay driver) are created, snapshotted read-only or writable, and deleted.

Pool provisioning (`open_pool`):
- state dir on btrfs: `<state_dir>/pool` is a subvolume of that filesystem (bind-mounted onto
  itself when the filesystem is not already mounted nosuid,nodev);
- else, btrfs available: a sparse image `<state_dir>/pool.img` (0600), mkfs.btrfs'ed once and
  mounted with `mount -o loop,noatime,nosuid,nodev` (autoclear loop device: the kernel frees it
  on umount) at `<state_dir>/pool`;
- else, or LOCALSB_STORAGE=overlay: plain directories under `<state_dir>/pool`, marked by the
  file `<state_dir>/pool.overlay` (which holds the reason).

A state dir keeps the driver it was provisioned with: switching would hide or mix volumes.

The state dir is 0700 (localsb.linux.private) and a btrfs pool is always mounted nosuid,nodev:
the pool holds whatever sandboxes wrote, setuid-root binaries and device nodes included, and
nothing there may ever run with privilege or open a device on the host. A pool that an older
version mounted without them is remounted with them when opened.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import time

from localsb.api.errors import (AlreadyExists, HostError, LimitNotEnforceable, NotFound, StateError,
                                ValidationError)

from . import btrfs, loop, overlay
from .private import private_dir, private_opener, make_private

POOL_DIR = "pool"
POOL_IMAGE = "pool.img"
POOL_LOCK = "pool.lock"
OVERLAY_MARK = "pool.overlay"
DEFAULT_POOL_SIZE = "64G"
MIN_POOL_BYTES = 256 * 1024 * 1024      # mkfs.btrfs needs ~114 MiB; less is useless anyway
RO_MARKS = ".localsb-ro"                # overlay driver: <root>/.localsb-ro/<encoded volume path>
MOUNT_OPTIONS = "loop,noatime,nosuid,nodev"
_ST_HARDENED = os.ST_NOSUID | os.ST_NODEV


class StorageDriver:
    name = "abstract"       # 'btrfs' | 'overlay'
    root: str               # the pool directory (all volume paths are below it)

    def __init__(self, root: str):
        self.root = os.path.realpath(root)

    def _inside(self, path: str, what: str = "volume") -> str:
        """The path, after checking it lies strictly below the pool (nothing else is ours)."""
        real = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                            os.path.basename(os.path.abspath(path)))
        if not real.startswith(self.root + os.sep) or real == self.root:
            raise ValidationError(f"{what} path {path} is not inside the storage pool {self.root}")
        return real

    def create_volume(self, path: str) -> None: ...

    def snapshot(self, src: str, dst: str, read_only: bool) -> None:
        """btrfs: create_snapshot (ms). overlay driver: copy (reflink where possible)."""

    def delete_volume(self, path: str) -> None:
        """Delete a volume; idempotent (missing is fine); clears read-only first if needed."""

    def set_read_only(self, path: str, ro: bool) -> None: ...

    def is_read_only(self, path: str) -> bool: ...

    def set_quota(self, path: str, limit_bytes: int) -> None:
        """btrfs: enable quotas once, `btrfs qgroup limit -e` on the volume's qgroup.
        raise LimitNotEnforceable where impossible."""

    def usage(self, path: str) -> dict:
        """{'bytes': int, 'files': int} of the tree under path (walk; for snapshot sizeBytes/fileCount).

        The tree may be a live sandbox's: each directory is opened below a descriptor of ``path``
        with openat2(RESOLVE_BENEATH|NO_SYMLINKS|NO_XDEV), so a directory swapped for a symlink
        while we walk is skipped, never followed onto the host, and other mounts (a live
        sandbox's /usr overlay) are not entered; counts regular files and sums their st_size."""
        from .rootfs_access import open_beneath
        total = 0
        count = 0
        try:
            top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return {"bytes": 0, "files": 0}
        try:
            stack = [""]
            while stack:
                rel = stack.pop()
                try:
                    fd = os.dup(top) if not rel else open_beneath(top, rel, os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    continue     # gone, swapped for a link, or another mount
                try:
                    with os.scandir(fd) as it:
                        for e in it:
                            try:
                                if e.is_dir(follow_symlinks=False):
                                    stack.append(f"{rel}/{e.name}" if rel else e.name)
                                elif e.is_file(follow_symlinks=False):
                                    total += e.stat(follow_symlinks=False).st_size
                                    count += 1
                            except FileNotFoundError:
                                continue
                finally:
                    os.close(fd)
        finally:
            os.close(top)
        return {"bytes": total, "files": count}

    def is_volume(self, path: str) -> bool: ...

    def info(self) -> dict:
        return {"driver": self.name, "root": self.root}


class BtrfsDriver(StorageDriver):
    """Volumes are btrfs subvolumes; snapshots are copy-on-write (a few ms, O(1) in size)."""
    name = "btrfs"

    def __init__(self, root: str, image: str | None = None):
        super().__init__(root)
        self.image = image
        self._quota_on: bool | None = None

    def create_volume(self, path: str) -> None:
        """BTRFS_IOC_SUBVOL_CREATE via btrfs.create_subvolume."""
        btrfs.create_subvolume(self._inside(path))

    def snapshot(self, src: str, dst: str, read_only: bool) -> None:
        """BTRFS_IOC_SNAP_CREATE_V2 via btrfs.create_snapshot; a writable snapshot of a read-only
        one is independent of it (copy-on-write)."""
        btrfs.create_snapshot(self._inside(src, "snapshot source"), self._inside(dst), read_only)

    def delete_volume(self, path: str) -> None:
        """BTRFS_IOC_SNAP_DESTROY (recursive); a plain directory is removed as a tree."""
        p = self._inside(path)
        if not os.path.lexists(p):
            return
        if not btrfs.is_subvolume(p):
            overlay.remove_tree(p)
            return
        # Nested subvolumes cannot be removed from inside a read-only parent.
        if btrfs.get_read_only(p):
            btrfs.set_read_only(p, False)
        try:
            btrfs.delete_subvolume(p)
        except NotFound:
            pass

    def set_read_only(self, path: str, ro: bool) -> None:
        """BTRFS_IOC_SUBVOL_SETFLAGS via btrfs.set_read_only."""
        btrfs.set_read_only(self._inside(path), ro)

    def is_read_only(self, path: str) -> bool:
        """BTRFS_IOC_SUBVOL_GETFLAGS via btrfs.get_read_only."""
        return btrfs.get_read_only(self._inside(path))

    def quota_enabled(self) -> bool:
        if self._quota_on is None:
            self._quota_on = btrfs.quota_enabled(self.root)
        return self._quota_on

    def enable_quotas(self) -> None:
        """`btrfs quota enable` (+ rescan) once for the pool. Call before creating the volumes
        that will get a disk limit: qgroup accounting of data written before is only right
        after the rescan this waits for."""
        if not self.quota_enabled():
            btrfs.quota_enable(self.root)
            self._quota_on = True

    def set_quota(self, path: str, limit_bytes: int) -> None:
        """`btrfs qgroup limit -e <bytes> <volume>` after enabling quotas once; exclusive bytes,
        so what the volume shares with its base image does not count."""
        p = self._inside(path)
        if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes <= 0:
            raise ValidationError(f"invalid disk limit {limit_bytes!r}: must be a positive number of bytes")
        if not btrfs.is_subvolume(p):
            raise LimitNotEnforceable(f"cannot limit the disk use of {path}: it is not a btrfs subvolume")
        self.enable_quotas()
        btrfs.qgroup_limit(p, limit_bytes)

    def is_volume(self, path: str) -> bool:
        return btrfs.is_subvolume(self._inside(path))

    def info(self) -> dict:
        d = super().info()
        d["api"] = btrfs.backend()
        d["image"] = self.image
        if self.image:
            try:
                st = os.stat(self.image)
                d["image_size"] = st.st_size
                d["image_allocated"] = st.st_blocks * 512
            except OSError:
                pass
            d["loop_devices"] = loop.devices_for(self.image)
        return d


def _encode(rel: str) -> str:
    return rel.replace("%", "%25").replace("/", "%2F")


class OverlayDriver(StorageDriver):
    """Volumes are plain directories. A snapshot is a copy (reflinked where the filesystem can:
    O(files), ~4 s per 650 MB of rootfs on ext4); read-only is a marker, not enforced; no quota."""
    name = "overlay"

    def __init__(self, root: str, reason: str = ""):
        super().__init__(root)
        self.reason = reason

    def _mark(self, p: str) -> str:
        return os.path.join(self.root, RO_MARKS, _encode(os.path.relpath(p, self.root)))

    def create_volume(self, path: str) -> None:
        """mkdir(2)."""
        p = self._inside(path)
        try:
            os.mkdir(p, 0o755)
        except FileExistsError:
            raise AlreadyExists(f"cannot create volume: {path} already exists") from None
        except FileNotFoundError:
            raise NotFound(f"cannot create volume {path}: its parent directory does not exist") from None
        except OSError as e:
            raise HostError(f"cannot create volume {path}: {os.strerror(e.errno)}") from e

    def snapshot(self, src: str, dst: str, read_only: bool) -> None:
        """`cp -a --reflink=auto`; read_only is recorded as a marker file."""
        s, d = self._inside(src, "snapshot source"), self._inside(dst)
        overlay.copy_tree(s, d)
        if read_only:
            self.set_read_only(d, True)

    def delete_volume(self, path: str) -> None:
        """Remove the tree and its read-only marker; missing is fine."""
        p = self._inside(path)
        overlay.remove_tree(p)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._mark(p))

    def set_read_only(self, path: str, ro: bool) -> None:
        p = self._inside(path)
        if not os.path.isdir(p):
            raise NotFound(f"cannot set read-only flag: {path} does not exist")
        mark = self._mark(p)
        if ro:
            os.makedirs(os.path.dirname(mark), exist_ok=True)
            with open(mark, "w"):
                pass
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(mark)

    def is_read_only(self, path: str) -> bool:
        return os.path.exists(self._mark(self._inside(path)))

    def set_quota(self, path: str, limit_bytes: int) -> None:
        raise LimitNotEnforceable(
            f"cannot limit the disk use of {path}: the overlay storage driver has no quotas "
            "(btrfs storage is needed for --disk)")

    def is_volume(self, path: str) -> bool:
        p = self._inside(path)
        return os.path.isdir(p) and not os.path.islink(p)

    def info(self) -> dict:
        d = super().info()
        d["reason"] = self.reason
        d["cost"] = "snapshots copy every file (cp -a --reflink=auto); no disk quotas; read-only not enforced"
        return d


# ----- pool provisioning -----------------------------------------------------------------------

def _paths(state_dir: str) -> tuple[str, str, str, str]:
    sd = os.path.abspath(state_dir)
    return (sd, os.path.join(sd, POOL_DIR), os.path.join(sd, POOL_IMAGE),
            os.path.join(sd, OVERLAY_MARK))


def _btrfs_pool_ready(state_dir: str, pool: str) -> bool:
    """The cheap check, run on every CLI call: `pool` is a btrfs subvolume root (inode 256) on a
    different device than the state dir, i.e. a mounted pool image or a pool subvolume."""
    try:
        st = os.stat(pool)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return st.st_ino == btrfs.SUBVOLUME_ROOT_INO and st.st_dev != os.stat(state_dir).st_dev


@contextlib.contextmanager
def _locked(state_dir: str):
    """flock(2) on <state_dir>/pool.lock: one provisioner at a time per state dir."""
    fd = os.open(os.path.join(state_dir, POOL_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mode() -> str:
    env = os.environ.get("LOCALSB_STORAGE", "").strip().lower()
    if env not in ("", "btrfs", "overlay"):
        raise ValidationError(f"invalid LOCALSB_STORAGE={env!r}: use 'btrfs' or 'overlay'")
    return env


def open_pool(state_dir: str) -> StorageDriver:
    """Provision (once) and return the storage pool for state_dir.

    If state_dir is on btrfs, use <state_dir>/pool directly. Otherwise a sparse image
    <state_dir>/pool.img (size from LOCALSB_POOL_SIZE, default 64G sparse) is mkfs.btrfs'ed,
    loop-mounted (autoclear) at <state_dir>/pool. Idempotent and safe against concurrent callers
    (flock on <state_dir>/pool.lock). Falls back to the overlay driver when btrfs cannot be had
    (LOCALSB_STORAGE=overlay forces it).
    """
    mode = _mode()
    sd, pool, image, mark = _paths(state_dir)
    if mode != "overlay" and _btrfs_pool_ready(sd, pool) and _hardened(pool):
        return BtrfsDriver(pool, image if os.path.exists(image) else None)
    if mode != "btrfs" and os.path.exists(mark):
        return OverlayDriver(pool, _read_reason(mark))
    private_dir(sd)
    with _locked(sd):
        return _provision(sd, pool, image, mark, mode)


def _read_reason(mark: str) -> str:
    try:
        with open(mark) as f:
            return f.read().strip()
    except OSError:
        return ""


def _provision(sd: str, pool: str, image: str, mark: str, mode: str) -> StorageDriver:
    has_image = os.path.exists(image)
    if _btrfs_pool_ready(sd, pool):      # made by a concurrent caller, or by an older version
        if mode == "overlay":
            raise StateError(f"state directory {sd} uses btrfs storage; unset LOCALSB_STORAGE=overlay "
                             "or use another LOCALSB_HOME")
        _harden(pool, image if has_image else None)
        return BtrfsDriver(pool, image if has_image else None)
    if os.path.exists(mark):
        if mode == "btrfs":
            raise StateError(f"state directory {sd} uses overlay storage ({_read_reason(mark)}); "
                             "unset LOCALSB_STORAGE=btrfs or use another LOCALSB_HOME")
        return OverlayDriver(pool, _read_reason(mark))
    if mode == "overlay":
        if has_image:
            raise StateError(f"state directory {sd} uses btrfs storage ({image}); unset "
                             "LOCALSB_STORAGE=overlay or use another LOCALSB_HOME")
        return _provision_overlay(pool, mark, "LOCALSB_STORAGE=overlay")
    if btrfs.is_btrfs(sd):
        if not os.path.lexists(pool):
            btrfs.create_subvolume(pool)
        _harden(pool, None)
        return BtrfsDriver(pool)
    ok, reason = btrfs.available()
    if not ok:
        if mode == "btrfs" or has_image:
            raise HostError(f"btrfs storage is unavailable: {reason}")
        return _provision_overlay(pool, mark, reason)
    _mount_image(sd, pool, image)
    return BtrfsDriver(pool, image)


def _provision_overlay(pool: str, mark: str, reason: str) -> OverlayDriver:
    os.makedirs(pool, exist_ok=True)
    tmp = f"{mark}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(reason + "\n")
    os.rename(tmp, mark)
    return OverlayDriver(pool, reason)


def _pool_size() -> int:
    from localsb.api.units import parse_size
    text = os.environ.get("LOCALSB_POOL_SIZE", "").strip() or DEFAULT_POOL_SIZE
    size = parse_size(text, "LOCALSB_POOL_SIZE")
    if size < MIN_POOL_BYTES:
        raise ValidationError(f"invalid LOCALSB_POOL_SIZE '{text}': the pool needs at least 256Mi")
    return size


def _hardened(pool: str) -> bool:
    """statvfs(2): whether the mount holding ``pool`` has nosuid and nodev (one cheap call, made
    on every open)."""
    return os.statvfs(pool).f_flag & _ST_HARDENED == _ST_HARDENED


def _harden(pool: str, image: str | None) -> None:
    """Make the mount holding the pool nosuid,nodev: `mount -o remount,bind,nosuid,nodev` of the
    pool's own mount (MS_REMOUNT|MS_BIND: that mount's flags only; the filesystem and the other
    mounts of it are untouched), after bind-mounting a pool subvolume onto itself when the pool
    is no mount of its own (a state dir on a btrfs filesystem mounted without them). Keeps the
    mount's other flags (ro, noexec; atime flags are kept by the kernel on a remount)."""
    if image is not None:
        make_private(image)
    if _hardened(pool):
        return
    from . import syscalls as sc
    real = os.path.realpath(pool)
    try:
        if _mount_entry(real) is None:
            sc.mount(real, real, None, sc.MS_BIND)
        keep = os.statvfs(real).f_flag & (os.ST_RDONLY | os.ST_NOEXEC)
        sc.mount(None, real, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_NOSUID | sc.MS_NODEV | keep)
    except OSError as e:
        raise HostError(f"cannot mount the storage pool {pool} nosuid,nodev: {e.strerror}") from e
    if not _hardened(pool):
        raise HostError(f"the storage pool {pool} is still mounted without nosuid,nodev")


def _mount_image(sd: str, pool: str, image: str) -> None:
    """Make (once) a sparse btrfs image (0600) and `mount -t btrfs -o loop,noatime,nosuid,nodev`
    it at pool.

    A new image is built under a temporary name and renamed, so pool.img always holds a
    filesystem. Whatever this call made is removed again if the mount fails.
    """
    made_image = made_pool = False
    make_private(image)     # made by an older version with the umask's mode
    if not os.path.exists(image):
        size = _pool_size()
        tmp = f"{image}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb", opener=private_opener) as f:   # every sandbox's files: 0600
                f.truncate(size)        # sparse: a few MB on disk after mkfs
            btrfs.mkfs(tmp)
            os.rename(tmp, image)
            made_image = True
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    try:
        try:
            os.mkdir(pool, 0o755)
            made_pool = True
        except FileExistsError:
            if os.stat(pool).st_dev != os.stat(sd).st_dev:
                raise HostError(f"{pool} is already a mount point of something other than the "
                                f"pool image {image}; unmount it first") from None
            if os.listdir(pool):
                raise HostError(f"{pool} is not empty; refusing to mount the pool image over it") from None
        p = subprocess.run(["mount", "-t", "btrfs", "-o", MOUNT_OPTIONS, image, pool],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if p.returncode != 0:
            raise HostError(f"cannot mount the storage pool {image} at {pool}: "
                            f"{(p.stderr or p.stdout).strip() or 'mount exit ' + str(p.returncode)}")
        if not _btrfs_pool_ready(sd, pool):
            raise HostError(f"mounted {image} at {pool} but it does not show as a btrfs pool")
    except BaseException:
        if made_pool:
            with contextlib.suppress(OSError):
                os.rmdir(pool)
        if made_image:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image)
        raise


def _mount_entry(mountpoint: str, with_parent: bool = False):
    from .cgroups.discover import read_mountinfo
    found = None
    entries = read_mountinfo()
    for m in entries:
        if m.mountpoint == mountpoint:
            found = m       # the last one is the visible one
    if not with_parent:
        return found
    parent = None if found is None else next(
        (m for m in entries if m.mount_id == found.parent_id), None)
    return found, parent


def _unbind(pool: str, force: bool) -> None:
    """umount2(2) the bind mount of a pool subvolume onto itself (see _harden): a mount at the
    pool whose parent mount is the same filesystem. Anything else mounted there is left alone."""
    real = os.path.realpath(pool)
    entry, parent = _mount_entry(real, with_parent=True)
    if entry is None or parent is None or entry.fstype != "btrfs" or entry.dev != parent.dev:
        return
    _umount_pool(pool, real, force)


def _umount_pool(pool: str, real: str, force: bool) -> bool:
    """umount2(2) the pool; a busy one is an error unless ``force`` (then MNT_DETACH: it goes with
    its last user). True when it was detached lazily."""
    try:
        overlay.umount(real)
        return False
    except HostError as e:
        if e.details.get("errno") != errno.EBUSY:
            raise
        if not force:
            raise HostError(f"the storage pool {pool} is busy (a sandbox or a shell still "
                            "uses it); stop its sandboxes first, or close it with force") from None
        overlay.umount(real, lazy=True)
        return True


def close_pool(state_dir: str, force: bool = False) -> None:
    """Unmount the pool (and so free its loop device); only what this state_dir made.

    umount2(2) of <state_dir>/pool when it is the loop mount of <state_dir>/pool.img; then wait
    for the autoclear loop device to go and detach it (LOOP_CLR_FD) if it stays. A pool
    subvolume bound onto itself (a btrfs state dir, see _harden) is unmounted. A busy pool
    is an error unless force=True, which detaches lazily (MNT_DETACH): the mount and its loop
    device then go when their last user does. Deletes nothing; idempotent.
    """
    sd, pool, image, _ = _paths(state_dir)
    if not os.path.exists(image):
        # overlay pool (nothing mounted) or a pool subvolume on a btrfs state dir (maybe bound)
        if os.path.ismount(pool):
            with _locked(sd):
                _unbind(pool, force)
        return
    private_dir(sd)
    with _locked(sd):
        real_pool = os.path.realpath(pool)
        entry = _mount_entry(real_pool)
        if entry is not None:
            backing = loop.backing_file(entry.source) if entry.source.startswith("/dev/loop") else None
            if backing is None or backing.removesuffix(" (deleted)") != os.path.realpath(image):
                raise HostError(f"{pool} is mounted from {entry.source}, not from the pool image "
                                f"{image}; leaving it")
            if _umount_pool(pool, real_pool, force):
                return      # the loop device is autoclear: it goes with the last user
        left = loop.wait_released(image, 2.0)
        for dev in left:
            loop.detach(dev)
        left = loop.wait_released(image, 1.0)
        if left:
            raise HostError(f"loop device(s) {', '.join(left)} still hold {image} after unmount")


def driver_name(state_dir: str) -> str | None:
    """'btrfs', 'overlay', or None when the state dir has no pool yet (for doctor; makes nothing)."""
    sd, pool, image, mark = _paths(state_dir)
    if _btrfs_pool_ready(sd, pool) or os.path.exists(image):
        return "btrfs"
    if os.path.exists(mark):
        return "overlay"
    try:
        if os.path.isdir(sd) and btrfs.is_btrfs(sd):
            return "btrfs"
    except OSError:
        pass
    return None


def pool_info(state_dir: str) -> dict:
    """What doctor shows: driver, pool path, mounted, image sizes, loop devices, the btrfs API in
    use, or why the overlay driver is used and what it costs. Makes nothing."""
    sd, pool, image, mark = _paths(state_dir)
    name = driver_name(sd)
    d: dict = {"driver": name, "root": pool, "mounted": _btrfs_pool_ready(sd, pool)}
    if name == "btrfs":
        d.update(BtrfsDriver(pool, image if os.path.exists(image) else None).info())
        d["mounted"] = _btrfs_pool_ready(sd, pool)
    elif name == "overlay":
        d.update(OverlayDriver(pool, _read_reason(mark)).info())
    else:
        ok, reason = btrfs.available()
        d["btrfs_available"] = ok
        if not ok:
            d["reason"] = reason
    return d


def wait_deleted(driver: StorageDriver, timeout: float = 30.0) -> None:
    """btrfs: wait for the cleaner to free deleted subvolumes (btrfsutil.wait_sync / `btrfs
    subvolume sync`); a no-op for the overlay driver. For tests and `doctor`, never the hot path."""
    if driver.name != "btrfs":
        return
    bu = btrfs.btrfsutil()
    deadline = time.monotonic() + timeout
    if bu is not None:
        while bu.deleted_subvolumes(driver.root) and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    subprocess.run(["btrfs", "subvolume", "sync", driver.root], stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=timeout)
