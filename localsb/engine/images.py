"""Runtime images in the storage pool: read-only volumes that sandboxes snapshot.

An image is built under a temporary name and renamed into place once complete, so a half-built
image (an interrupted build) is never used.
"""
from __future__ import annotations

import fcntl
import os

IMAGE_VERSION = "1"  # bump when the skeleton changes: old images are rebuilt under a new name


def image_path(pool_root: str, name: str) -> str:
    safe = name.replace(":", "-").replace("/", "-")
    return os.path.join(pool_root, "images", f"{safe}.v{IMAGE_VERSION}")


def is_built(state_dir: str, name: str) -> bool:
    return os.path.isdir(image_path(os.path.join(state_dir, "pool"), name))


def ensure_base(pool) -> str:
    """Return the base image's volume, building it once (a few ms: a skeleton and /etc copy)."""
    from localsb.linux import rootfs
    path = image_path(pool.root, "base")
    if os.path.isdir(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = os.open(os.path.join(pool.root, "images", ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(path):
            return path
        tmp = path + f".building-{os.getpid()}"
        if os.path.exists(tmp):
            pool.delete_volume(tmp)
        pool.create_volume(tmp)
        try:
            rootfs.build_host_skeleton(os.path.join(tmp, "root"))
            os.mkdir(os.path.join(tmp, "usr.upper"))
            os.mkdir(os.path.join(tmp, "usr.work"))
            pool.set_read_only(tmp, True)
            os.rename(tmp, path)
        except BaseException:
            try:
                pool.set_read_only(tmp, False)
            except Exception:
                pass
            pool.delete_volume(tmp)
            raise
        return path
    finally:
        os.close(lock)
