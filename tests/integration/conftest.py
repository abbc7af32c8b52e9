"""Integration fixtures: real namespaces, cgroups and btrfs, as root.

Each test that asks for ``state_dir`` gets its own state directory (its own btrfs pool on a loop
device); everything is removed afterwards. A session-wide leak check compares the host's mounts,
loop devices, cgroups and our processes before and after the run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Both CLIs print plain markers ([OK] for ✓) when they find an AI coding agent among their parent
# processes (localsb/cli/agent.py). The tests expect the human output whoever runs them, so they pin
# the mode; the tests of agent mode set it themselves.
os.environ["AGENTUITY_AGENT_MODE"] = "none"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (namespaces, cgroups, mounts)")
        for item in items:
            item.add_marker(skip)


def _mounts():
    with open("/proc/self/mountinfo") as fh:
        return {line.split()[4] for line in fh}


def _loops():
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if "lsbtest" in line or "localsb" in line}


def _cgroups():
    found = set()
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d.startswith("localsb-") or d.startswith("lsbtest-"):
                found.add(os.path.join(base, d))
        if base.count("/") > 7:
            dirs[:] = []
    return found


CREATED_STATE_DIRS: list = []


def _ours(item: str) -> bool:
    """Whether a host resource belongs to a state dir this session made (other work may run on
    the machine at the same time: its resources are not our leaks)."""
    import hashlib
    for d in CREATED_STATE_DIRS:
        tag = "localsb-" + hashlib.sha256(os.path.abspath(d).encode()).hexdigest()[:8] + "-"
        if d in item or tag in item:
            return True
    return False


@pytest.fixture(scope="session", autouse=True)
def leak_check():
    before = (_mounts(), _loops(), _cgroups())
    yield
    import time
    deadline = time.monotonic() + 10
    while True:
        # an autoclear loop device is freed when the last mount namespace holding the pool lets
        # go of it, which can lag its umount by a moment
        after = (_mounts(), _loops(), _cgroups())
        leaks = {name: sorted(x for x in a - b if _ours(x))
                 for name, b, a in zip(("mounts", "loop devices", "cgroups"), before, after)}
        leaks = {k: v for k, v in leaks.items() if v}
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not leaks, f"integration tests leaked host resources: {leaks}"


def teardown_state(state_dir: str) -> None:
    """Delete every sandbox of a state dir, unmount its pool, remove the directory."""
    from localsb.engine import Engine
    from localsb.linux.storage import close_pool
    try:
        eng = Engine(state_dir)
        for row in eng.store.all("SELECT id FROM sandboxes WHERE status NOT IN ('deleted','terminated','failed')"):
            try:
                eng.sandbox_destroy(row["id"])
            except Exception:
                pass
        eng.repair()
        eng.close()
    finally:
        close_pool(state_dir, force=True) if "force" in close_pool.__code__.co_varnames else close_pool(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def state_dir():
    d = tempfile.mkdtemp(prefix="lsbtest-", dir="/tmp")
    CREATED_STATE_DIRS.append(d)
    yield d
    teardown_state(d)


@pytest.fixture
def engine(state_dir):
    from localsb.engine import Engine
    eng = Engine(state_dir)
    yield eng
    eng.close()


class CLI:
    def __init__(self, state_dir):
        self.state_dir = state_dir

    def __call__(self, *args, input=None, timeout=120, env=None, check=None):
        e = dict(os.environ, LOCALSB_HOME=self.state_dir, PYTHONPATH=ROOT)
        e.pop("LOCALSB_BACKEND", None)
        if env:
            e.update(env)
        p = subprocess.run([sys.executable, "-m", "localsb", *args], input=input, capture_output=True,
                           timeout=timeout, env=e, cwd=self.state_dir)
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p


@pytest.fixture
def cli(state_dir):
    return CLI(state_dir)
