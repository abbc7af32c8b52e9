"""User namespaces and host id ranges: a sandbox's root is an unprivileged host id range of its own.

Every sandbox runs in a user namespace that maps its ids 0..65535 onto a range of 65,536 host ids
(``0 <base> 65536``); host uid 0 is mapped into no sandbox. Ranges start at 0x70000000, above host
users, the usual /etc/subuid ranges and systemd's container range (0x00080000-0x6FFFFFFF), end
below systemd's foreign range (0x7FFE0000) and 2^31, skip any range /etc/subuid, /etc/subgid or
/etc/passwd uses, and are aligned on 65,536, so ``base + id % 65536`` maps a file's owner from any
range (or from canonical, unshifted ids) to another (``shift_tree``).

A range is reserved machine-wide, across state directories, by flock(2) on
``/run/localsb/userns/<slot>.lock`` (LOCK_EX, non-blocking), held through an open descriptor by the
processes that keep the sandbox (its creator, supervisor and keeper): the kernel drops the lock
when the last of them is gone, so a crash never leaks a range and no two live sandboxes share one.

Read-only lower layers (runtime images, the host's /usr) stay owned by host root on disk and
reach the sandbox through idmapped mounts (open_tree(2) + mount_setattr(2) MOUNT_ATTR_IDMAP +
move_mount(2)); what the sandbox writes lands in its own layer, owned by its range.
"""
from __future__ import annotations

import errno
import fcntl
import os
import random
import stat as st

from . import syscalls as sc

RANGE_SIZE = 65536
RANGE_START = 0x70000000       # above systemd-nspawn's --private-users=pick range
RANGE_SLOTS = 4094             # up to 0x7FFE0000 (systemd's foreign range): never near 2^31
LOCK_DIR = "/run/localsb/userns"
NO_USERNS_ENV = "LOCALSB_INSECURE_NO_USERNS"   # explicit opt-out, for hosts without user namespaces


class IdRange:
    """A reserved host id range; ``fd`` holds the reservation (keep it open while the sandbox lives)."""

    def __init__(self, slot: int, fd: int | None):
        self.slot = slot
        self.fd = fd

    @property
    def base(self) -> int:
        return RANGE_START + self.slot * RANGE_SIZE if self.slot >= 0 else 0

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def slot_of(base: int) -> int:
    if base < RANGE_START or (base - RANGE_START) % RANGE_SIZE or base >= RANGE_START + RANGE_SLOTS * RANGE_SIZE:
        raise ValueError(f"{base} is not the base of a localsb id range")
    return (base - RANGE_START) // RANGE_SIZE


def _try_lock(slot: int) -> int | None:
    fd = os.open(os.path.join(LOCK_DIR, f"{slot}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _lock_dir() -> None:
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(LOCK_DIR), 0o700)


def _host_ranges() -> list:
    """(first, count) of every host id range in use outside localsb: /etc/subuid and /etc/subgid
    lines, and /etc/passwd and /etc/group ids."""
    found = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as fh:
                for line in fh:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        found.append((int(parts[1]), int(parts[2])))
        except OSError:
            pass
    for path in ("/etc/passwd", "/etc/group"):
        try:
            with open(path) as fh:
                for line in fh:
                    parts = line.split(":")
                    if len(parts) > 2 and parts[2].isdigit():
                        found.append((int(parts[2]), 1))
        except OSError:
            pass
    return found


def taken_by_host(slot: int, host=None) -> bool:
    lo = RANGE_START + slot * RANGE_SIZE
    hi = lo + RANGE_SIZE
    return any(first < hi and first + count > lo for first, count in (_host_ranges() if host is None else host))


def reserve() -> IdRange:
    """flock(2) the first free slot from a random start: a range no live sandbox holds and no
    host user or subordinate id range overlaps."""
    if userns_disabled():
        return IdRange(-1, None)
    _lock_dir()
    host = [(f, c) for f, c in _host_ranges() if f + c > RANGE_START]
    start = random.randrange(RANGE_SLOTS)
    for i in range(RANGE_SLOTS):
        slot = (start + i) % RANGE_SLOTS
        if host and taken_by_host(slot, host):
            continue
        fd = _try_lock(slot)
        if fd is not None:
            return IdRange(slot, fd)
    raise OSError(errno.EUSERS, f"every localsb id range is in use ({RANGE_SLOTS} live sandboxes)")


def reserve_base(base: int) -> IdRange:
    """Take the reservation of a recorded range again (a supervisor that outlived its creator)."""
    if not base:
        return IdRange(-1, None)
    _lock_dir()
    slot = slot_of(base)
    fd = _try_lock(slot)
    if fd is None:
        raise OSError(errno.EBUSY, f"id range {base} is held by another sandbox")
    return IdRange(slot, fd)


def userns_disabled() -> bool:
    return os.environ.get(NO_USERNS_ENV) == "1"


def make_userns(base: int, count: int = RANGE_SIZE) -> int:
    """A user namespace mapping ids 0..count-1 to host ``base``..; returns a descriptor of it.

    A throwaway child unshare(2)s CLONE_NEWUSER and waits; we (host root) write its uid_map and
    gid_map (setgroups stays allowed: a privileged writer, and apt, su and sshd call setgroups),
    open /proc/<child>/ns/user and let it go. The descriptor keeps the namespace alive: it serves
    as the idmap of mounts and as the namespace the sandbox's keeper joins."""
    def setup(pid):
        line = f"0 {base} {count}\n".encode()
        for name in ("uid_map", "gid_map"):
            fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    return _in_throwaway_child(lambda: sc.libc.unshare(sc.CLONE_NEWUSER) == 0, setup,
                               "cannot create a user namespace on this host "
                               f"(set {NO_USERNS_ENV}=1 to run sandboxes without one, unsafely)")


def _in_throwaway_child(enter, then, failure: str):
    """fork(2) a child that runs ``enter()`` (namespace calls: True on success) and waits; call
    ``then(child_pid)`` while it waits (write its maps, open its namespaces) and return that; the
    child is released and reaped whatever happens. OSError(EPERM, ``failure``) if enter failed."""
    r, w = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.close(w2)
            os.write(w, b"k" if enter() else b"e")
            os.read(r2, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(r2)
    try:
        if os.read(r, 1) != b"k":
            raise OSError(errno.EPERM, failure)
        return then(pid)
    finally:
        os.close(w2)
        os.close(r)
        os.waitpid(pid, 0)


def idmapped_mount(src: str, dst: str, userns_fd: int | None, read_only: bool = True) -> None:
    """open_tree(2) a clone of ``src`` (recursive), mount_setattr(2) MOUNT_ATTR_IDMAP with
    ``userns_fd`` (host id k shows as the namespace's mapping of k) and read-only, move_mount(2) it
    to ``dst``. Without a namespace (``userns_fd`` None) it is a plain read-only bind."""
    fd = sc.open_tree(src, sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_RECURSIVE)
    try:
        attrs = (sc.MOUNT_ATTR_RDONLY if read_only else 0) | sc.MOUNT_ATTR_NODEV
        if userns_fd is not None:
            sc.mount_setattr(fd, attrs | sc.MOUNT_ATTR_IDMAP, userns_fd)
        else:
            sc.mount_setattr(fd, attrs)
        sc.move_mount(fd, dst)
    finally:
        os.close(fd)


def enter_as_root() -> None:
    """In a process that has just joined a sandbox's user namespace: become its root (setgroups(2),
    setresgid(2), setresuid(2) to 0), so files it makes are owned by the range, not host root."""
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


_XATTR_CAPS = "security.capability"


def _shift_id(i: int, base: int) -> int:
    return base + i % RANGE_SIZE


def _fix_caps(raw: bytes, base: int) -> bytes:
    """A v3 file capability carries the root id it is valid for: move it to the new range."""
    if len(raw) >= 24 and int.from_bytes(raw[0:4], "little") >> 24 == 3:
        rootid = int.from_bytes(raw[20:24], "little")
        return raw[:20] + _shift_id(rootid, base).to_bytes(4, "little") + raw[24:]
    return raw


def shift_tree(path: str, base: int) -> int:
    """lchown(2) every entry under ``path`` (not crossing mounts) to ``base + id % 65536``, keeping
    setuid/setgid bits and file capabilities, which chown(2) clears. Returns the entry count.
    Idempotent: an entry already in the range maps to itself. Iterative (any depth, one descriptor
    at a time). Call it on a tree nothing else uses (a fresh copy of a snapshot, not mounted): its
    directories, found by lstat, are reopened by path with O_NOFOLLOW."""
    top = os.lstat(path)
    count = 0

    def visit(dirfd, name: str, s) -> None:
        nonlocal count
        count += 1
        uid, gid = _shift_id(s.st_uid, base), _shift_id(s.st_gid, base)
        if (uid, gid) == (s.st_uid, s.st_gid):
            return
        target = name if dirfd is None else f"/proc/self/fd/{dirfd}/{name}"
        caps = None
        if st.S_ISREG(s.st_mode):
            try:
                caps = os.getxattr(target, _XATTR_CAPS, follow_symlinks=False)
            except OSError:
                caps = None
        os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        if not st.S_ISLNK(s.st_mode) and not st.S_ISDIR(s.st_mode) and s.st_mode & (st.S_ISUID | st.S_ISGID):
            os.chmod(name, st.S_IMODE(s.st_mode), dir_fd=dirfd)
        if caps is not None:
            os.setxattr(target, _XATTR_CAPS, _fix_caps(caps, base), follow_symlinks=False)

    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    stack = [path]                          # directories still to list
    while stack:
        current = stack.pop()
        dfd = os.open(current, flags)
        try:
            with os.scandir(dfd) as it:
                entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
            for name, s in entries:
                if st.S_ISDIR(s.st_mode):
                    if s.st_dev != top.st_dev:
                        continue
                    stack.append(os.path.join(current, name))
                visit(dfd, name, s)
        finally:
            os.close(dfd)
    visit(None, path, top)
    return count


_probe = None


def probe() -> dict:
    """Whether this host gives user namespaces and idmapped mounts (for doctor and the refusal)."""
    global _probe
    if _probe is not None:
        return _probe
    info = {"userns": False, "idmap": False, "reason": None}
    try:
        with open("/proc/sys/user/max_user_namespaces") as fh:
            if int(fh.read()) <= 0:
                raise OSError(errno.EPERM, "user.max_user_namespaces is 0")
        fd = make_userns(RANGE_START + (RANGE_SLOTS - 1) * RANGE_SIZE)
        info["userns"] = True
        try:
            tree = sc.open_tree("/usr", sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC)
            try:
                sc.mount_setattr(tree, sc.MOUNT_ATTR_IDMAP | sc.MOUNT_ATTR_RDONLY, fd, recursive=False)
                info["idmap"] = True
            finally:
                os.close(tree)
        finally:
            os.close(fd)
    except OSError as e:
        info["reason"] = e.strerror or str(e)
    _probe = info
    return info


def new_netns_in(userns_fd: int) -> int:
    """A network namespace owned by the user namespace ``userns_fd`` (so the sandbox's PID 1 may
    mount its sysfs and bring up its loopback); returns a descriptor of it. A throwaway child
    setns(2)s into the user namespace and unshare(2)s CLONE_NEWNET; we open /proc/<child>/ns/net."""
    return _in_throwaway_child(
        lambda: sc.libc.setns(userns_fd, sc.CLONE_NEWUSER) == 0 and sc.libc.unshare(sc.CLONE_NEWNET) == 0,
        lambda pid: os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC),
        "cannot create a network namespace in the sandbox's user namespace")
