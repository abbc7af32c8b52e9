"""Runtimes and dependencies, for real: debootstrap, apt-get and npm from the package registries.

Images are built once per session in one state directory (``rt_state``) and shared by the tests
here: debian:12 (built by the interrupted-build test, which first kills a build of it), debian:sid
with python:3.14 and node:lts, bun:1, and the jq dependency layer. Cold, on the reference machine:
about 3 minutes for the whole file (debootstrap is ~40 s per Debian suite).
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import CLI, ROOT, teardown_state

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def rt_state():
    d = tempfile.mkdtemp(prefix="lsbtest-rt-", dir="/tmp")
    yield d
    teardown_state(d)


@pytest.fixture(scope="module")
def rcli(rt_state):
    return CLI(rt_state)


def _images(state):
    return os.path.join(state, "pool", "images")


def _built(rcli, name):
    p = rcli("sandbox", "runtime", "list", "--json", check=0)
    return {r["name"]: r["built"] for r in json.loads(p.stdout)["runtimes"]}[name]


def _pids_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _mounts_under(path):
    with open("/proc/self/mountinfo") as fh:
        return [ln.split()[4] for ln in fh if ln.split()[4].startswith(path + "/")]


def test_interrupted_build_is_discarded_and_redone(rt_state, rcli):
    """SIGKILL the process building debian:12 in the middle of debootstrap: nothing of the build
    keeps running or mounted, the half image is never listed or used, and the next build deletes
    it and builds the image (the image the rest of this file uses)."""
    env = dict(os.environ, LOCALSB_HOME=rt_state, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "localsb", "sandbox", "runtime", "build", "debian:12"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=rt_state)
    tmp_glob = os.path.join(_images(rt_state), "debian-12.v1.building-*")
    deadline = time.monotonic() + 120
    # wait until debootstrap is really writing the target
    while not glob.glob(os.path.join(tmp_glob, "root", "var", "cache", "apt", "archives", "*.deb")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "debootstrap never started writing"
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    [tmp] = glob.glob(tmp_glob)
    deadline = time.monotonic() + 10
    while _pids_mentioning(tmp) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pids_mentioning(tmp), "build processes outlived the killed builder"
    assert not [m for m in _mounts_under(rt_state) if "images" in m], "a killed build left mounts"
    assert not os.path.exists(os.path.join(_images(rt_state), "debian-12.v1"))
    assert _built(rcli, "debian:12") is False

    t0 = time.monotonic()
    p = rcli("sandbox", "runtime", "build", "debian:12", "--json", timeout=600, check=0)
    cold = time.monotonic() - t0
    info = json.loads(p.stdout)
    print(f"\ncold build debian:12: {cold:.1f} s, {info['sizeBytes'] / 1e6:.0f} MB, version {info['version']}")
    assert info["version"].startswith("12.")
    assert not glob.glob(tmp_glob), "the stale half-built image was not deleted"
    assert _built(rcli, "debian:12") is True


def test_debian_image_is_its_own_root(rt_state, rcli):
    """A Debian runtime is debootstrap's root, not the host's /usr: its own /etc with the
    agentuity user, /home/agentuity owned by 1000, and the host's CA certificates trusted."""
    p = rcli("sandbox", "run", "--runtime", "debian:12", "--", "sh", "-c",
             "cat /etc/debian_version; stat -c %u:%g /home/agentuity; id -u agentuity; pwd; "
             "test -e /usr/bin/python3 && echo has-python || echo no-python", timeout=600, check=0)
    lines = p.stdout.decode().split()
    assert lines[0].startswith("12.")
    assert lines[1:] == ["1000:1000", "1000", "/home/agentuity", "no-python"], lines  # host has python3
    cas = sorted(glob.glob("/usr/local/share/ca-certificates/*.crt"))
    if cas:
        marker = [ln for ln in open(cas[0]).read().splitlines() if ln and not ln.startswith("-----")][1]
        bundle = os.path.join(_images(rt_state), "debian-12.v1", "root", "etc/ssl/certs/ca-certificates.crt")
        assert marker in open(bundle).read(), "the host's CA certificate is not in the image's bundle"


def test_python_314(rcli):
    p = rcli("sandbox", "run", "--runtime", "python:3.14", "--", "python3", "--version", timeout=600, check=0)
    assert p.stdout.decode().startswith("Python 3.14."), p.stdout


def test_bun(rcli):
    p = rcli("sandbox", "run", "--runtime", "bun:1", "--", "bun", "--version", timeout=600, check=0)
    assert p.stdout.decode().startswith("1."), p.stdout
    script = "const xs: number[] = [1, 2, 3]; console.log(xs.map((x) => x * 2).join(','), typeof Bun.version)"
    p = rcli("sandbox", "run", "--runtime", "bun:1", "--", "sh", "-c",
             f"cat > app.ts <<'EOF'\n{script}\nEOF\nbun run app.ts", check=0)
    assert p.stdout.decode().strip() == "2,4,6 string"


def test_node_lts(rcli):
    p = rcli("sandbox", "run", "--runtime", "node:lts", "--", "node", "-e", "console.log(1+1)", timeout=600, check=0)
    assert p.stdout.decode() == "2\n"


def test_dependency_layer_is_cached(rt_state, rcli):
    """`--dependency jq` (no --runtime: Debian 12) installs jq; a second sandbox with the same set
    starts from the cached layer: no second layer, no second install."""
    deps = os.path.join(_images(rt_state), "deps")
    t0 = time.monotonic()
    p = rcli("sandbox", "run", "--dependency", "jq", "--", "jq", "--version", timeout=600, check=0)
    first = time.monotonic() - t0
    assert p.stdout.decode().startswith("jq-1."), p.stdout
    [layer] = [d for d in os.listdir(deps) if d.endswith(".v1")]
    built_at = json.load(open(os.path.join(deps, layer, "image.json")))["builtAt"]
    t0 = time.monotonic()
    p = rcli("sandbox", "run", "--dependency", "jq", "--", "jq", "-n", "1+1", check=0)
    second = time.monotonic() - t0
    assert p.stdout.decode() == "2\n"
    print(f"\n--dependency jq: first run {first * 1000:.0f} ms (apt-get install), second {second * 1000:.0f} ms "
          f"(cached layer)")
    assert [d for d in os.listdir(deps) if d.endswith(".v1")] == [layer]
    assert json.load(open(os.path.join(deps, layer, "image.json")))["builtAt"] == built_at
    assert second < first


def test_unknown_package_fails_clearly_and_leaves_nothing(rt_state, rcli):
    deps = os.path.join(_images(rt_state), "deps")
    before = set(os.listdir(deps)) if os.path.isdir(deps) else set()
    sandboxes = os.path.join(rt_state, "pool", "sandboxes")
    p = rcli("sandbox", "run", "--dependency", "jq", "--dependency", "lsbtest-no-such-package", "--", "true",
             timeout=600, check=2)
    err = p.stderr.decode().strip()
    assert "Unknown apt package: lsbtest-no-such-package" in err and len(err.splitlines()) == 1, err
    assert (set(os.listdir(deps)) if os.path.isdir(deps) else set()) == before
    assert not os.path.isdir(sandboxes) or os.listdir(sandboxes) == []
    p = rcli("sandbox", "run", "--runtime", "base", "--dependency", "jq", "--", "true", check=2)
    assert "Debian-based runtime" in p.stderr.decode()


def test_snapshot_build_uses_runtime_and_dependencies(rt_state, rcli):
    with tempfile.TemporaryDirectory(prefix="lsbtest-snapsrc-") as src:
        with open(os.path.join(src, "hello.txt"), "w") as fh:
            fh.write("hello\n")
        with open(os.path.join(src, "agentuity-snapshot.yaml"), "w") as fh:
            fh.write("version: 1\nruntime: debian:12\nname: lsbtest-deps\ndependencies:\n  - jq\n"
                     "files:\n  - hello.txt\n")
        rcli("sandbox", "snapshot", "build", src, timeout=600, check=0)
    p = rcli("sandbox", "run", "--snapshot", "lsbtest-deps", "--", "sh", "-c",
             "cat hello.txt; jq -n 3; cat /etc/debian_version", check=0)
    out = p.stdout.decode().split()
    assert out[:2] == ["hello", "3"] and out[2].startswith("12."), out


def test_offline(rt_state):
    """No network at all (the CLI in an empty network namespace): an unbuilt runtime fails at once
    with one line; built runtimes and cached dependency layers work."""
    def offline(*args):
        env = dict(os.environ, LOCALSB_HOME=rt_state, PYTHONPATH=ROOT)
        t0 = time.monotonic()
        p = subprocess.run(["unshare", "--net", "--", sys.executable, "-m", "localsb", *args], env=env,
                           capture_output=True, timeout=120, cwd=rt_state)
        return p, time.monotonic() - t0

    p, took = offline("sandbox", "run", "--runtime", "node:20", "--", "node", "--version")
    err = p.stderr.decode().strip()
    assert p.returncode == 6, (p.returncode, err)
    assert len(err.splitlines()) == 1 and "not reachable" in err and "node:20" in err, err
    assert took < 15, took
    assert not os.path.exists(os.path.join(_images(rt_state), "debian-13.v1"))
    assert not glob.glob(os.path.join(_images(rt_state), "*.building-*"))
    p, _ = offline("sandbox", "run", "--runtime", "python:3.14", "--", "python3", "-c", "print(6*7)")
    assert p.stdout == b"42\n", p.stderr
    p, _ = offline("sandbox", "run", "--dependency", "jq", "--", "jq", "-n", "6*7")
    assert p.stdout == b"42\n", p.stderr
    p, _ = offline("sandbox", "run", "--dependency", "jq", "--dependency", "file", "--", "true")
    assert p.returncode == 6 and "not reachable" in p.stderr.decode(), p.stderr
