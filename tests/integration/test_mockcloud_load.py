"""Issue 6: a bounded load run on loopback — 32 concurrent clients for 30 s doing status, get, list
and execute against mockcloud on the real engine — loses nothing and leaks nothing."""
from __future__ import annotations

import io
import os
import threading
import time

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec
from localsb.backends.cloud import CloudBackend
from mockcloud.testing import ServerProcess

pytestmark = pytest.mark.timeout(300)
CLIENTS = 32
SECONDS = float(os.environ.get("LOCALSB_LOAD_SECONDS", "30"))


def _sandbox_processes():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"load-marker-" in fh.read():
                        out.append(pid)
            except OSError:
                pass
    return out


def test_32_clients_lose_nothing_and_leak_nothing(state_dir, tmp_path):
    srv = ServerProcess(str(tmp_path / "mockcloud"), engine_state=state_dir).start()
    try:
        key = srv.key("load")
        env = srv.client_env(key)
        admin = CloudBackend.from_env(env)
        sids = [admin.sandbox_create(CreateSpec(name=f"load{i}"))["sandboxId"] for i in range(4)]
        stop = time.monotonic() + SECONDS
        counts, errors, executed = {}, [], {sid: [] for sid in sids}
        lock = threading.Lock()

        def client(k):
            be = CloudBackend.from_env(env)
            sid = sids[k % len(sids)]
            n = 0
            while time.monotonic() < stop:
                op = "execute" if k < len(sids) else ("status", "get", "list")[n % 3]
                try:
                    if op == "execute":
                        out = io.BytesIO()
                        r = be.sandbox_execute(sid, ["sh", "-c", f"echo load-marker-{k}-{n}"], stdout=out,
                                               stderr=io.BytesIO())
                        assert r["exitCode"] == 0 and out.getvalue() == f"load-marker-{k}-{n}\n".encode()
                        with lock:
                            executed[sid].append(r["executionId"])
                    elif op == "status":
                        assert be._c("GET", f"/sandbox/status/{sid}")["data"]["status"] in ("idle", "running")
                    elif op == "get":
                        assert be.sandbox_get(sid)["sandboxId"] == sid
                    else:
                        assert be.sandbox_list(limit=100)["total"] >= len(sids)
                    with lock:
                        counts[op] = counts.get(op, 0) + 1
                except (E.LocalsbError, AssertionError) as exc:
                    with lock:
                        errors.append((op, repr(exc)))
                n += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors, errors[:5]
        assert all(counts.get(op, 0) > 0 for op in ("execute", "status", "get", "list")), counts
        for sid in sids:   # every execution the clients saw is recorded, and nothing more
            recorded = {x["executionId"] for x in admin.execution_list(sid, limit=1000)["executions"]}
            assert recorded == set(executed[sid])
            assert admin.sandbox_get(sid)["executions"] == len(executed[sid])
        for sid in sids:
            admin.sandbox_destroy(sid)
        time.sleep(0.5)
        assert _sandbox_processes() == []
        print(f"\nload: {counts} in {SECONDS:.0f} s")
    finally:
        srv.stop()
