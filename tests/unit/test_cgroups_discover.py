"""cgroup discovery and per-capability decisions, from fixture text (no root, no cgroupfs)."""
from __future__ import annotations

import pytest

from localsb.api.errors import LimitNotEnforceable, NotSupported, ValidationError
from localsb.linux.cgroups.discover import (build_layout, parse_mountinfo, parse_proc_cgroup)
from localsb.linux.cgroups.driver import CgroupDriver, Limits, SandboxCgroup

# This machine kind: hybrid, v1 controllers each on their own mount, cgroup2 at .../unified.
HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/f733c23bab18c88bb8c8f26299b918f5
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

# A systemd hybrid host: cpu and cpuacct co-mounted, systemd's own paths.
SYSTEMD_HYBRID_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
"""
SYSTEMD_HYBRID_CGROUP = """\
12:pids:/user.slice/user-1000.slice/session-2.scope
4:memory:/user.slice/user-1000.slice/session-2.scope
3:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
0::/user.slice/user-1000.slice/session-2.scope
"""

# A pure v2 host; the own cgroup is a delegated one offering the limit controllers.
PURE_V2_MOUNTINFO = """\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
PURE_V2_CGROUP = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/localsb.scope\n"

# A v1-only host (no cgroup2 mounted at all).
V1_ONLY_MOUNTINFO = """\
20 1 8:1 / / rw - ext4 /dev/sda1 rw
30 20 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 20 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 20 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
33 20 0:30 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
34 20 0:31 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
"""
V1_ONLY_CGROUP = """\
5:devices:/
4:freezer:/
3:pids:/
2:memory:/
1:cpu,cpuacct:/
"""

# A container: hierarchies mounted from a subtree, /proc/self/cgroup shows full paths.
CONTAINER_MOUNTINFO = """\
600 500 0:40 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
601 500 0:41 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids
602 500 0:42 /docker/abc /sys/fs/cgroup/unified ro,nosuid - cgroup2 cgroup2 rw
"""
CONTAINER_CGROUP = "3:memory:/docker/abc\n2:pids:/docker/abc/inner\n0::/docker/abc\n"


def layout(mountinfo, cgroup, controllers=(), kill=True, freeze=True):
    return build_layout(parse_mountinfo(mountinfo), cgroup, v2_controllers=frozenset(controllers),
                        v2_has_kill=kill, v2_has_freeze=freeze)


# ----- parsers ----------------------------------------------------------------------------------

def test_parse_mountinfo_fields():
    entries = parse_mountinfo(HYBRID_MOUNTINFO)
    assert len(entries) == 13
    mem = [e for e in entries if e.mountpoint == "/sys/fs/cgroup/memory"][0]
    assert (mem.mount_id, mem.parent_id, mem.dev, mem.root) == (35, 31, "0:32", "/")
    assert mem.fstype == "cgroup" and mem.source == "cgroup"
    assert mem.super_options == ("rw", "memory")
    assert mem.options == ("rw", "relatime")
    root = [e for e in entries if e.mountpoint == "/"][0]
    assert root.fstype == "ext4" and root.source == "/dev/vda"


def test_parse_mountinfo_optional_fields_and_escapes():
    text = ("100 27 0:50 / /tmp/with\\040space\\011tab rw,noatime shared:5 master:3 - btrfs "
            "/dev/loop3 rw,ssd,space_cache=v2,subvolid=5,subvol=/\n"
            "garbage line without separator\n\n")
    (e,) = parse_mountinfo(text)
    assert e.mountpoint == "/tmp/with space\ttab"
    assert e.fstype == "btrfs" and e.source == "/dev/loop3"
    assert "subvol=/" in e.super_options


def test_parse_proc_cgroup_hybrid():
    v2, v1 = parse_proc_cgroup(HYBRID_CGROUP)
    assert v2 == "/"
    assert v1["memory"] == "/process_api/f733c23bab18c88bb8c8f26299b918f5"
    assert v1["cpu"] == "/" and v1["pids"] == "/"
    assert not any(k.startswith("name=") for k in v1)


def test_parse_proc_cgroup_comounted_and_v1_only():
    v2, v1 = parse_proc_cgroup(SYSTEMD_HYBRID_CGROUP)
    assert v2 == "/user.slice/user-1000.slice/session-2.scope"
    assert v1["cpu"] == v1["cpuacct"] == "/user.slice"
    v2, v1 = parse_proc_cgroup(V1_ONLY_CGROUP)
    assert v2 is None and set(v1) == {"devices", "freezer", "pids", "memory", "cpu", "cpuacct"}


# ----- layouts ----------------------------------------------------------------------------------

def test_layout_hybrid_this_host():
    lay = layout(HYBRID_MOUNTINFO, HYBRID_CGROUP, controllers={"hugetlb"})
    assert lay.v2_mountpoint == "/sys/fs/cgroup/unified"
    assert lay.v2_own_dir == "/sys/fs/cgroup/unified"
    assert lay.v1["memory"].own_dir == \
        "/sys/fs/cgroup/memory/process_api/f733c23bab18c88bb8c8f26299b918f5"
    assert lay.v1["cpu"].own_dir == "/sys/fs/cgroup/cpu"
    assert "name=systemd" not in lay.v1 and "systemd" not in lay.v1


def test_layout_container_mount_root_is_cut():
    lay = layout(CONTAINER_MOUNTINFO, CONTAINER_CGROUP)
    assert lay.v1["memory"].own_dir == "/sys/fs/cgroup/memory"
    assert lay.v1["pids"].own_dir == "/sys/fs/cgroup/pids/inner"
    assert lay.v2_own_dir == "/sys/fs/cgroup/unified"


def test_layout_comounted_cpu_cpuacct_share_one_hierarchy():
    lay = layout(SYSTEMD_HYBRID_MOUNTINFO, SYSTEMD_HYBRID_CGROUP)
    assert lay.v1["cpu"] is lay.v1["cpuacct"]
    assert lay.v1["cpu"].own_dir == "/sys/fs/cgroup/cpu,cpuacct/user.slice"
    assert lay.v2_own_dir == "/sys/fs/cgroup/unified/user.slice/user-1000.slice/session-2.scope"


# ----- per-capability decisions -----------------------------------------------------------------

def test_capabilities_hybrid_limits_v1_freeze_kill_v2():
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP, controllers={"hugetlb"}))
    caps = d.capabilities()
    assert (caps["memory"], caps["cpu"], caps["pids"], caps["devices"]) == ("v1",) * 4
    assert caps["freeze"] == "v2" and caps["kill"] == "v2" and caps["cpu_stats"] == "v2"
    assert caps["v2_root"] == "/sys/fs/cgroup/unified"
    assert caps["v1_roots"]["memory"] == "/sys/fs/cgroup/memory"


def test_capabilities_pure_v2_with_delegated_controllers():
    d = CgroupDriver(layout(PURE_V2_MOUNTINFO, PURE_V2_CGROUP, controllers={"memory", "cpu", "pids"}))
    caps = d.capabilities()
    assert (caps["memory"], caps["cpu"], caps["pids"]) == ("v2", "v2", "v2")
    assert caps["devices"] is None and caps["freeze"] == "v2" and caps["kill"] == "v2"


def test_capabilities_v1_only_falls_back_to_freezer_and_kill_loop():
    d = CgroupDriver(layout(V1_ONLY_MOUNTINFO, V1_ONLY_CGROUP))
    caps = d.capabilities()
    assert caps["freeze"] == "v1" and caps["kill"] == "v1-loop" and caps["cpu_stats"] == "v1"
    assert caps["v2_root"] is None


def test_old_kernel_v2_without_kill_uses_loop():
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP, kill=False, freeze=False))
    assert d.capabilities()["kill"] == "v1-loop"
    assert d.capabilities()["freeze"] == "v1"


# ----- planning a sandbox's cgroups (pure: no directory is made) --------------------------------

def test_plan_hybrid_paths_are_absolute_under_own_path():
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP, controllers={"hugetlb"}))
    paths, versions = d._plan("localsb-ab12-sbx_1", Limits(memory_bytes=1 << 30, cpu_millicores=500, pids=64))
    own_mem = "/sys/fs/cgroup/memory/process_api/f733c23bab18c88bb8c8f26299b918f5"
    assert paths == {
        "v2": "/sys/fs/cgroup/unified/localsb-ab12-sbx_1",
        "memory": own_mem + "/localsb-ab12-sbx_1",
        "cpu": "/sys/fs/cgroup/cpu/localsb-ab12-sbx_1",
        "pids": "/sys/fs/cgroup/pids/localsb-ab12-sbx_1",
        "devices": "/sys/fs/cgroup/devices/localsb-ab12-sbx_1",
    }
    assert all(versions[r] == "v1" for r in ("memory", "cpu", "pids", "devices"))
    assert versions["v2"] == "v2"


def test_plan_without_cpu_limit_makes_no_cpu_cgroup_but_keeps_memory_and_pids_for_stats():
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP))
    paths, _ = d._plan("x", Limits())
    assert "cpu" not in paths and "memory" in paths and "pids" in paths


def test_plan_v1_only_has_freezer_and_cpuacct():
    d = CgroupDriver(layout(V1_ONLY_MOUNTINFO, V1_ONLY_CGROUP))
    paths, _ = d._plan("x", Limits(cpu_millicores=100))
    assert paths["freezer"] == "/sys/fs/cgroup/freezer/x"
    # cpu and cpuacct are co-mounted: one directory serves both roles.
    assert paths["cpu"] == paths["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/x"
    cg = SandboxCgroup(name="x", paths=paths, versions={r: "v1" for r in paths})
    assert cg.owned_dirs().count("/sys/fs/cgroup/cpu,cpuacct/x") == 1


def test_plan_pure_v2_limits_live_in_the_v2_cgroup():
    d = CgroupDriver(layout(PURE_V2_MOUNTINFO, PURE_V2_CGROUP, controllers={"memory", "cpu", "pids"}))
    paths, versions = d._plan("x", Limits(memory_bytes=1 << 28, cpu_millicores=250, pids=10,
                                         devices_allowlist=False))
    own = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/localsb.scope"
    assert paths["v2"] == paths["memory"] == paths["cpu"] == paths["pids"] == own + "/x"
    assert versions["memory"] == "v2"
    cg = SandboxCgroup(name="x", paths=paths, versions=versions)
    assert cg.procs_files() == [own + "/x/cgroup.procs"]


def test_unenforceable_limits_raise_before_anything_is_made():
    d = CgroupDriver(layout(PURE_V2_MOUNTINFO, PURE_V2_CGROUP, controllers={"cpu"}))
    with pytest.raises(LimitNotEnforceable, match="memory"):
        d.create("x", Limits(memory_bytes=1 << 28, devices_allowlist=False))
    with pytest.raises(LimitNotEnforceable, match="devices"):
        d.create("x", Limits())


@pytest.mark.parametrize("limits,match", [
    (Limits(memory_bytes=0), "memory"),
    (Limits(memory_bytes=1024), "minimum is 4Mi"),
    (Limits(cpu_millicores=5), "minimum is 10m"),
    (Limits(cpu_millicores=-100), "cpu"),
    (Limits(pids=0), "pids"),
    (Limits(pids=True), "pids"),
    (Limits(memory_bytes="64M"), "memory"),
])
def test_bad_limits_are_validation_errors(limits, match):
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP))
    with pytest.raises(ValidationError, match=match):
        d.create("x", limits)


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "x" * 300, "sp ace", "-lead"])
def test_bad_names_are_validation_errors(name):
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP))
    with pytest.raises(ValidationError):
        d.create(name, Limits())


# ----- SandboxCgroup ----------------------------------------------------------------------------

def _hybrid_cg():
    d = CgroupDriver(layout(HYBRID_MOUNTINFO, HYBRID_CGROUP))
    paths, versions = d._plan("localsb-1-sbx_a", Limits(cpu_millicores=100))
    return SandboxCgroup(name="localsb-1-sbx_a", paths=paths, versions=versions)


def test_sandbox_cgroup_round_trips_through_a_dict():
    cg = _hybrid_cg()
    d = cg.to_dict()
    import json
    back = SandboxCgroup.from_dict(json.loads(json.dumps(d)))
    assert back == cg
    assert all(p.startswith("/") for p in d["paths"].values())
    ch = cg.child("exec-1")
    assert SandboxCgroup.from_dict(json.loads(json.dumps(ch.to_dict()))) == ch


def test_from_dict_infers_versions_of_older_records():
    cg = SandboxCgroup.from_dict({"name": "n", "paths": {"v2": "/u/n", "memory": "/m/n"}})
    assert cg.versions == {"v2": "v2", "memory": "v1"} and cg.owned is None


def test_procs_files_v1_first_then_v2():
    files = _hybrid_cg().procs_files()
    assert files[-1] == "/sys/fs/cgroup/unified/localsb-1-sbx_a/cgroup.procs"
    assert "/sys/fs/cgroup/cpu/localsb-1-sbx_a/cgroup.procs" in files
    assert len(files) == len(set(files)) == 5


def test_child_nests_v2_and_shares_v1():
    cg = _hybrid_cg()
    ch = cg.child("exec-3")
    assert ch.name == "localsb-1-sbx_a/exec-3"
    assert ch.paths["v2"] == "/sys/fs/cgroup/unified/localsb-1-sbx_a/exec-3"
    assert ch.paths["memory"] == cg.paths["memory"]
    assert ch.owned_dirs() == ["/sys/fs/cgroup/unified/localsb-1-sbx_a/exec-3"]
    assert ch.procs_files()[-1] == "/sys/fs/cgroup/unified/localsb-1-sbx_a/exec-3/cgroup.procs"
    with pytest.raises(ValidationError):
        cg.child("../escape")


def test_child_without_v2_or_freezer_is_not_supported():
    cg = SandboxCgroup(name="n", paths={"memory": "/m/n"}, versions={"memory": "v1"})
    with pytest.raises(NotSupported):
        cg.child("exec-1")


def test_child_in_v1_fallback_nests_the_freezer():
    d = CgroupDriver(layout(V1_ONLY_MOUNTINFO, V1_ONLY_CGROUP))
    paths, versions = d._plan("s", Limits())
    ch = SandboxCgroup(name="s", paths=paths, versions=versions).child("exec-1")
    assert ch.owned_dirs() == ["/sys/fs/cgroup/freezer/s/exec-1"]
