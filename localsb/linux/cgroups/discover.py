"""Where this process's cgroups are: parse `/proc/self/mountinfo` and `/proc/self/cgroup`.

Nothing here writes anything. The parsers take text so that unit tests can feed them fixture
files from hosts of every shape (pure v2, hybrid like ours, co-mounted `cpu,cpuacct`, containers
whose cgroup mounts have a non-'/' root).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# The v1 controllers we know by name. A v1 mount's super options also carry flags such as
# 'rw', 'clone_children', 'name=systemd' or 'release_agent=...', which are not controllers.
V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio",
    "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc",
})

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in s:
        return s
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), s)


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    dev: str            # "maj:min"
    root: str           # the path inside the filesystem that is mounted here
    mountpoint: str
    options: tuple      # per-mount options (rw, noatime, ...)
    fstype: str
    source: str
    super_options: tuple


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the text of `/proc/<pid>/mountinfo` (proc(5)) into entries, in file order."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 6 or len(rf) < 2:
            continue
        entries.append(MountEntry(
            mount_id=int(lf[0]), parent_id=int(lf[1]), dev=lf[2],
            root=_unescape(lf[3]), mountpoint=_unescape(lf[4]),
            options=tuple(lf[5].split(",")),
            fstype=rf[0], source=_unescape(rf[1]),
            super_options=tuple(rf[2].split(",")) if len(rf) > 2 else (),
        ))
    return entries


def read_mountinfo() -> list[MountEntry]:
    """Read `/proc/self/mountinfo`."""
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def parse_proc_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """Parse `/proc/<pid>/cgroup` (cgroups(7)): return (v2 path or None, {v1 controller: path}).

    Lines are `hierarchy-id:controller-list:path`; the v2 line is `0::path`. Named v1 hierarchies
    (`name=systemd`) carry no controller and are left out.
    """
    v2 = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
            continue
        for c in ctrls.split(","):
            if c in V1_CONTROLLERS:
                v1[c] = path
    return v2, v1


def _join_under_mount(mountpoint: str, mount_root: str, own_path: str) -> str:
    """The directory of cgroup `own_path` as seen through a mount of hierarchy subtree `mount_root`.

    On an ordinary host the mount root is '/', so the directory is mountpoint + own path. In a
    container the hierarchy may be mounted from a subtree (root '/docker/abc') while
    /proc/self/cgroup still shows the full path, so the mount root is cut off first.
    """
    rel = own_path
    if mount_root not in ("", "/"):
        if own_path == mount_root:
            rel = "/"
        elif own_path.startswith(mount_root.rstrip("/") + "/"):
            rel = own_path[len(mount_root.rstrip("/")):]
    rel = rel.strip("/")
    return os.path.join(mountpoint, rel) if rel else mountpoint


@dataclass
class V1Hierarchy:
    controllers: tuple      # controllers bound to this hierarchy, e.g. ('cpu', 'cpuacct')
    mountpoint: str
    own_path: str           # this process's path in the hierarchy (from /proc/self/cgroup)
    own_dir: str            # absolute directory of that cgroup


@dataclass
class Layout:
    """What discovery found; the driver decides per capability from this."""
    v2_mountpoint: str | None = None
    v2_own_path: str | None = None
    v2_own_dir: str | None = None
    v2_controllers: frozenset = frozenset()     # cgroup.controllers of the own v2 cgroup
    v2_has_kill: bool = False                   # cgroup.kill exists (kernel >= 5.14)
    v2_has_freeze: bool = False                 # cgroup.freeze exists (kernel >= 5.2)
    v1: dict = field(default_factory=dict)      # controller -> V1Hierarchy


def build_layout(mounts: list[MountEntry], proc_cgroup_text: str,
                 v2_controllers: frozenset | None = None,
                 v2_has_kill: bool | None = None,
                 v2_has_freeze: bool | None = None) -> Layout:
    """Combine mountinfo entries and /proc/self/cgroup into a Layout.

    The three optional facts are read from the own v2 cgroup's directory when not given (unit
    tests give them; `discover()` reads them).
    """
    v2_path, v1_paths = parse_proc_cgroup(proc_cgroup_text)
    layout = Layout()
    for m in mounts:
        if m.fstype == "cgroup2" and layout.v2_mountpoint is None and v2_path is not None:
            layout.v2_mountpoint = m.mountpoint
            layout.v2_own_path = v2_path
            layout.v2_own_dir = _join_under_mount(m.mountpoint, m.root, v2_path)
        elif m.fstype == "cgroup":
            ctrls = tuple(o for o in m.super_options if o in V1_CONTROLLERS)
            if not ctrls or any(c in layout.v1 for c in ctrls):
                continue    # a named hierarchy, or a second mount of one already seen
            own = v1_paths.get(ctrls[0], "/")
            h = V1Hierarchy(controllers=ctrls, mountpoint=m.mountpoint, own_path=own,
                            own_dir=_join_under_mount(m.mountpoint, m.root, own))
            for c in ctrls:
                layout.v1[c] = h
    if layout.v2_own_dir is not None:
        if v2_controllers is None:
            try:
                with open(os.path.join(layout.v2_own_dir, "cgroup.controllers")) as f:
                    v2_controllers = frozenset(f.read().split())
            except OSError:
                v2_controllers = frozenset()
        # The root cgroup has neither cgroup.kill nor cgroup.freeze (they exist only in its
        # children), so at the root the kernel version decides: kill >= 5.14, freeze >= 5.2.
        at_root = os.path.normpath(layout.v2_own_dir) == os.path.normpath(layout.v2_mountpoint)
        if v2_has_kill is None:
            v2_has_kill = (os.path.exists(os.path.join(layout.v2_own_dir, "cgroup.kill"))
                           or (at_root and _kernel_at_least(5, 14)))
        if v2_has_freeze is None:
            v2_has_freeze = (os.path.exists(os.path.join(layout.v2_own_dir, "cgroup.freeze"))
                             or (at_root and _kernel_at_least(5, 2)))
        layout.v2_controllers = frozenset(v2_controllers)
        layout.v2_has_kill = bool(v2_has_kill)
        layout.v2_has_freeze = bool(v2_has_freeze)
    return layout


def _kernel_at_least(major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def discover() -> Layout:
    """Read `/proc/self/mountinfo` and `/proc/self/cgroup` and build this process's Layout."""
    with open("/proc/self/cgroup") as f:
        cg = f.read()
    return build_layout(read_mountinfo(), cg)
