"""Runtime images in the storage pool: read-only volumes that sandboxes snapshot.

An image is built under a temporary name (``<image>.building-<pid>``) and renamed into place once
complete and read-only, so a half-built image (an interrupted build) is never used; the next
build of the same image deletes such leftovers first. One lock file per image serialises builds
across processes: a second process that needs the same image waits and then uses it.

Images other than ``base`` hold only ``root/`` (the sandbox's /) and ``image.json`` (what was
built, its version, how long it took). Debian roots come from debootstrap; derived images
(runtimes.py ``from``) are writable btrfs snapshots of their parent plus installs, so they share
the parent's blocks. Dependency layers (``--dependency``) are the same thing one level down:
a snapshot of the runtime image plus ``apt-get install``, cached by (runtime, sorted package set)
under ``images/deps/``.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import sys
import time

from localsb.api.errors import BuildFailed, RuntimeNotFound
from localsb.linux.private import private_opener

from . import runtimes

IMAGE_VERSION = "1"  # bump when the skeleton changes: old images are rebuilt under a new name
INFO = "image.json"


def image_path(pool_root: str, name: str) -> str:
    safe = name.replace(":", "-").replace("/", "-")
    return os.path.join(pool_root, "images", f"{safe}.v{IMAGE_VERSION}")


def is_built(state_dir: str, name: str) -> bool:
    return os.path.isdir(image_path(os.path.join(state_dir, "pool"), name))


def deps_key(base: str, packages) -> str:
    """The cache key of a dependency layer: the base (runtime name or snapshot id) and the sorted
    package set."""
    text = base + "\n" + "\n".join(sorted(set(packages)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deps_path(pool_root: str, base: str, packages) -> str:
    safe = base.replace(":", "-").replace("/", "-")
    return os.path.join(pool_root, "images", "deps", f"{safe}-{deps_key(base, packages)}.v{IMAGE_VERSION}")


def image_info(path: str) -> dict:
    try:
        with open(os.path.join(path, INFO)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


# progress ----------------------------------------------------------------------------------------
def tty_progress(message: str) -> None:
    """One line per build step on stderr, only when stderr is a terminal (scripts and pipes stay
    quiet; the full log is in <state>/logs/)."""
    try:
        if sys.stderr.isatty():
            print(f"localsb: {message}", file=sys.stderr, flush=True)
    except (AttributeError, ValueError, OSError):
        pass


progress = tty_progress  # replaceable: the CLI or a server may route build progress elsewhere


# locking and leftovers ---------------------------------------------------------------------------
@contextlib.contextmanager
def _lock(path: str):
    """flock(2) on ``.locks/<image>`` beside the image: the kernel drops it when a killed builder dies."""
    locks = os.path.join(os.path.dirname(path), ".locks")
    os.makedirs(locks, exist_ok=True)
    fd = os.open(os.path.join(locks, os.path.basename(path)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _delete_volume(pool, path: str) -> None:
    from localsb.linux import rootfs
    rootfs.unmount_tree(path)
    deadline = time.monotonic() + 10.0
    while True:
        try:
            pool.delete_volume(path)
            return
        except Exception:
            # a killed build's namespaces may take a moment to go, and with them their mounts
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def delete_stale(pool, path: str) -> list[str]:
    """Delete the temporary volumes of builds of ``path`` that died (call with the image's lock
    held: then no live build owns one)."""
    gone = []
    for tmp in sorted(glob.glob(glob.escape(path) + ".building-*")):
        _delete_volume(pool, tmp)
        gone.append(tmp)
    return gone


def publish(pool, tmp: str, path: str) -> None:
    """Make a finished volume read-only and rename it into place. btrfs: read-only first, so the
    name never shows a writable image. The overlay driver's read-only flag is a marker kept by
    path (and not enforced), so there it is set after the rename."""
    if pool.name == "btrfs":
        pool.set_read_only(tmp, True)
        os.rename(tmp, path)
    else:
        os.rename(tmp, path)
        pool.set_read_only(path, True)


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
        delete_stale(pool, path)
        tmp = path + f".building-{os.getpid()}"
        pool.create_volume(tmp)
        try:
            rootfs.build_host_skeleton(os.path.join(tmp, "root"))
            os.mkdir(os.path.join(tmp, "usr.upper"))
            os.mkdir(os.path.join(tmp, "usr.work"))
            publish(pool, tmp, path)
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


# building ----------------------------------------------------------------------------------------
class _Build:
    """One image being built: its temporary volume, its log, its progress lines."""

    def __init__(self, pool, path: str, title: str, log_dir: str | None):
        self.pool, self.path, self.title = pool, path, title
        self.tmp = path + f".building-{os.getpid()}"
        self.root = os.path.join(self.tmp, "root")
        log_dir = log_dir or os.path.join(os.path.dirname(pool.root), "logs")
        os.makedirs(log_dir, exist_ok=True)
        self.log = open(os.path.join(log_dir, f"build-{os.path.basename(path)}.log"), "w",
                        opener=private_opener)
        self.t0 = time.monotonic()

    def step(self, what: str) -> None:
        self.log.write(f"\n### {what}\n")
        self.log.flush()
        progress(f"{self.title}: {what} [{time.monotonic() - self.t0:.0f}s]")

    def commit(self, info: dict) -> str:
        """Record image.json, make the volume read-only, rename it into place (atomic)."""
        usage = self.pool.usage(self.root)
        info = dict(info, builtAt=time.time(), buildSeconds=round(time.monotonic() - self.t0, 1),
                    sizeBytes=usage["bytes"], files=usage["files"], imageVersion=IMAGE_VERSION)
        with open(os.path.join(self.tmp, INFO), "w") as fh:
            json.dump(info, fh, indent=1)
        publish(self.pool, self.tmp, self.path)
        self.log.write(f"\n### done in {info['buildSeconds']} s\n")
        self.log.close()
        return self.path

    def abort(self) -> None:
        try:
            self.log.close()
        except Exception:
            pass
        try:
            _delete_volume(self.pool, self.tmp)
        except Exception:
            pass


def preflight(name: str, pool_root: str) -> None:
    """Fail at once, with one line, when an image that must be built cannot reach its registry."""
    from localsb.linux import debootstrap as D
    archive = None
    for r in runtimes.chain(name):
        if os.path.isdir(image_path(pool_root, r["name"])):
            continue
        b = r["build"]
        if b.get("suite"):
            D.require_tools("debootstrap", "unshare", "chroot")
        if b.get("suite") or b.get("apt"):
            archive = archive or D.mirrors()[0]
            suite = b.get("suite") or _suite_of(r["name"])
            D.check_reachable(f"{archive}/dists/{suite}/InRelease", f"runtime {name} (Debian mirror)")
        if b.get("npm_file"):
            D.require_tools("npm")
            D.check_reachable(D.npm_registry(), f"runtime {name} (npm registry)")


def _suite_of(name: str) -> str:
    return runtimes.chain(name)[0]["build"]["suite"]


def ensure_image(pool, name: str, *, log_dir: str | None = None) -> str:
    """The read-only image volume of runtime ``name`` (base included), built first if needed:
    its parents first, each under its own lock. Fast path (built): one stat."""
    if name == "base":
        return ensure_base(pool)
    path = image_path(pool.root, name)
    if os.path.isdir(path):
        return path
    if name not in runtimes.RECIPES:
        raise RuntimeNotFound(name)
    preflight(name, pool.root)
    return _ensure(pool, name, log_dir)


def _ensure(pool, name: str, log_dir) -> str:
    r = runtimes.RECIPES[name]
    recipe = r["build"]
    parent = _ensure(pool, recipe["from"], log_dir) if recipe.get("from") else None
    path = image_path(pool.root, name)
    if os.path.isdir(path):
        return path
    with _lock(path):
        if os.path.isdir(path):
            return path
        delete_stale(pool, path)
        b = _Build(pool, path, f"building runtime {name}", log_dir)
        try:
            info = _build(b, r, parent)
            return b.commit(info)
        except BaseException:
            b.abort()
            raise


def _build(b: _Build, r: dict, parent: str | None) -> dict:
    from localsb.linux import debootstrap as D
    recipe = r["build"]
    info = {"name": r["name"], "parent": recipe.get("from"), "packages": recipe.get("apt", [])}
    if parent is None:
        suite = recipe["suite"]
        archive, security = D.mirrors()
        b.pool.create_volume(b.tmp)
        b.step(f"debootstrap {suite} from {archive} (about a minute)")
        D.debootstrap(b.root, suite, archive, b.log, include=("ca-certificates",))
        D.write_apt_config(b.root, suite, archive, security,
                           check_valid_until=recipe.get("check_valid_until", True))
        b.step("CA certificates, user agentuity, apt lists")
        D.install_host_cas(b.root, b.log)
        D.add_user(b.root, b.log)
        D.write_identity(b.root)
        D.apt_update(b.root, b.log)
        info.update(suite=suite, mirror=archive)
    else:
        b.pool.snapshot(parent, b.tmp, read_only=False)
        if recipe.get("apt"):
            b.step("apt-get install " + " ".join(recipe["apt"]))
            D.apt_install(b.root, recipe["apt"], b.log)
    npm = recipe.get("npm_file")
    if npm:
        b.step(f"npm pack {npm['spec']}")
        info["npmTarball"] = D.npm_pack_file(npm["spec"], npm["member"], b.root + npm["dest"], b.log,
                                             workdir=os.path.dirname(b.tmp))
    for link, target in (recipe.get("links") or {}).items():
        p = b.root + link
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            os.unlink(p)
        os.symlink(target, p)
    D.clean(b.root, b.log)
    if r.get("check"):
        out = D.chroot_run(b.root, r["check"], b.log, capture=True, what=" ".join(r["check"]))
        info["version"] = out.strip().splitlines()[-1] if out.strip() else ""
        b.step(f"{' '.join(r['check'])}: {info['version']}")
    return info


def ensure_deps(pool, runtime: str, packages, *, base_volume: str | None = None, key: str | None = None,
                log_dir: str | None = None) -> str:
    """The read-only dependency layer for (runtime or ``key``, sorted ``packages``): a snapshot of the
    runtime image (or of ``base_volume``, e.g. a snapshot's volume) plus apt-get install, cached.
    An unknown package raises ValidationError naming it and leaves no volume."""
    from localsb.linux import debootstrap as D
    pkgs = sorted(set(packages))
    key = key or runtime
    path = deps_path(pool.root, key, pkgs)
    if os.path.isdir(path):
        return path
    if base_volume is None:
        base_volume = ensure_image(pool, runtime, log_dir=log_dir)
    if not os.path.isdir(os.path.join(base_volume, "root")) or os.path.isdir(os.path.join(base_volume, "usr.upper")):
        raise BuildFailed(f"Cannot install dependencies into {key}: it is not a Debian image")
    archive = D.mirrors()[0]
    with _lock(path):
        if os.path.isdir(path):
            return path
        delete_stale(pool, path)
        suite = _suite_of(runtime)
        D.check_reachable(f"{archive}/dists/{suite}/InRelease", f"dependency layer {' '.join(pkgs)} on {key}",
                          hint="Dependency layers are built once online and then reused offline")
        b = _Build(pool, path, f"installing dependencies on {runtime}", log_dir)
        try:
            pool.snapshot(base_volume, b.tmp, read_only=False)
            b.step("apt-get install " + " ".join(pkgs))
            D.apt_install(b.root, pkgs, b.log)
            D.clean(b.root, b.log)
            return b.commit({"name": runtime, "base": key, "dependencies": pkgs})
        except BaseException:
            b.abort()
            raise
