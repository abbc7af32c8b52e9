"""mockcloud under load: requests per second and p50/p99 latency at N concurrent keep-alive clients.

    python3 bench/bench_mockcloud.py [--ops status,get,list,execute] [--clients 32] [--duration 10]
                                     [--procs 4] [--engine real|memory] [--json]

Starts `mockcloud serve` (its own process) on loopback with a fresh state directory, makes a key
and one sandbox per client for the sandbox-bound operations, then drives each operation for
``--duration`` seconds from ``--procs`` client processes (``--clients`` connections in all, each a
loop of request -> full response). Operations:

  status   GET /sandbox/status/{id}
  get      GET /sandbox/{id}
  list     GET /cli/sandbox
  execute  POST /sandbox/{id}/execute {command:[true]} + GET /sandbox/execution/{eid}?wait=5m
           (one operation = the round trip to a completed execution; each client has its own
           sandbox, since a sandbox runs one execution at a time)

Every answer must be a 200 with success:true, else it counts as an error ("loses nothing").
At the end every sandbox is deleted and the state directory removed ("leaks nothing"). The
client processes share the machine's cores with the server: on a 2-core host the figures are a
floor. ``--engine real`` needs root (real sandboxes); ``memory`` uses the test fake.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _request(method: str, path: str, key: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _roundtrip(reader, writer, data: bytes) -> tuple[int, bytes]:
    writer.write(data)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return status, body
    return status, await reader.readexactly(length)


class Failed(Exception):
    pass


def _ok(status: int, body: bytes) -> dict:
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if status != 200 or not isinstance(obj, dict) or obj.get("success") is not True:
        raise Failed(f"{status} {body[:160]!r}")
    return obj


async def _client(host, port, key, op, sandbox_id, deadline, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if op == "status":
            req = _request("GET", f"/sandbox/status/{sandbox_id}", key)
        elif op == "get":
            req = _request("GET", f"/sandbox/{sandbox_id}", key)
        elif op == "list":
            req = _request("GET", "/cli/sandbox?limit=50", key)
        else:
            req = _request("POST", f"/sandbox/{sandbox_id}/execute", key, b'{"command":["true"]}')
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                obj = _ok(*await _roundtrip(reader, writer, req))
                if op == "execute":
                    eid = obj["data"]["executionId"]
                    while obj["data"]["status"] not in ("completed", "failed", "timeout", "cancelled"):
                        obj = _ok(*await _roundtrip(reader, writer, _request(
                            "GET", f"/sandbox/execution/{eid}?wait=5m", key)))
            except Failed as e:
                errors.append(str(e))
                continue
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


def _proc(args) -> tuple[list, list]:
    host, port, key, op, sandbox_ids, duration = args
    lat, errors = [], []

    async def main():
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(_client(host, port, key, op, sid, deadline, lat, errors) for sid in sandbox_ids))

    asyncio.run(main())
    return lat, errors


def run_op(url: str, key: str, op: str, sandbox_ids: list[str], duration: float, procs: int) -> dict:
    from urllib.parse import urlsplit
    u = urlsplit(url)
    groups = [sandbox_ids[i::procs] for i in range(procs)]
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(_proc, [(u.hostname, u.port, key, op, g, duration) for g in groups if g])
    wall = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r[0])
    all_errors = [e for r in results for e in r[1]]
    errors = len(all_errors)
    kinds: dict = {}
    for e in all_errors:
        kinds[e] = kinds.get(e, 0) + 1
    n = len(lat)

    def pct(p):
        return round(lat[min(n - 1, int(p * n))] * 1000, 2) if n else None

    return {"op": op, "clients": len(sandbox_ids), "requests": n, "errors": errors,
            "rps": round(n / duration, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if n else None, "wall_s": round(wall, 2),
            "error_kinds": sorted(kinds.items(), key=lambda kv: -kv[1])[:3]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ops", default="status,get,list,execute")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--engine", choices=("real", "memory"), default="real" if os.geteuid() == 0 else "memory")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from localsb.api.specs import CreateSpec
    from localsb.backends.cloud import CloudBackend
    from mockcloud.testing import ServerProcess

    work = tempfile.mkdtemp(prefix="lsbtest-bench-mc-", dir="/tmp")
    env = dict(os.environ)
    if args.engine == "memory":
        env["MOCKCLOUD_ENGINE"] = "tests.fakes.memory_engine:MemoryEngine"
    engine_state = os.path.join(work, "engine")
    srv = ServerProcess(os.path.join(work, "mockcloud"), engine_state=engine_state, env=env)
    results = []
    try:
        srv.start()
        key = srv.key("bench")
        be = CloudBackend.from_env(srv.client_env(key))
        sandbox_ids = [be.sandbox_create(CreateSpec())["sandboxId"] for _ in range(args.clients)]
        for op in args.ops.split(","):
            r = run_op(srv.url, key["key"], op.strip(), sandbox_ids, args.duration, args.procs)
            r["engine"] = args.engine
            results.append(r)
            if not args.json:
                print(f"{r['op']:8} {r['clients']:3} clients  {r['rps']:8.1f} req/s  p50 {r['p50_ms']} ms  "
                      f"p99 {r['p99_ms']} ms  errors {r['errors']}", flush=True)
                for text, count in r["error_kinds"]:
                    print(f"         {count} x {text}", flush=True)
        for sid in sandbox_ids:
            be.sandbox_destroy(sid)
        left = [s for s in be.sandbox_list(limit=100)["sandboxes"] if s["status"] not in ("deleted", "terminated")]
        if left:
            print(f"LEAK: {len(left)} sandboxes still live", file=sys.stderr)
    finally:
        srv.stop()
        if args.engine == "real":
            from tests.integration.conftest import teardown_state
            teardown_state(engine_state)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
