"""The cgroup driver: one sandbox's cgroups, decided per capability between v1 and v2.

Discovery (discover.py) says which hierarchies are mounted and where this process sits in each.
The driver then resolves every capability on its own, never "all v1" or "all v2":

- limits (memory, cpu, pids): v2 when the own v2 cgroup's `cgroup.controllers` offers the
  controller, else v1 under this process's own path in that controller's hierarchy;
- devices: v1 `devices` only (v2 needs a BPF program, which localsb does not load);
- freeze: v2 `cgroup.freeze` wherever a cgroup2 is mounted (kernel >= 5.2), else v1 `freezer`;
- kill: v2 `cgroup.kill` (kernel >= 5.14), else freeze → SIGKILL loop → thaw;
- stats: v2 core `cpu.stat`, else v1 `cpuacct`; memory figures from wherever memory lives.

On this hybrid host that means limits in v1 and freeze/kill in v2 (host-capabilities.md §2).

A SandboxCgroup holds absolute paths only, so a process whose own cgroup differs (a later CLI
call, mockcloud, a supervisor) can freeze, kill, read and remove it from its stored dict.
"""
from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field

from localsb.api.errors import HostError, LimitNotEnforceable, NotSupported, ValidationError

from . import files, v1, v2
from .discover import Layout, discover

LIMIT_ROLES = ("memory", "cpu", "pids")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


@dataclass
class Limits:
    memory_bytes: int | None = None     # memory.limit_in_bytes (v1) / memory.max (v2)
    cpu_millicores: int | None = None   # cfs_quota_us = millicores*100 with period 100000
    pids: int | None = None             # pids.max
    devices_allowlist: bool = True      # v1 devices: deny a, allow the minimal /dev set


@dataclass
class SandboxCgroup:
    """The cgroups of one sandbox: absolute directory per role. Serialisable (to_dict/from_dict)
    so the engine stores it in SQLite and any later process can find, freeze, kill and remove it.

    Roles: 'memory', 'cpu', 'cpuacct', 'pids', 'devices' (limits and accounting), 'v2' (the
    unified-hierarchy cgroup: freeze, kill, populated, cpu.stat) and 'freezer' (v1 freezer, only
    when v2 cannot freeze). `versions` says for each limit role whether its directory is a v1
    cgroup or the v2 one. `owned` lists the roles whose directories this object made and
    removes: all of them for a sandbox, only the nested ones ('v2', 'freezer') for a child.
    """
    name: str
    paths: dict  # role -> absolute dir
    versions: dict = field(default_factory=dict)  # role -> 'v1' | 'v2'
    owned: tuple | None = None                    # None: every role's dir

    def to_dict(self) -> dict:
        d = {"name": self.name, "paths": dict(self.paths), "versions": dict(self.versions)}
        if self.owned is not None:
            d["owned"] = list(self.owned)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SandboxCgroup":
        paths = dict(d["paths"])
        versions = dict(d.get("versions") or {})
        for role in paths:
            versions.setdefault(role, "v2" if role == "v2" else "v1")
        owned = d.get("owned")
        return cls(name=d["name"], paths=paths, versions=versions,
                   owned=tuple(owned) if owned is not None else None)

    def owned_roles(self) -> list[str]:
        return list(self.paths) if self.owned is None else [r for r in self.owned if r in self.paths]

    def owned_dirs(self) -> list[str]:
        """The distinct directories this object made (co-mounted controllers share one)."""
        seen: list[str] = []
        for role in self.owned_roles():
            p = self.paths[role]
            if p not in seen:
                seen.append(p)
        return seen

    def procs_files(self) -> list[str]:
        """Every cgroup.procs a process must join to be inside this sandbox (v1 ones and v2).

        Limit roles that live in v2 are covered by joining the 'v2' cgroup (limits of an
        ancestor apply to its descendants), so only v1 directories and the v2 one are listed,
        the v2 one last.
        """
        dirs: list[str] = []
        for role, p in self.paths.items():
            if role == "v2" or self.versions.get(role) == "v2":
                continue
            if p not in dirs:
                dirs.append(p)
        if "v2" in self.paths:
            dirs.append(self.paths["v2"])
        return [os.path.join(d, "cgroup.procs") for d in dirs]

    def child(self, sub: str) -> "SandboxCgroup":
        """A nested v2 cgroup (e.g. 'exec-3', 'job-x') for per-execution kill; v1 paths are shared.

        Pure: nothing is created. `CgroupDriver.create_child` makes its directories.
        """
        _check_name(sub, "child cgroup name")
        paths = dict(self.paths)
        owned = []
        for role in ("v2", "freezer"):
            if role in paths:
                paths[role] = os.path.join(paths[role], sub)
                owned.append(role)
        if not owned:
            raise NotSupported(f"cgroup {self.name} has no v2 or freezer cgroup to nest {sub!r} in")
        return SandboxCgroup(name=f"{self.name}/{sub}", paths=paths,
                             versions=dict(self.versions), owned=tuple(owned))


def _check_name(name: str, what: str = "cgroup name") -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValidationError(f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-', "
                              "starting with a letter or digit")


def _check_limits(limits: Limits) -> None:
    def positive_int(v, what):
        if v is None:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValidationError(f"invalid {what} {v!r}: must be a positive integer")
    positive_int(limits.memory_bytes, "memory limit")
    positive_int(limits.cpu_millicores, "cpu limit")
    positive_int(limits.pids, "pids limit")
    # The CFS bandwidth controller refuses quotas under 1 ms per period.
    if limits.cpu_millicores is not None and limits.cpu_millicores < 10:
        raise ValidationError(f"invalid cpu limit {limits.cpu_millicores}m: the minimum is 10m")
    # Below a few MiB the sandbox's init and shell cannot even start.
    if limits.memory_bytes is not None and limits.memory_bytes < 4 * 1024 * 1024:
        raise ValidationError(f"invalid memory limit {limits.memory_bytes} bytes: the minimum is 4Mi")


def _rmdir_retry(d: str, timeout: float) -> None:
    """rmdir a cgroup directory, retrying on EBUSY (tasks still leaving); missing is fine."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise HostError(f"cannot remove cgroup {d}: {os.strerror(e.errno)}") from e
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _subdirs_bottom_up(d: str) -> list[str]:
    """Nested cgroup directories below d, deepest first (cgroupfs rmdir needs children gone)."""
    out: list[str] = []
    try:
        it = os.scandir(d)
    except (FileNotFoundError, NotADirectoryError):
        return out
    with it:
        subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    for s in subs:
        out.extend(_subdirs_bottom_up(s))
        out.append(s)
    return out


class CgroupDriver:
    """Creates, joins, freezes, kills, reads and removes sandbox cgroups (see module docstring)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        # role -> ('v1'|'v2', parent directory under which sandbox cgroups are made)
        self.limit_homes: dict[str, tuple[str, str]] = {}
        for ctrl in LIMIT_ROLES:
            if layout.v2_own_dir and ctrl in layout.v2_controllers:
                self.limit_homes[ctrl] = ("v2", layout.v2_own_dir)
            elif ctrl in layout.v1:
                self.limit_homes[ctrl] = ("v1", layout.v1[ctrl].own_dir)
        self.v2_home = layout.v2_own_dir
        self.devices_home = layout.v1["devices"].own_dir if "devices" in layout.v1 else None
        if self.v2_home and layout.v2_has_freeze:
            self.freeze_mode = "v2"
        elif "freezer" in layout.v1:
            self.freeze_mode = "v1"
        else:
            self.freeze_mode = None
        self.kill_mode = "v2" if (self.v2_home and layout.v2_has_kill) else "v1-loop"
        if self.v2_home:
            self.cpu_stat_mode = "v2"
        elif "cpuacct" in layout.v1:
            self.cpu_stat_mode = "v1"
        else:
            self.cpu_stat_mode = None
        self._v2_enabled = False

    # ----- creation -------------------------------------------------------------------------

    def _plan(self, name: str, limits: Limits) -> tuple[dict, dict]:
        """Decide every role's directory for a new sandbox cgroup; raise before making anything."""
        paths: dict[str, str] = {}
        versions: dict[str, str] = {}
        wanted = {"memory": limits.memory_bytes, "cpu": limits.cpu_millicores, "pids": limits.pids}
        missing = [r for r, v in wanted.items() if v is not None and r not in self.limit_homes]
        if limits.devices_allowlist and not self.devices_home:
            missing.append("devices")
        if missing:
            raise LimitNotEnforceable(
                f"cannot enforce the {', '.join(missing)} limit(s) here: no cgroup controller for "
                f"{'them' if len(missing) > 1 else 'it'} is available (v1 mounts: "
                f"{', '.join(sorted(self.layout.v1)) or 'none'}; v2 controllers: "
                f"{', '.join(sorted(self.layout.v2_controllers)) or 'none'})")
        if self.v2_home:
            paths["v2"] = os.path.join(self.v2_home, name)
            versions["v2"] = "v2"
        for role in LIMIT_ROLES:
            home = self.limit_homes.get(role)
            # memory and pids cgroups are made even without a limit: stats come from them.
            # The cpu cgroup only matters for a quota (usage comes from cpu.stat/cpuacct).
            if home is None or (role == "cpu" and wanted["cpu"] is None):
                continue
            ver, parent = home
            paths[role] = paths["v2"] if ver == "v2" else os.path.join(parent, name)
            versions[role] = ver
        if self.cpu_stat_mode == "v1":
            paths["cpuacct"] = os.path.join(self.layout.v1["cpuacct"].own_dir, name)
            versions["cpuacct"] = "v1"
        if limits.devices_allowlist:
            paths["devices"] = os.path.join(self.devices_home, name)
            versions["devices"] = "v1"
        if self.freeze_mode == "v1":
            paths["freezer"] = os.path.join(self.layout.v1["freezer"].own_dir, name)
            versions["freezer"] = "v1"
        return paths, versions

    def create(self, name: str, limits: Limits) -> SandboxCgroup:
        """mkdir each controller dir; write limits; raise LimitNotEnforceable if a limit has no controller;
        on any failure remove what was made."""
        _check_name(name)
        _check_limits(limits)
        paths, versions = self._plan(name, limits)
        cg = SandboxCgroup(name=name, paths=paths, versions=versions)
        v2_limit_ctrls = [r for r in LIMIT_ROLES if r in paths and versions[r] == "v2"]
        if v2_limit_ctrls and not self._v2_enabled:
            v2.enable_controllers(self.v2_home, v2_limit_ctrls)
            self._v2_enabled = True
        made: list[str] = []
        try:
            for d in cg.owned_dirs():
                try:
                    os.mkdir(d)
                except FileExistsError:
                    raise HostError(f"cgroup {d} already exists: another sandbox has the name "
                                    f"{name!r}, or a previous one was not removed") from None
                except OSError as e:
                    raise HostError(f"cannot create cgroup {d}: {os.strerror(e.errno)}") from e
                made.append(d)
            self._write_limits(cg, limits)
        except BaseException:
            for d in reversed(made):
                try:
                    _rmdir_retry(d, 0.5)
                except HostError:
                    pass
            raise
        return cg

    def _write_limits(self, cg: SandboxCgroup, limits: Limits) -> None:
        p, ver = cg.paths, cg.versions
        if limits.memory_bytes is not None:
            (v2.set_memory_max if ver["memory"] == "v2" else v1.set_memory_limit)(
                p["memory"], limits.memory_bytes)
        if limits.cpu_millicores is not None:
            (v2.set_cpu_max if ver["cpu"] == "v2" else v1.set_cpu_quota)(
                p["cpu"], limits.cpu_millicores)
        if limits.pids is not None:
            (v2.set_pids_max if ver["pids"] == "v2" else v1.set_pids_max)(p["pids"], limits.pids)
        if limits.devices_allowlist:
            v1.set_devices_allowlist(p["devices"])

    def create_child(self, cg: SandboxCgroup, sub: str) -> SandboxCgroup:
        """mkdir a nested cgroup (v2, and v1 freezer when that is the freezer) for one execution;
        it shares the sandbox's limits. Remove it with `remove`."""
        ch = cg.child(sub)
        made: list[str] = []
        try:
            for d in ch.owned_dirs():
                try:
                    os.mkdir(d)
                except FileExistsError:
                    raise HostError(f"cgroup {d} already exists") from None
                except OSError as e:
                    raise HostError(f"cannot create cgroup {d}: {os.strerror(e.errno)}") from e
                made.append(d)
        except BaseException:
            for d in reversed(made):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            raise
        return ch

    def join(self, cg: SandboxCgroup, pid: int) -> None:
        """Write the pid to every `cgroup.procs` of the sandbox (v1 first, v2 last).

        For a process about to exec, call this in the child after fork (pid 0 means "myself"
        to the kernel) and before unshare(CLONE_NEWCGROUP), so the sandbox sees its cgroup as /.
        """
        s = str(pid)
        for f in cg.procs_files():
            try:
                files.write(f, s)
            except OSError as e:
                raise HostError(f"cannot move pid {pid} into {f}: {os.strerror(e.errno)}") from e

    # ----- freeze / kill --------------------------------------------------------------------

    def _freezer(self, cg: SandboxCgroup) -> tuple[str, str]:
        if "freezer" in cg.paths:
            return "v1", cg.paths["freezer"]
        if "v2" in cg.paths and self.layout.v2_has_freeze:
            return "v2", cg.paths["v2"]
        raise NotSupported(f"cannot freeze cgroup {cg.name}: this host has neither cgroup v2 "
                           "cgroup.freeze nor the v1 freezer")

    def freeze(self, cg: SandboxCgroup, timeout: float = 2.0) -> None:
        """Write `cgroup.freeze` 1 and wait for `frozen 1`; thaw and raise on timeout."""
        mode, d = self._freezer(cg)
        (v2.freeze if mode == "v2" else v1.freeze)(d, timeout)

    def thaw(self, cg: SandboxCgroup) -> None:
        """Write `cgroup.freeze` 0 (v1: THAWED to `freezer.state`)."""
        mode, d = self._freezer(cg)
        (v2.thaw if mode == "v2" else v1.thaw)(d)

    def is_frozen(self, cg: SandboxCgroup) -> bool:
        """Read `frozen` of `cgroup.events` (v1: `freezer.state` is FROZEN)."""
        mode, d = self._freezer(cg)
        try:
            return v2.is_frozen(d) if mode == "v2" else v1.freezer_state(d) == "FROZEN"
        except FileNotFoundError:
            return False

    def _track_dir(self, cg: SandboxCgroup) -> str | None:
        """The directory whose membership tells whether the sandbox still has processes."""
        for role in ("v2", "freezer", "pids", "memory", "cpuacct", "devices", "cpu"):
            if role in cg.owned_roles():
                return cg.paths[role]
        return None

    def kill(self, cg: SandboxCgroup, timeout: float = 2.0) -> None:
        """`cgroup.kill` and wait for `populated 0` (v1 fallback: freeze, SIGKILL all, thaw)."""
        if "v2" in cg.paths and self.layout.v2_has_kill:
            if "freezer" in cg.paths:
                # SIGKILL reaches v1-frozen tasks only once they are THAWED.
                try:
                    files.write(os.path.join(cg.paths["freezer"], "freezer.state"), "THAWED")
                except OSError:
                    pass
            ok = v2.kill(cg.paths["v2"], timeout)
        else:
            track = self._track_dir(cg)
            if track is None:
                return
            ok = v1.kill_loop(track, cg.paths.get("freezer"), timeout)
        if not ok:
            raise HostError(f"processes of cgroup {cg.name} still alive {timeout:g}s after SIGKILL")

    def populated(self, cg: SandboxCgroup) -> bool:
        """Read `populated` of `cgroup.events` (v1: any pid in `cgroup.procs`, recursively)."""
        if "v2" in cg.paths:
            return v2.populated(cg.paths["v2"])
        track = self._track_dir(cg)
        return bool(track and files.list_pids(track))

    def pids(self, cg: SandboxCgroup) -> list[int]:
        """Every pid in the sandbox, read from `cgroup.procs` recursively."""
        track = self._track_dir(cg)
        return files.list_pids(track) if track else []

    # ----- removal and stats ----------------------------------------------------------------

    def remove(self, cg: SandboxCgroup, timeout: float = 2.0) -> None:
        """kill, then rmdir every dir (children first), retry EBUSY; missing dirs are fine."""
        dirs = cg.owned_dirs()
        if not any(os.path.isdir(d) for d in dirs):
            return
        self.kill(cg, timeout)
        # A v1 freezer left FROZEN would keep killed tasks from dying, so thaw it first.
        if "freezer" in cg.owned_roles():
            try:
                files.write(os.path.join(cg.paths["freezer"], "freezer.state"), "THAWED")
            except OSError:
                pass
        errors = []
        for d in dirs:
            for sub in _subdirs_bottom_up(d) + [d]:
                try:
                    _rmdir_retry(sub, timeout)
                except HostError as e:
                    errors.append(str(e))
        if errors:
            raise HostError("; ".join(errors))

    def stats(self, cg: SandboxCgroup) -> dict:
        """{'cpu_usec': int, 'memory_bytes': int, 'memory_peak': int, 'oom_kills': int, 'pids': int}

        Read from `cpu.stat` usage_usec (v2) or `cpuacct.usage` (v1); `memory.usage_in_bytes`,
        `memory.max_usage_in_bytes`, `memory.oom_control` (v1) or `memory.current`, `memory.peak`,
        `memory.events` (v2); `pids.current`. A figure whose file is absent reads as 0.
        """
        p, ver = cg.paths, cg.versions
        out = {"cpu_usec": 0, "memory_bytes": 0, "memory_peak": 0, "oom_kills": 0, "pids": 0}
        if "v2" in p and os.path.exists(os.path.join(p["v2"], "cpu.stat")):
            out["cpu_usec"] = v2.cpu_usage_usec(p["v2"])
        elif "cpuacct" in p:
            out["cpu_usec"] = v1.cpu_usage_usec(p["cpuacct"])
        if "memory" in p:
            out.update((v2.memory_stats if ver.get("memory") == "v2" else v1.memory_stats)(p["memory"]))
        if "pids" in p:
            out["pids"] = files.read_int(os.path.join(p["pids"], "pids.current"))
        else:
            out["pids"] = len(self.pids(cg))
        return out

    def capabilities(self) -> dict:
        """For doctor: {'memory': 'v1'|'v2'|None, 'cpu':..., 'pids':..., 'devices':..., 'freeze': 'v2'|'v1'|None,
        'kill': 'v2'|'v1-loop', 'v2_root': path, 'v1_roots': {...}}"""
        caps = {r: (self.limit_homes[r][0] if r in self.limit_homes else None) for r in LIMIT_ROLES}
        caps["devices"] = "v1" if self.devices_home else None
        caps["freeze"] = self.freeze_mode
        caps["kill"] = self.kill_mode
        caps["cpu_stats"] = self.cpu_stat_mode
        caps["v2_root"] = self.layout.v2_mountpoint
        caps["v2_own_dir"] = self.layout.v2_own_dir
        caps["v2_controllers"] = sorted(self.layout.v2_controllers)
        caps["v1_roots"] = {c: h.mountpoint for c, h in sorted(self.layout.v1.items())}
        caps["v1_own_dirs"] = {c: h.own_dir for c, h in sorted(self.layout.v1.items())}
        return caps


_cached: tuple[int, CgroupDriver] | None = None


def detect() -> CgroupDriver:
    """Parse /proc/self/mountinfo and /proc/self/cgroup; cache the result per process."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        _cached = (pid, CgroupDriver(discover()))
    return _cached[1]
