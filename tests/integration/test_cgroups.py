"""The cgroup driver against the real kernel (root): limits, freeze, kill, nested cgroups, removal.

Every test runs twice: with the driver as detected on this host (limits in v1, freeze and kill in
v2 here) and with cgroup v2 hidden from it, which exercises the v1 freezer and the
freeze → SIGKILL → thaw loop for real. Everything made is removed by fixture finalizers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from localsb.api.errors import HostError, LimitNotEnforceable
from localsb.linux.cgroups.discover import discover
from localsb.linux.cgroups.driver import CgroupDriver, Limits, SandboxCgroup, detect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=["detected", "v1-only"])
def cgdriver(request):
    if request.param == "detected":
        return detect()
    lay = discover()
    if "freezer" not in lay.v1:
        pytest.skip("this host has no v1 freezer to fall back to")
    return CgroupDriver(dataclasses.replace(lay, v2_mountpoint=None, v2_own_path=None,
                                            v2_own_dir=None, v2_controllers=frozenset(),
                                            v2_has_kill=False, v2_has_freeze=False))


class Made:
    """Cgroups and processes a test made; the finalizer kills and removes them even on failure."""

    def __init__(self, driver):
        self.driver = driver
        self.cgroups: list[SandboxCgroup] = []
        self.procs: list[subprocess.Popen] = []

    def cgroup(self, limits: Limits = Limits()) -> SandboxCgroup:
        cg = self.driver.create(f"lsbtest-{os.getpid()}-{uuid.uuid4().hex[:8]}", limits)
        self.cgroups.append(cg)
        return cg

    def spawn(self, cg: SandboxCgroup, args, **kw) -> subprocess.Popen:
        drv = self.driver
        p = subprocess.Popen(args, preexec_fn=lambda: drv.join(cg, 0), **kw)
        self.procs.append(p)
        return p

    def cleanup(self):
        for cg in reversed(self.cgroups):
            try:
                self.driver.thaw(cg)
            except Exception:
                pass
            try:
                self.driver.remove(cg)
            except Exception:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for s in (p.stdout, p.stderr):
                if s:
                    s.close()


@pytest.fixture
def made(cgdriver):
    m = Made(cgdriver)
    yield m
    m.cleanup()


def _gone(cg: SandboxCgroup) -> list[str]:
    return [d for d in cg.owned_dirs() if os.path.exists(d)]


def test_memory_limit_oom_kills_and_is_counted(made):
    cg = made.cgroup(Limits(memory_bytes=64 * 1024 * 1024))
    # b"\1" * n writes every page, so the allocation is really resident (bytearray(n) is not).
    p = made.spawn(cg, [sys.executable, "-c", "b = b'\\1' * (300 << 20); print('survived')"],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL and b"survived" not in out
    st = made.driver.stats(cg)
    assert st["oom_kills"] >= 1
    assert 0 < st["memory_peak"] <= 64 * 1024 * 1024 + 4096


def test_cpu_limit_caps_a_busy_loop(made):
    cg = made.cgroup(Limits(cpu_millicores=200))
    code = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.5:\n    pass\n"
    t0 = time.monotonic()
    p = made.spawn(cg, [sys.executable, "-c", code])
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    cpu = ru.ru_utime + ru.ru_stime
    assert wall >= 1.5
    assert cpu / wall < 0.40, f"{cpu:.2f}s of CPU in {wall:.2f}s wall"
    assert cpu > 0.1
    # The driver's own accounting sees the same work.
    assert made.driver.stats(cg)["cpu_usec"] >= int(cpu * 1e6 * 0.8)


def test_pids_limit_contains_a_fork_bomb(made):
    cg = made.cgroup(Limits(pids=5))
    script = "for i in $(seq 20); do sleep 30 >/dev/null 2>&1 & done; echo all-started; wait"
    p = made.spawn(cg, ["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    assert b"all-started" not in out
    assert b"fork" in err.lower(), err
    st = made.driver.stats(cg)
    assert st["pids"] <= 5
    made.driver.kill(cg)
    assert not made.driver.populated(cg)
    # pids.current drops when a task is reaped; the orphaned sleeps are reaped by init shortly.
    deadline = time.monotonic() + 5
    while made.driver.stats(cg)["pids"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made.driver.stats(cg)["pids"] == 0


def test_devices_allowlist(made):
    cg = made.cgroup(Limits())
    denied = next((d for d in ("/dev/vda", "/dev/kvm", "/dev/loop-control", "/dev/mem") if os.path.exists(d)), None)
    if denied is None:
        pytest.skip("no device node outside the allowlist exists on this host")
    code = ("import os, sys\n"
            "os.close(os.open('/dev/null', os.O_RDWR))\n"
            "try:\n    os.close(os.open(sys.argv[1], os.O_RDONLY))\nexcept PermissionError:\n    print('denied')\n"
            "else:\n    print('opened')\n")
    p = made.spawn(cg, [sys.executable, "-c", code, denied], stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=30)
    assert out.strip() == b"denied"
    assert p.returncode == 0


def _counter(made, cg, tmp_path):
    path = tmp_path / "counter"
    code = ("import sys, time\nn = 0\nwhile True:\n    n += 1\n"
            "    open(sys.argv[1] + '.tmp', 'w').write(str(n))\n"
            "    __import__('os').replace(sys.argv[1] + '.tmp', sys.argv[1])\n    time.sleep(0.005)\n")
    made.spawn(cg, [sys.executable, "-c", code, str(path)])
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return lambda: int(path.read_text() or 0)


def test_freeze_stops_and_thaw_resumes(made, tmp_path):
    cg = made.cgroup(Limits())
    read = _counter(made, cg, tmp_path)
    drv = made.driver
    assert not drv.is_frozen(cg)
    drv.freeze(cg)
    assert drv.is_frozen(cg)
    a = read()
    time.sleep(0.3)
    assert read() == a, "counter advanced while frozen"
    drv.thaw(cg)
    assert not drv.is_frozen(cg)
    time.sleep(0.3)
    assert read() > a


def test_kill_empties_the_whole_tree_even_frozen(made):
    cg = made.cgroup(Limits())
    drv = made.driver
    p = made.spawn(cg, ["/bin/sh", "-c", "sleep 60 & sleep 60 & (sleep 60 &) ; wait"])
    deadline = time.monotonic() + 5
    while len(drv.pids(cg)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(drv.pids(cg)) >= 4 and drv.populated(cg)
    drv.freeze(cg)
    t = time.perf_counter()
    drv.kill(cg)
    took = time.perf_counter() - t
    assert not drv.populated(cg) and drv.pids(cg) == []
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert took < 1.0


def test_nested_child_is_killed_alone(made):
    drv = made.driver
    cg = made.cgroup(Limits(memory_bytes=256 << 20))
    parent_proc = made.spawn(cg, ["sleep", "60"])
    ch = drv.create_child(cg, "exec-1")
    try:
        child_proc = made.spawn(ch, ["sleep", "60"])
        assert child_proc.pid in drv.pids(ch)
        assert parent_proc.pid not in drv.pids(ch)
        drv.kill(ch)
        assert child_proc.wait(timeout=5) == -signal.SIGKILL
        assert parent_proc.poll() is None, "killing the exec cgroup killed the sandbox"
        drv.remove(ch)
        assert _gone(ch) == []
        assert all(os.path.isdir(d) for d in cg.owned_dirs())
        # The child shares the sandbox's v1 limits: it joined the same memory cgroup.
        assert ch.paths["memory"] == cg.paths["memory"]
    finally:
        drv.remove(ch)


def test_remove_kills_and_removes_children_first(made):
    drv = made.driver
    cg = made.cgroup(Limits(memory_bytes=128 << 20, cpu_millicores=500, pids=50))
    made.spawn(cg, ["sleep", "60"])
    ch = drv.create_child(cg, "exec-2")
    made.spawn(ch, ["sleep", "60"])
    drv.remove(cg)
    assert _gone(cg) == [] and _gone(ch) == []
    drv.remove(cg)      # idempotent: missing is fine


def test_another_process_operates_from_the_stored_dict(made):
    cg = made.cgroup(Limits(pids=20))
    p = made.spawn(cg, ["sleep", "60"])
    stored = json.dumps(cg.to_dict())
    # The operator runs inside another cgroup, so its own paths (what detect() reads) differ
    # from the creator's: only the stored absolute paths can lead it to the sandbox.
    operator_cg = made.cgroup(Limits(devices_allowlist=False))
    code = ("import json, sys\n"
            "from localsb.linux.cgroups.driver import SandboxCgroup, detect\n"
            "cg = SandboxCgroup.from_dict(json.loads(sys.argv[1]))\n"
            "d = detect()\n"
            "d.freeze(cg); print(d.is_frozen(cg)); d.thaw(cg)\n"
            "print(d.stats(cg)['pids']); d.remove(cg)\n"
            "print(open('/proc/self/cgroup').read().count(sys.argv[2]) > 0)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    op = made.spawn(operator_cg, [sys.executable, "-c", code, stored, operator_cg.name],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out, err = op.communicate(timeout=30)
    assert op.returncode == 0, err
    assert out.split() == ["True", "1", "True"]
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert _gone(cg) == []


def test_unenforceable_limit_raises_and_leaves_nothing(cgdriver):
    lay = dataclasses.replace(cgdriver.layout, v1={k: v for k, v in cgdriver.layout.v1.items()
                                                   if k != "memory"}, v2_controllers=frozenset())
    d = CgroupDriver(lay)
    name = f"lsbtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with pytest.raises(LimitNotEnforceable, match="memory"):
        d.create(name, Limits(memory_bytes=64 << 20, pids=10))
    for h in cgdriver.layout.v1.values():
        assert not os.path.exists(os.path.join(h.own_dir, name))
    if cgdriver.layout.v2_own_dir:
        assert not os.path.exists(os.path.join(cgdriver.layout.v2_own_dir, name))


def test_create_failure_midway_removes_what_was_made(made):
    # A cpu quota the kernel rejects makes the write fail after the directories exist.
    drv = made.driver
    if "cpu" not in drv.limit_homes or drv.limit_homes["cpu"][0] != "v1":
        pytest.skip("needs a v1 cpu controller")
    name = f"lsbtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # 10**12 millicores gives a quota above the kernel's maximum (EINVAL on cpu.cfs_quota_us).
    with pytest.raises(HostError, match="cpu"):
        drv.create(name, Limits(cpu_millicores=10 ** 12))
    paths, _ = drv._plan(name, Limits(cpu_millicores=100))
    assert [p for p in paths.values() if os.path.exists(p)] == []
