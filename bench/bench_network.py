"""Issue 8, speed: --network, the --port gateway and SSH, next to their baselines, interleaved.

    python3 -m bench.bench_network [--runs 30] [--warmup 2] [--out FILE] [--no-write]

Measured (p50/p95/p99 over --runs rounds; each round times every operation once):

    create       Engine.sandbox_create() vs sandbox_create(network=True) (the delete after each is
                 untimed); target: --network adds <= 15 ms p50
    run          Engine.sandbox_run(['true']) vs the same with --network
    http         GET through the port gateway vs the same GET straight into the sandbox's netns
                 (a socket made there by setns, as the gateway makes it): a new connection per
                 request, and one kept-alive connection; target: the gateway adds <= 1 ms p50
    ssh          `ssh -p <gw> <id>@127.0.0.1 true` (OpenSSH client through the SSH gateway) and
                 `localsb cloud ssh <id> true` (the direct attach)

The server in the sandbox is a tiny keep-alive HTTP/1.1 responder, so that the figures are the
path's, not http.server's.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import harness as H

TARGETS_MS = {"create --network (extra over create)": 15, "http via gateway (extra over direct)": 1}

SERVER = r'''
import socket, threading
def serve(c):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            _, buf = buf.split(b"\r\n\r\n", 1)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 3000))
s.listen(128)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


class _NetnsConnection(http.client.HTTPConnection):
    """http.client over a socket made inside a sandbox's network namespace (the direct path)."""

    def __init__(self, pid, port, netns):
        super().__init__("127.0.0.1", port)
        self._pid, self._netns = pid, netns

    def connect(self):
        import socket
        s = self._netns.socket(self._pid)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect(("127.0.0.1", self.port))
        self.sock = s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.bench_network", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--out", help="results file (default bench/results/network.json)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_network: needs root (namespaces, cgroups, veth, nftables)", file=sys.stderr)
        return 2
    H.byte_compile()
    os.environ["LOCALSB_GATEWAY_PORT"] = "0"
    os.environ["LOCALSB_SSH_PORT"] = "0"
    with H.bench_state_dir() as sd:
        payload = run(sd, args)
    H.print_table(payload["results"], title=f"network: p50/p95/p99 over {args.runs} interleaved rounds")
    for line in payload["derived"]:
        print(line)
    if not args.no_write:
        print("\nwrote", H.write_results("network", payload, args.out))
    return 0


def run(sd: str, args) -> dict:
    from localsb.api.specs import CreateSpec
    from localsb.engine import Engine
    from localsb.linux.netns import NetnsSockets

    eng = Engine(sd)
    devnull = H.devnull_fd()
    eng.sandbox_run(CreateSpec(mode="oneshot", command=["true"]), None, devnull, devnull)  # pool + image

    # a port sandbox with the tiny server
    web = eng.sandbox_create(CreateSpec(port=3000, name="bench"))
    wid, url = web["sandboxId"], web["url"]
    eng.sandbox_execute(wid, ["sh", "-c", "cat > /tmp/srv.py <<'EOF'\n" + SERVER + "\nEOF\n"
                              "nohup python3 /tmp/srv.py >/dev/null 2>&1 &"], stdout=devnull, stderr=devnull)
    host = url.split("//", 1)[1]
    gw_port = int(host.rsplit(":", 1)[1])
    init_pid = eng.store.one("SELECT init_pid FROM sandboxes WHERE id=?", wid)["init_pid"]
    netns = NetnsSockets()
    deadline = time.monotonic() + 10
    while True:
        try:
            c = _NetnsConnection(init_pid, 3000, netns)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)

    def via_gateway():
        c = http.client.HTTPConnection("127.0.0.1", gw_port)
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"ok", r.status
        c.close()

    def direct():
        c = _NetnsConnection(init_pid, 3000, netns)
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"ok"
        c.close()

    kept_gw = http.client.HTTPConnection("127.0.0.1", gw_port)
    kept_direct = _NetnsConnection(init_pid, 3000, netns)

    def keepalive(conn, headers):
        def call():
            conn.request("GET", "/", headers=headers)
            r = conn.getresponse()
            assert r.read() == b"ok"
        return call

    def create(network):
        def call():
            t0 = time.perf_counter()
            sid = eng.sandbox_create(CreateSpec(network=network))["sandboxId"]
            dt = time.perf_counter() - t0
            eng.sandbox_destroy(sid)
            return dt
        return call

    def run_true(network):
        def call():
            r = eng.sandbox_run(CreateSpec(mode="oneshot", command=["true"], network=network), None, devnull, devnull)
            assert r["exitCode"] == 0, r
        return call

    # ssh: a key, the gateway, a live sandbox
    keydir = tempfile.mkdtemp(prefix="lsbbench-key-")
    key = os.path.join(keydir, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub") as fh:
        eng.ssh_key_add(fh.read())
    ssh_port = eng.ssh_key_list()["port"]
    ssh_argv = ["ssh", "-p", str(ssh_port), "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                f"{wid}@127.0.0.1", "true"]
    env = dict(os.environ, LOCALSB_HOME=sd)
    attach_argv = H.localsb_argv() + ["cloud", "ssh", wid, "true"]
    H.run_quiet(ssh_argv)  # the gateway's first connection imports the session code

    rounds = H.Rounds()
    rounds.add("create", create(False))
    rounds.add("create --network", create(True))
    rounds.add("run -- true", run_true(False))
    rounds.add("run --network -- true", run_true(True))
    rounds.add("http direct (new connection)", direct)
    rounds.add("http via gateway (new connection)", via_gateway)
    rounds.add("http direct (keep-alive)", keepalive(kept_direct, {}))
    rounds.add("http via gateway (keep-alive)", keepalive(kept_gw, {"Host": host}))
    rounds.add("ssh <id> true (OpenSSH via gateway)", lambda: H.run_quiet(ssh_argv))
    rounds.add("localsb cloud ssh <id> true (attach)", lambda: H.run_quiet(attach_argv, env))
    samples = rounds.run(args.runs, args.warmup)

    kept_gw.close()
    kept_direct.close()
    eng.sandbox_destroy(wid)
    shutil.rmtree(keydir, ignore_errors=True)
    os.close(devnull)
    eng.close()

    p50 = {k: H.percentile(v, 50) * 1000 for k, v in samples.items() if v}
    derived = []
    rows = []
    for name, s in samples.items():
        rows.append(H.row(name, s, None, f"{len(rounds.errors[name])} FAILED" if rounds.errors[name] else None))
    for label, a, b in (("create --network (extra over create)", "create --network", "create"),
                        ("run --network (extra over run)", "run --network -- true", "run -- true"),
                        ("http via gateway (extra over direct)", "http via gateway (new connection)",
                         "http direct (new connection)"),
                        ("http keep-alive via gateway (extra over direct)", "http via gateway (keep-alive)",
                         "http direct (keep-alive)")):
        if a in p50 and b in p50:
            extra = p50[a] - p50[b]
            target = TARGETS_MS.get(label)
            derived.append(f"{label}: {extra:.2f} ms p50" + (f" (target <= {target} ms: "
                                                              f"{'met' if extra <= target else 'MISSED'})"
                                                              if target else ""))
    return {"runs": args.runs, "warmup": args.warmup, "interleaved": True, "results": rows, "derived": derived,
            "p50_extra_ms": {line.split(":")[0]: line.split(": ")[1] for line in derived}}


if __name__ == "__main__":
    sys.exit(main())
