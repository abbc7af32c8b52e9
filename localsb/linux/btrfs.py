"""btrfs mechanisms: subvolumes, snapshots, read-only flags and qgroup limits.

Subvolume calls go through libbtrfsutil's Python binding (`btrfsutil`, ioctls, no process
start) when it imports, else through the `btrfs` CLI. Quotas use the ioctls directly
(BTRFS_IOC_QUOTA_CTL, BTRFS_IOC_QGROUP_LIMIT): every sandbox gets a disk limit, on the path of
every create, where a `btrfs` process would cost milliseconds.
"""
from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess

from localsb.api.errors import AlreadyExists, HostError, NotFound

BTRFS_SUPER_MAGIC = 0x9123683E
SUBVOLUME_ROOT_INO = 256    # BTRFS_FIRST_FREE_OBJECTID: the root directory of every subvolume

_btrfsutil = None
_btrfsutil_error: str | None = None


def btrfsutil():
    """The btrfsutil module, or None when it cannot be imported (then the CLI is used)."""
    global _btrfsutil, _btrfsutil_error
    if _btrfsutil is None and _btrfsutil_error is None:
        if os.environ.get("LOCALSB_BTRFS_CLI") == "1":
            _btrfsutil_error = "LOCALSB_BTRFS_CLI=1"
        else:
            try:
                import btrfsutil as mod
                _btrfsutil = mod
            except ImportError as e:    # e.g. built against newer headers than the library
                _btrfsutil_error = str(e)
    return _btrfsutil


def backend() -> str:
    """'btrfsutil' or 'cli' (for doctor)."""
    return "btrfsutil" if btrfsutil() is not None else "cli"


def fs_type(path: str) -> int:
    """statfs(2) `f_type` of the filesystem holding `path`."""
    import ctypes     # only on the provisioning path: importing ctypes costs ~1-2 ms
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)      # struct statfs is 120 bytes on x86_64/aarch64
    if libc.statfs(os.fsencode(path), buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    # f_type is the first member (__fsword_t, a C long) on every 64-bit Linux ABI.
    (ftype,) = struct.unpack_from("l", buf.raw)
    return ftype & 0xFFFFFFFF


def is_btrfs(path: str) -> bool:
    """statfs(2) says `path` is on btrfs."""
    return fs_type(path) == BTRFS_SUPER_MAGIC


def available() -> tuple[bool, str]:
    """Whether this host can make a btrfs pool: the kernel knows btrfs (or can load it, which
    `/proc/filesystems` cannot tell, so the module directory is checked too) and mkfs.btrfs,
    mount and a loop-control device exist. Returns (ok, reason when not)."""
    if not shutil.which("mkfs.btrfs"):
        return False, "mkfs.btrfs not found (apt-get install btrfs-progs)"
    if not shutil.which("mount"):
        return False, "mount(8) not found"
    if not os.path.exists("/dev/loop-control"):
        return False, "no /dev/loop-control (loop devices unavailable, e.g. in a container)"
    try:
        with open("/proc/filesystems") as f:
            known = any(line.split()[-1] == "btrfs" for line in f if line.strip())
    except OSError:
        known = False
    if not known and not os.path.isdir(f"/lib/modules/{os.uname().release}/kernel/fs/btrfs"):
        return False, "the kernel has no btrfs support"
    return True, ""


def _run(args: list[str], what: str) -> str:
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise HostError(f"cannot {what}: {args[0]} not found (apt-get install btrfs-progs)") from e
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise HostError(f"cannot {what}: {' '.join(args)}: {msg[-1] if msg else 'exit ' + str(p.returncode)}")
    return p.stdout


def _raise(e: Exception, what: str, path: str):
    eno = getattr(e, "errno", None)
    if eno == errno.EEXIST:
        raise AlreadyExists(f"cannot {what}: {path} already exists") from e
    if eno == errno.ENOENT:
        raise NotFound(f"cannot {what}: {path} does not exist") from e
    detail = os.strerror(eno) if eno else str(e)
    raise HostError(f"cannot {what} {path}: {detail}") from e


def create_subvolume(path: str) -> None:
    """BTRFS_IOC_SUBVOL_CREATE (btrfsutil.create_subvolume; CLI: btrfs subvolume create)."""
    bu = btrfsutil()
    if bu is None:
        if os.path.lexists(path):
            raise AlreadyExists(f"cannot create volume: {path} already exists")
        _run(["btrfs", "subvolume", "create", path], "create subvolume")
        return
    try:
        bu.create_subvolume(path)
    except (OSError, bu.BtrfsUtilError) as e:
        _raise(e, "create subvolume", path)


def create_snapshot(src: str, dst: str, read_only: bool) -> None:
    """BTRFS_IOC_SNAP_CREATE_V2 (btrfsutil.create_snapshot; CLI: btrfs subvolume snapshot [-r])."""
    bu = btrfsutil()
    if bu is None:
        if os.path.lexists(dst):
            raise AlreadyExists(f"cannot snapshot: {dst} already exists")
        if not os.path.isdir(src):
            raise NotFound(f"cannot snapshot: {src} does not exist")
        _run(["btrfs", "subvolume", "snapshot"] + (["-r"] if read_only else []) + [src, dst],
             "snapshot")
        return
    if not os.path.isdir(src):
        raise NotFound(f"cannot snapshot: {src} does not exist")
    try:
        bu.create_snapshot(src, dst, read_only=read_only)
    except (OSError, bu.BtrfsUtilError) as e:
        _raise(e, "snapshot " + src + " to", dst)


def is_subvolume(path: str) -> bool:
    """A btrfs subvolume root: inode 256 on btrfs (what btrfsutil.is_subvolume checks too)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if st.st_ino != SUBVOLUME_ROOT_INO or not os.path.isdir(path):
        return False
    bu = btrfsutil()
    if bu is not None:
        try:
            return bool(bu.is_subvolume(path))
        except (OSError, bu.BtrfsUtilError):
            return False
    return is_btrfs(path)


def get_read_only(path: str) -> bool:
    """BTRFS_IOC_SUBVOL_GETFLAGS (CLI: btrfs property get -ts ro)."""
    bu = btrfsutil()
    if bu is None:
        out = _run(["btrfs", "property", "get", "-ts", path, "ro"], "read the ro property of")
        return out.strip().endswith("true")
    try:
        return bool(bu.get_subvolume_read_only(path))
    except (OSError, bu.BtrfsUtilError) as e:
        _raise(e, "read the read-only flag of", path)


def set_read_only(path: str, ro: bool) -> None:
    """BTRFS_IOC_SUBVOL_SETFLAGS (CLI: btrfs property set -ts <path> ro true|false)."""
    bu = btrfsutil()
    if bu is None:
        if not os.path.isdir(path):
            raise NotFound(f"cannot set read-only flag: {path} does not exist")
        _run(["btrfs", "property", "set", "-ts", path, "ro", "true" if ro else "false"],
             "set the ro property of")
        return
    try:
        bu.set_subvolume_read_only(path, ro)
    except (OSError, bu.BtrfsUtilError) as e:
        _raise(e, "set the read-only flag of", path)


def delete_subvolume(path: str) -> None:
    """BTRFS_IOC_SNAP_DESTROY, recursive (btrfsutil.delete_subvolume; CLI: btrfs subvolume delete).

    The space is freed later by the btrfs cleaner thread; the call itself returns at once.
    """
    bu = btrfsutil()
    if bu is None:
        # The CLI has no recursive delete: remove nested subvolumes deepest first.
        nested = []
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                if os.lstat(p).st_ino == SUBVOLUME_ROOT_INO:
                    nested.append(p)
        for p in reversed(nested):
            _run(["btrfs", "subvolume", "delete", p], "delete subvolume")
        _run(["btrfs", "subvolume", "delete", path], "delete subvolume")
        return
    try:
        bu.delete_subvolume(path, recursive=True)
    except (OSError, bu.BtrfsUtilError) as e:
        _raise(e, "delete subvolume", path)


def subvolume_id(path: str) -> int:
    """BTRFS_IOC_INO_LOOKUP (btrfsutil.subvolume_id; CLI: btrfs inspect-internal rootid)."""
    bu = btrfsutil()
    if bu is None:
        return int(_run(["btrfs", "inspect-internal", "rootid", path], "read the id of").strip())
    try:
        return int(bu.subvolume_id(path))
    except (OSError, bu.BtrfsUtilError) as e:
        _raise(e, "read the subvolume id of", path)


BTRFS_IOC_QUOTA_CTL = 0xC0109428          # _IOWR(0x94, 40, {u64 cmd; u64 status})
BTRFS_IOC_QGROUP_LIMIT = 0x8030942B       # _IOR(0x94, 43, {u64 qgroupid; btrfs_qgroup_limit})
BTRFS_IOC_QUOTA_RESCAN_WAIT = 0x942E      # _IO(0x94, 46)
QUOTA_CTL_ENABLE = 1
QUOTA_CTL_ENABLE_SIMPLE = 4               # simple quotas (kernel 6.7+): no backref walks
QGROUP_LIMIT_MAX_EXCL = 1 << 1


def _ioctl(path: str, req: int, arg: bytes | None = None):
    import fcntl
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, req, arg if arg is not None else 0)
    finally:
        os.close(fd)


def quota_enabled(mount_path: str) -> bool:
    """BTRFS_IOC_QGROUP_LIMIT of the pool's own subvolume with no limit flags: ENOTCONN while
    quotas are off (it changes nothing otherwise)."""
    try:
        _ioctl(mount_path, BTRFS_IOC_QGROUP_LIMIT, struct.pack("<6Q", 0, 0, 0, 0, 0, 0))
        return True
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return False
        raise


def quota_enable(mount_path: str) -> None:
    """BTRFS_IOC_QUOTA_CTL: simple quotas where the kernel has them (extents are charged to the
    subvolume that wrote them; cheap), else full qgroups, then BTRFS_IOC_QUOTA_RESCAN_WAIT so
    existing data is accounted before a limit is relied on."""
    try:
        try:
            _ioctl(mount_path, BTRFS_IOC_QUOTA_CTL, struct.pack("<2Q", QUOTA_CTL_ENABLE_SIMPLE, 0))
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            _ioctl(mount_path, BTRFS_IOC_QUOTA_CTL, struct.pack("<2Q", QUOTA_CTL_ENABLE, 0))
        try:
            _ioctl(mount_path, BTRFS_IOC_QUOTA_RESCAN_WAIT)
        except OSError:
            pass
    except OSError as e:
        raise HostError(f"cannot enable btrfs quotas on {mount_path}: {e.strerror}") from None


def qgroup_limit(path: str, limit_bytes: int | None) -> None:
    """BTRFS_IOC_QGROUP_LIMIT on the subvolume at ``path``: a limit on exclusive bytes (so data
    shared with a snapshot it came from does not count), or none."""
    flags = QGROUP_LIMIT_MAX_EXCL
    try:
        _ioctl(path, BTRFS_IOC_QGROUP_LIMIT, struct.pack("<6Q", 0, flags, 0, limit_bytes or (1 << 64) - 1, 0, 0))
    except OSError as e:
        raise HostError(f"cannot set the disk limit of {path}: {e.strerror}") from None


def mkfs(image: str) -> None:
    """mkfs.btrfs -q -f on an image file."""
    _run(["mkfs.btrfs", "-q", "-f", image], "format the pool image")
