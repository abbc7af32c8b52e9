"""Issue 2: what a command sees inside a sandbox, and what it cannot do."""
from __future__ import annotations

import io
import os
import secrets
import socket
import time

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec, FileSpec


def run(engine, *cmd, **spec):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_run(CreateSpec(mode="oneshot", command=list(cmd), **spec), None, out, err)
    return r, out.getvalue().decode(), err.getvalue().decode()


def test_exit_code_passes_through_and_streams_stay_separate(engine):
    r, out, err = run(engine, "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert r["exitCode"] == 7
    assert out == "to-out\n"
    assert err == "to-err\n"


def test_pid1_is_init_and_only_sandbox_processes_are_visible(engine):
    r, out, _ = run(engine, "sh", "-c", "echo $$; ls /proc | grep -E '^[0-9]+$' | wc -l")
    pid, count = out.split()
    assert pid == "2"            # PID 1 is the sandbox's init, the command comes right after it
    assert int(count) <= 5       # init, sh, ls, grep, wc: never the host's hundreds


def test_hostname_cwd_home_and_host_files(engine, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    r, out, _ = run(engine, "sh", "-c", f"hostname; pwd; echo $HOME; cat {secret} 2>&1; cat /etc/shadow | head -1;"
                                      " ls /root /home")
    lines = out.splitlines()
    assert lines[0] == r["sandboxId"].replace("_", "-")
    assert lines[1] == "/home/agentuity"
    assert lines[2] == "/home/agentuity"
    assert "No such file" in lines[3]
    assert "$" not in lines[4] and "root:*:" in lines[4]  # the sandbox's own shadow, no host hashes
    assert socket.gethostname() not in out


def test_no_network_but_loopback(engine):
    r, out, _ = run(engine, "sh", "-c", "ls /sys/class/net; cat /proc/net/route | wc -l")
    assert out.split()[:1] == ["lo"] and len(out.split()) == 2
    assert out.split()[1] == "1"  # only the header line: no routes
    code = ("import socket,sys\ns=socket.socket();s.settimeout(2)\n"
            "try:\n s.connect(('192.0.2.2',22))\nexcept OSError as e:\n print('refused', e.errno)\n")
    r, out, _ = run(engine, "python3", "-c", code)
    assert out.startswith("refused")
    r, out, _ = run(engine, "python3", "-c", "import socket;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
                                           "c=socket.create_connection(s.getsockname());print('lo-ok')")
    assert out.strip() == "lo-ok"


def test_mount_modules_sys_and_raw_devices_are_refused(engine):
    script = ("mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED || echo mount-refused;"
              "echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo SYSWRITE || echo sys-refused;"
              "python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True);"
              " print(\"unshare-refused\" if l.unshare(0x20000)!=0 else \"UNSHARED\")';"
              "cat /dev/vda >/dev/null 2>&1 && echo DISK || echo disk-refused;"
              "insmod /nonexistent.ko 2>/dev/null; python3 -c 'import ctypes; l=ctypes.CDLL(None,use_errno=True);"
              " print(\"module-refused\" if l.syscall(313,0,b\"\",0)!=0 else \"MODULE\")'")
    r, out, _ = run(engine, "sh", "-c", script)
    assert out.split() == ["mount-refused", "sys-refused", "unshare-refused", "disk-refused", "module-refused"]


def test_timeout_kills_the_whole_tree_and_exits_124(engine):
    t = time.monotonic()
    # a duration no other process on the machine uses, so `ps` finds only ours
    marker = f"sleep {100 + secrets.randbelow(10**6) / 10**7:.7f}"
    r, out, _ = run(engine, "sh", "-c", f"{marker} & {marker} & echo started; wait", execution_timeout="1s")
    assert r["exitCode"] == 124
    assert time.monotonic() - t < 10
    assert out == "started\n"
    procs = os.popen("ps -eo args").read()
    assert marker not in procs


def test_env_and_files_arrive(engine):
    r, out, _ = run(engine, "sh", "-c", "echo $GREETING; cat notes/a.txt; cat /opt/b.bin | wc -c",
                    env={"GREETING": "hello=world"},
                    files=[FileSpec("notes/a.txt", b"file-a\n"), FileSpec("/opt/b.bin", b"\0" * 1000)])
    assert out.split("\n")[:3] == ["hello=world", "file-a", "1000"]


def test_memory_limit_oom_kills_inside_only(engine):
    r, out, err = run(engine, "python3", "-c", "x = bytearray(400*1024*1024); print('survived')", memory="64Mi")
    assert r["exitCode"] == 137
    assert "out of memory" in (r.get("error") or "")
    assert "survived" not in out
    row = engine.store.one("SELECT * FROM executions WHERE id=?", r["executionId"])
    assert row["status"] == "failed" and "out of memory" in row["error"]


def test_cpu_limit_caps_cpu_time(engine):
    code = ("import time,os\nt=time.time()\nwhile time.time()-t<1.5: pass\n"
            "u=os.times(); print(u.user+u.system)")
    r, out, _ = run(engine, "python3", "-c", code, cpu="200m")
    used = float(out.strip())
    assert used < 0.6, f"200m should give ~0.3 s of CPU in 1.5 s wall, got {used}"


def test_pids_limit_contains_a_fork_bomb(engine, monkeypatch):
    import localsb.engine.common as eng_mod
    monkeypatch.setattr(eng_mod, "DEFAULT_PIDS", 32)
    code = ("import os\nok = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        continue\n    if pid == 0:\n        import time; time.sleep(3); os._exit(0)\n"
            "    ok += 1\nprint(ok)")
    r, out, err = run(engine, "python3", "-c", code, execution_timeout="20s")
    assert 0 < int(out.split()[-1]) < 32


def test_disk_quota_stops_writes(engine):
    r, out, err = run(engine, "sh", "-c", "dd if=/dev/zero of=/home/agentuity/big bs=1M count=200 2>&1; sync; "
                                         "stat -c %s /home/agentuity/big", disk="50Mi")
    assert "Disk quota exceeded" in out
    assert int(out.split()[-1]) <= 51 * 1024 * 1024


def test_bad_input_creates_nothing(engine):
    before = engine.store.one("SELECT COUNT(*) FROM sandboxes")[0]
    for bad in (dict(memory="lots"), dict(cpu="fast"), dict(execution_timeout="soon"), dict(disk="-1")):
        with pytest.raises(E.ValidationError):
            run(engine, "true", **bad)
    with pytest.raises(E.ValidationError):
        engine.sandbox_run(CreateSpec(mode="oneshot", command=[]), None, None, None)
    with pytest.raises(E.RuntimeNotFound):
        run(engine, "true", runtime="cobol:1")
    assert engine.store.one("SELECT COUNT(*) FROM sandboxes")[0] == before
    vols = os.listdir(os.path.join(engine.pool.root, "sandboxes")) if os.path.isdir(
        os.path.join(engine.pool.root, "sandboxes")) else []
    assert vols == []


def test_init_memory_is_not_readable_from_inside(engine):
    r, out, _ = run(engine, "sh", "-c", "head -c 16 /proc/1/mem >/dev/null 2>&1 && echo READ || echo refused;"
                                      " cat /proc/1/environ >/dev/null 2>&1 && echo ENV || echo env-refused")
    assert out.split() == ["refused", "env-refused"]
