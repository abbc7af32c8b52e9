"""Root inside a sandbox is never root on the host (issue 14, items 1, 2, 6, 7).

Each test runs hostile-looking code in a real sandbox and checks the host from outside.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time

import pytest

from localsb.api.specs import CreateSpec, FileSpec
from localsb.linux import userns

RANGE_LO = userns.RANGE_START


def run(engine, *cmd, **spec):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_run(CreateSpec(mode="oneshot", command=list(cmd), **spec), None, out, err)
    return r, out.getvalue().decode(), err.getvalue().decode()


def ex(engine, sid, *cmd):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_execute(sid, list(cmd), stdout=out, stderr=err)
    return r, out.getvalue().decode(), err.getvalue().decode()


def uid_map(text):
    inside, outside, count = (int(x) for x in text.split())
    return inside, outside, count


# item 1: host sysctls ------------------------------------------------------------------------------
def test_core_pattern_cannot_be_pointed_at_a_sandbox_file(engine):
    """The end-to-end host-root exploit: a script in the sandbox's /usr, core_pattern pointed at
    its host path, a crash. The write must fail and the host's value must not change."""
    with open("/proc/sys/kernel/core_pattern") as fh:
        before = fh.read()
    marker = f"/tmp/lsb-core-{os.getpid()}"
    try:
        script = (f"printf '#!/bin/sh\\ntouch {marker}\\n' > /usr/local/bin/pwn; chmod +x /usr/local/bin/pwn; "
                  "up=$(grep -o 'upperdir=[^,]*' /proc/self/mountinfo | head -1 | cut -d= -f2); "
                  "echo \"|$up/usr/local/bin/pwn\" > /proc/sys/kernel/core_pattern && echo WRITABLE; "
                  "sh -c 'kill -SEGV $$'; true")
        r, out, err = run(engine, "sh", "-c", script)
        assert "WRITABLE" not in out
        assert "Read-only file system" in err or "Permission denied" in err
        time.sleep(0.2)
        assert not os.path.exists(marker)
        with open("/proc/sys/kernel/core_pattern") as fh:
            assert fh.read() == before
    finally:
        with open("/proc/sys/kernel/core_pattern") as fh:
            if fh.read() != before:
                with open("/proc/sys/kernel/core_pattern", "w") as w:
                    w.write(before)
        if os.path.exists(marker):
            os.unlink(marker)


def test_no_proc_sys_file_opens_for_writing(engine):
    """A walk of every /proc/sys file inside: none opens for writing (opened, never written:
    some knobs act on any write, e.g. vm/drop_caches), nor /proc/sysrq-trigger or /proc/irq."""
    code = r"""
import os
bad = []
for top in ('/proc/sys', '/proc/irq', '/proc/sysrq-trigger', '/proc/bus', '/proc/fs'):
    paths = [top] if not os.path.isdir(top) else [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs]
    for p in paths:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        os.close(fd)
        bad.append(p)
print(len(bad)); print('\n'.join(bad[:20]))
"""
    r, out, err = run(engine, "python3", "-c", code)
    assert r["exitCode"] == 0, err
    assert out.splitlines()[0] == "0", out


# item 7: leaks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/slabinfo",
                                  "/proc/vmallocinfo", "/proc/kcore", "/proc/sched_debug", "/proc/kallsyms"])
def test_host_wide_proc_files_are_masked(engine, path):
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this kernel")
    r, out, err = run(engine, "sh", "-c", f"head -c 200 {path} | wc -c")
    assert out.strip() == "0", (path, out, err)


def test_mountinfo_names_no_host_path(engine, state_dir):
    r, out, _ = run(engine, "sh", "-c", "cat /proc/self/mountinfo /proc/mounts; cat /proc/1/mountinfo")
    assert state_dir not in out
    assert "/pool/" not in out and "lsbtest" not in out and "/var/lib/localsb" not in out
    assert "sandboxes/" not in out


def test_pid1_and_waiters_hold_no_capability(engine):
    sid = engine.sandbox_create(CreateSpec(mode="interactive"))["sandboxId"]
    try:
        r, out, _ = ex(engine, sid, "sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd)' /proc/1/status")
        caps = dict(line.split(":") for line in out.strip().splitlines())
        assert all(int(v, 16) == 0 for v in caps.values()), caps
        # the waiter forked ahead for the next exec: on the host, a child of the supervisor in the
        # sandbox's user namespace, holding at most what a command gets
        row = engine.store.one("SELECT * FROM sandboxes WHERE id=?", sid)
        init_ns = os.readlink(f"/proc/{row['init_pid']}/ns/user")
        from localsb.linux import caps as C
        keep = C.keep_mask()
        deadline = time.monotonic() + 5
        waiters = []
        while time.monotonic() < deadline and not waiters:
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == row["init_pid"]:
                    continue
                try:
                    if os.readlink(f"/proc/{pid}/ns/user") != init_ns:
                        continue
                    with open(f"/proc/{pid}/status") as fh:
                        st = fh.read()
                except OSError:
                    continue
                if re.search(r"^PPid:\s+%d$" % row["supervisor_pid"], st, re.M):
                    waiters.append(st)
            time.sleep(0.1)
        assert waiters, "no ready waiter found"
        for st in waiters:
            eff = int(re.search(r"^CapEff:\s+(\w+)", st, re.M).group(1), 16)
            bnd = int(re.search(r"^CapBnd:\s+(\w+)", st, re.M).group(1), 16)
            assert eff & ~keep == 0 and bnd & ~keep == 0, (hex(eff), hex(bnd))
            assert re.search(r"^Uid:\s+(\d+)", st, re.M).group(1) != "0"
    finally:
        engine.sandbox_destroy(sid)


# item 2 and the id ranges ---------------------------------------------------------------------------
def test_root_inside_is_an_unprivileged_host_range(engine):
    r, out, _ = run(engine, "sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    lines = out.splitlines()
    assert lines[0] == "0"
    for line in lines[1:3]:
        inside, outside, count = uid_map(line)
        assert inside == 0 and count == userns.RANGE_SIZE
        assert outside >= RANGE_LO          # host uid 0 (and every host user) is mapped into no sandbox


def test_file_made_by_root_inside_is_owned_by_the_range_on_the_host(engine):
    sid = engine.sandbox_create(CreateSpec(mode="interactive"))["sandboxId"]
    try:
        r, out, _ = ex(engine, sid, "sh", "-c", "cat /proc/self/uid_map; cp /usr/bin/id /var/tmp/x; "
                       "chmod 4755 /var/tmp/x; mkdir -p /usr/local/lsb; touch /usr/local/lsb/f /home/agentuity/g;"
                       " chown 1000:1000 /home/agentuity/g")
        assert r["exitCode"] == 0
        base = uid_map(out.splitlines()[0])[1]
        vol = engine.store.one("SELECT volume FROM sandboxes WHERE id=?", sid)["volume"]
        x = os.stat(os.path.join(vol, "upper/var/tmp/x"))
        assert (x.st_uid, x.st_gid) == (base, base) and x.st_mode & 0o4000
        assert os.stat(os.path.join(vol, "usr.upper/local/lsb/f")).st_uid == base
        assert os.stat(os.path.join(vol, "upper/home/agentuity/g")).st_uid == base + 1000
        # run as an unprivileged host user, the setuid file gives that range's id, never root
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            os.path.join(vol, "upper/var/tmp/x"), "-u"], capture_output=True, text=True)
        assert p.stdout.strip() != "0"
        # the host's /usr is untouched, and what the sandbox sees of it is its own root's
        assert not os.path.exists("/usr/local/lsb")
        r, out, _ = ex(engine, sid, "stat", "-c", "%u %g", "/usr/bin/id")
        assert out.strip() == "0 0"
    finally:
        engine.sandbox_destroy(sid)


def test_two_live_sandboxes_have_disjoint_ranges(engine):
    ids = [engine.sandbox_create(CreateSpec(mode="interactive"))["sandboxId"] for _ in range(2)]
    try:
        bases = []
        for sid in ids:
            _, out, _ = ex(engine, sid, "cat", "/proc/self/uid_map")
            bases.append(uid_map(out)[1])
        a, b = sorted(bases)
        assert b - a >= userns.RANGE_SIZE
        # and they cannot signal each other: the other's processes are not even visible
        _, out, _ = ex(engine, ids[0], "sh", "-c", "ls /proc | grep -cE '^[0-9]+$'")
        assert int(out) <= 6
    finally:
        for sid in ids:
            engine.sandbox_destroy(sid)


def test_range_is_released_when_the_sandbox_ends(engine):
    r, out, _ = run(engine, "cat", "/proc/self/uid_map")
    base = uid_map(out)[1]
    rng = userns.reserve_base(base)     # free again: the run is over
    rng.close()


# item 4 (in part): new namespaces from inside ---------------------------------------------------------
def test_user_namespaces_from_inside_get_nothing(engine):
    code = ("import ctypes,os\nlibc=ctypes.CDLL(None,use_errno=True)\n"
            "rc=libc.unshare(0x10000000)\nprint('unshare', rc, ctypes.get_errno())\n")
    r, out, _ = run(engine, "python3", "-c", code)
    assert "unshare -1" in out


# item 6: disk and default limits ----------------------------------------------------------------------
def test_subvolume_create_inside_is_refused(engine):
    """btrfs subvolumes made inside escaped the --disk qgroup: the sandbox's files are on an overlay,
    which has no subvolume ioctls, and the btrfs tool's ioctls never reach the pool."""
    if subprocess.run(["which", "btrfs"], capture_output=True).returncode != 0:
        pytest.skip("btrfs-progs not installed")
    r, out, err = run(engine, "sh", "-c", "btrfs subvolume create /home/agentuity/sv && echo MADE",
                      disk="200Mi")
    assert "MADE" not in out


def test_disk_limit_holds(engine):
    r, out, err = run(engine, "sh", "-c", "dd if=/dev/zero of=/home/agentuity/big bs=1M count=300 2>&1; "
                      "ls -l /home/agentuity/big", disk="100Mi")
    size = int(out.split()[-5]) if out.split() else 0
    assert size < 150 * 1024 * 1024, out


def test_default_limits_apply_without_flags(engine):
    """No flags: memory, pids and disk are limited all the same (the cgroup files and the qgroup)."""
    from localsb.engine.common import default_limits
    from localsb.api.units import parse_size
    sid = engine.sandbox_create(CreateSpec(mode="interactive"))["sandboxId"]
    try:
        row = engine.store.one("SELECT * FROM sandboxes WHERE id=?", sid)
        paths = json.loads(row["cgroup"])["paths"]
        with open(os.path.join(paths["memory"], "memory.limit_in_bytes")) as fh:
            assert int(fh.read()) == parse_size(default_limits()["memory"], "memory")
        with open(os.path.join(paths["pids"], "pids.max")) as fh:
            assert fh.read().strip() == str(default_limits()["pids"])
        limits = json.loads(row["spec"])["limits"]
        assert limits["disk_bytes"] == parse_size(default_limits()["disk"], "disk") and limits["disk_enforced"]
        out = subprocess.run(["btrfs", "qgroup", "show", "-re", "--raw", row["volume"]], capture_output=True,
                             text=True).stdout
        assert str(limits["disk_bytes"]) in out, out
    finally:
        engine.sandbox_destroy(sid)


def test_default_disk_limit_stops_a_sandbox_filling_the_pool(engine, monkeypatch):
    monkeypatch.setenv("LOCALSB_DEFAULT_DISK", "64Mi")
    r, out, err = run(engine, "sh", "-c", "dd if=/dev/zero of=/home/agentuity/big bs=1M count=200 2>&1 | tail -1; "
                      "stat -c %s /home/agentuity/big")
    assert int(out.split()[-1]) <= 80 * 1024 * 1024, out


# everyday root work still runs -------------------------------------------------------------------------
def test_everyday_root_work_inside(engine):
    script = ("set -e; cd /home/agentuity; echo hi > f; chown 1000:1000 f; chmod u+s f; stat -c '%u %a' f; "
              "su agentuity -s /bin/sh -c 'id -u; touch /home/agentuity/by-agentuity'; "
              "stat -c %u /home/agentuity/by-agentuity; "
              "python3 -c \"import socket;s=socket.socket();s.bind(('0.0.0.0',80));print('bound80')\"; "
              "mkdir -p /usr/local/lib/x && echo ok > /usr/local/lib/x/y && cat /usr/local/lib/x/y")
    r, out, err = run(engine, "sh", "-c", script)
    assert r["exitCode"] == 0, (out, err)
    assert out.split() == ["1000", "4644", "1000", "1000", "bound80", "ok"], out


def test_files_given_under_tmp_are_visible(engine):
    r, out, _ = run(engine, "sh", "-c", "cat /tmp/x/a.txt; stat -c %a /tmp",
                    files=[FileSpec("/tmp/x/a.txt", b"from --file\n")])
    assert out.splitlines() == ["from --file", "1777"]


def test_checkpoint_restore_and_snapshot_keep_owners(engine):
    sid = engine.sandbox_create(CreateSpec(mode="interactive"))["sandboxId"]
    other = None
    try:
        ex(engine, sid, "sh", "-c", "echo one > /home/agentuity/a; chown 1000:1000 /home/agentuity/a; "
                                    "echo u > /usr/local/u")
        engine.checkpoint_create(sid, "c1")
        ex(engine, sid, "sh", "-c", "rm /home/agentuity/a; echo two > /home/agentuity/b")
        engine.checkpoint_restore(sid, "c1")
        _, out, _ = ex(engine, sid, "sh", "-c", "stat -c '%u %n' /home/agentuity/a; cat /usr/local/u; "
                                                "ls /home/agentuity")
        assert out.split() == ["1000", "/home/agentuity/a", "u", "a"], out
        snap = engine.snapshot_create(sid, name="own", tag="t1")
        other = engine.sandbox_create(CreateSpec(mode="interactive", snapshot=snap["snapshotId"]))["sandboxId"]
        _, out, _ = ex(engine, other, "sh", "-c", "stat -c '%u %n' /home/agentuity/a; cat /usr/local/u; "
                                                  "cat /proc/self/uid_map")
        lines = out.splitlines()
        assert lines[:2] == ["1000 /home/agentuity/a", "u"], out
        new_base = uid_map(lines[2])[1]
        vol = engine.store.one("SELECT volume FROM sandboxes WHERE id=?", other)["volume"]
        assert os.stat(os.path.join(vol, "upper/home/agentuity/a")).st_uid == new_base + 1000
    finally:
        engine.sandbox_destroy(sid)
        if other:
            engine.sandbox_destroy(other)


def test_host_without_user_namespaces_is_refused_and_nothing_is_left(engine, monkeypatch):
    from localsb.api import errors as E

    def no_userns(base, count=userns.RANGE_SIZE):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(userns, "make_userns", no_userns)
    with pytest.raises(E.NotSupported) as info:
        engine.sandbox_run(CreateSpec(mode="oneshot", command=["true"]), None, io.BytesIO(), io.BytesIO())
    assert "LOCALSB_INSECURE_NO_USERNS" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(E.NotSupported):
        engine.sandbox_create(CreateSpec(mode="interactive"))
    assert engine.store.one("SELECT COUNT(*) FROM sandboxes")[0] == 0
    vols = os.path.join(engine.pool.root, "sandboxes")
    assert not os.path.isdir(vols) or os.listdir(vols) == []


def test_fs_copies_both_ways_keep_owners_and_modes(engine, tmp_path):
    """Host-side writes land owned by the sandbox's range; archives out carry the owners inside."""
    import tarfile
    sid = engine.sandbox_create(CreateSpec(mode="interactive"))["sandboxId"]
    try:
        engine.fs_write_stream(sid, "/home/agentuity/in.txt", io.BytesIO(b"hello\n"))
        _, out, _ = ex(engine, sid, "sh", "-c", "stat -c '%u %g' /home/agentuity/in.txt; cat /home/agentuity/in.txt;"
                                                " mkdir /home/agentuity/d; echo x > /home/agentuity/d/f;"
                                                " chmod 640 /home/agentuity/d/f; chown 1000:1000 /home/agentuity/d/f")
        assert out.splitlines()[:2] == ["0 0", "hello"], out
        buf = io.BytesIO()
        engine.fs_download(sid, "/home/agentuity/d", "tar", buf)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tf:
            f = [m for m in tf.getmembers() if m.name.endswith("f")][0]
            assert (f.uid, f.gid, f.mode & 0o7777) == (1000, 1000, 0o640)
        buf.seek(0)
        engine.fs_upload(sid, "/home/agentuity/copy", "tar", buf)
        _, out, _ = ex(engine, sid, "sh", "-c", "find /home/agentuity/copy -type f | xargs stat -c '%a %n'")
        assert out.split()[0] == "640", out
        _, out, _ = ex(engine, sid, "cat", "/proc/self/uid_map")
        base = uid_map(out)[1]
        vol = engine.store.one("SELECT volume FROM sandboxes WHERE id=?", sid)["volume"]
        assert os.stat(os.path.join(vol, "upper/home/agentuity/in.txt")).st_uid == base
    finally:
        engine.sandbox_destroy(sid)
