"""Issue 5, speed: what the execution history costs: exec with history recorded, `execution list`
and `events` on a sandbox with 10,000 records, `stats` over 1,000 sandboxes.

    python3 -m bench.bench_history [--runs 30] [--records 10000] [--sandboxes 1000] [--out FILE] [--no-write]

Rounds are interleaved and shuffled (each round runs the operations in a new seeded random order),
so that no operation always runs right after the same neighbour.

Steps (engine: methods of Engine in this process; cli: a `localsb` process per call):

1. exec -- true, engine and CLI, on a fresh sandbox: history as it is (every exec is recorded;
   the engine has no switch to turn recording off). Next to it, the recording alone: the SQL the
   supervisor runs per exec (INSERT + UPDATE in one transaction at start, UPDATE + UPDATE at the
   end, the env and final SELECTs) and the output files it creates, replayed in this process
   against the same database. It is a replay of supervisor.py's statements: if they change, this
   estimate must follow.
2. 10,000 executions and 10,000 events are inserted into that sandbox's rows of the `executions`
   and `events` tables directly (SQL, in one transaction), each a copy of a real recorded row with
   a new id and time: 10,000 real execs would take ~10 minutes here and test the same queries.
   The inserted executions get negative seq numbers (older than the real ones), as if recorded
   before. Then exec again into that sandbox and, in the same rounds, into a second sandbox
   without the records (does history size slow recording?); `execution list` (default limit 50,
   the CLI's maximum 100, the engine's 1000) and `events` (default 50 oldest first, and --reverse).
3. 1,000 sandbox rows (terminated, failed and deleted, copies of a real one-shot sandbox's row) are
   inserted into `sandboxes`; then `stats` and `list`.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

from bench import harness as H

TARGET_LIST_MS = 50


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.bench_history", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="samples per operation (default 30)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--records", type=int, default=10000, help="executions and events inserted (default 10000)")
    ap.add_argument("--sandboxes", type=int, default=1000, help="sandbox rows inserted (default 1000)")
    ap.add_argument("--out", help="results file (default bench/results/history.json)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    ap.add_argument("--profile", action="store_true", help="also cProfile the engine-level queries")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_history: needs root (namespaces, cgroups, btrfs)", file=sys.stderr)
        return 2
    H.byte_compile()
    with H.bench_state_dir() as sd:
        payload = run(sd, args)
    print()
    H.print_table(payload["results"], title=f"history: p50/p95/p99 over {args.runs} interleaved rounds")
    if not args.no_write:
        print("\nwrote", H.write_results("history", payload, args.out))
    return 0


def _insert_copies(store, table: str, template: dict, n: int, vary) -> None:
    """n copies of template into table in one transaction; vary(i, row) edits each copy."""
    keys = [k for k in template if not (table == "events" and k == "seq")]
    sql = f"INSERT INTO {table} ({','.join(keys)}) VALUES ({','.join('?' * len(keys))})"
    rows = []
    for i in range(n):
        r = dict(template)
        vary(i, r)
        rows.append(tuple(r[k] for k in keys))
    with store.tx() as c:
        c.executemany(sql, rows)


def run(sd: str, args) -> dict:
    from localsb.api.models import new_id
    from localsb.api.specs import CreateSpec
    from localsb.engine import Engine
    from localsb.engine.output import mark_done, out_paths
    from localsb.engine.store import dumps

    env = dict(os.environ, LOCALSB_HOME=sd)
    cli = H.localsb_argv()
    devnull = H.devnull_fd()
    eng = Engine(sd)
    results = []

    def cli_call(*a):
        return lambda: H.run_quiet(cli + list(a), env)

    sid = eng.sandbox_create(CreateSpec())["sandboxId"]          # gets the 10,000 records
    fresh = eng.sandbox_create(CreateSpec())["sandboxId"]        # keeps only its own few
    org = eng.store.one("SELECT org_id FROM sandboxes WHERE id=?", sid)["org_id"]

    def exec_in(sandbox):
        def go():
            r = eng.sandbox_execute(sandbox, ["true"], stdout=devnull, stderr=devnull)
            assert r.get("exitCode") == 0, r
        return go
    eng_exec = exec_in(sid)

    replayed = []

    def replay_recording():
        """supervisor.py's per-exec store writes and output files (see the module docstring)."""
        exec_id, t0 = new_id("execution"), time.time()
        with eng.store.tx() as c:
            c.execute("INSERT INTO executions (id,sandbox_id,org_id,type,status,command,started_at,created_at,seq) "
                      "VALUES (?,?,?,?,?,?,?,?,?)", (exec_id, sid, org, "exec", "running", dumps(["true"]), t0, t0,
                                                    -10 ** 9))
            c.execute("UPDATE sandboxes SET status=CASE WHEN status='idle' THEN 'running' ELSE status END, "
                      "executions=executions+1, updated_at=?, last_activity=? WHERE id=?", (t0, t0, sid))
        eng.store.one("SELECT env FROM sandboxes WHERE id=?", sid)
        so, se, done = out_paths(eng.out_dir(), exec_id)
        for p in (so, se):
            open(p, "ab", buffering=0).close()
        t1 = time.time()
        with eng.store.tx() as c:
            c.execute("UPDATE executions SET status=?, exit_code=?, error=?, completed_at=?, duration_ms=?, "
                      "output_truncated=? WHERE id=?", ("completed", 0, None, t1, 1, 0, exec_id))
            c.execute("UPDATE sandboxes SET status=CASE WHEN status='running' THEN 'idle' ELSE status END, "
                      "updated_at=?, last_activity=?, exit_code=? WHERE id=?", (t1, t1, 0, sid))
        mark_done(done)
        eng.store.one("SELECT * FROM executions WHERE id=?", exec_id)
        replayed.append(exec_id)

    def undo_replay():
        with eng.store.tx() as c:
            for x in replayed:
                c.execute("DELETE FROM executions WHERE id=?", (x,))
            c.execute("UPDATE sandboxes SET executions=executions-? WHERE id=?", (len(replayed), sid))
        for x in replayed:
            for p in out_paths(eng.out_dir(), x):
                os.unlink(p)
        replayed.clear()

    # 1. exec with history as is --------------------------------------------------------------
    rounds = H.Rounds()
    rounds.add("engine exec -- true (fresh history)", eng_exec)
    rounds.add("cli exec -- true (fresh history)", cli_call("sb", "exec", sid, "--", "true"))
    rounds.add("recording alone (replayed SQL + files)", replay_recording)
    rounds.run(args.runs, args.warmup, shuffle=True)
    undo_replay()
    results += _rows(rounds, {})

    # 2. 10,000 records ----------------------------------------------------------------------
    n_real = eng.store.one("SELECT COUNT(*) FROM executions WHERE sandbox_id=?", sid)[0]
    ex_tpl = dict(eng.store.one("SELECT * FROM executions WHERE sandbox_id=? AND status='completed' "
                                "ORDER BY seq DESC LIMIT 1", sid))
    ev_tpl = dict(eng.store.one("SELECT * FROM events WHERE sandbox_id=? ORDER BY seq LIMIT 1", sid))
    rng = random.Random(5)
    t_base = time.time() - 30 * 86400
    commands = [["true"], ["python3", "-c", "print(1)"], ["npm", "run", "build"], ["sh", "-c", "ls -la /home"]]
    event_types = ["create", "lifecycle:started", "pause", "resume", "checkpoint", "snapshot", "env"]

    def vary_exec(i, r):
        t = t_base + i * 60
        r.update(id=new_id("execution"), seq=i - args.records, created_at=t, started_at=t, completed_at=t + 0.5,
                 command=dumps(rng.choice(commands)), duration_ms=rng.randint(5, 5000))

    def vary_event(i, r):
        r.update(id=new_id("event"), type=rng.choice(event_types), created_at=t_base + i * 60,
                 payload=dumps({"n": i, "previousStatus": "idle"}))

    t0 = time.perf_counter()
    _insert_copies(eng.store, "executions", ex_tpl, args.records, vary_exec)
    _insert_copies(eng.store, "events", ev_tpl, args.records, vary_event)
    eng.store.run("UPDATE sandboxes SET executions=executions+? WHERE id=?", args.records, sid)
    insert_s = time.perf_counter() - t0
    counts = {"executions": eng.store.one("SELECT COUNT(*) FROM executions WHERE sandbox_id=?", sid)[0],
              "events": eng.store.one("SELECT COUNT(*) FROM events WHERE sandbox_id=?", sid)[0]}

    def check(fn, key, n):
        def go():
            r = fn()
            assert len(r[key]) == n, (key, len(r[key]))
        return go

    rounds = H.Rounds()
    # the same rounds exec into a sandbox without the records: only history size differs
    rounds.add("engine exec -- true (10k history)", eng_exec)
    rounds.add("engine exec -- true (no history, same rounds)", exec_in(fresh))
    rounds.add("cli exec -- true (10k history)", cli_call("sb", "exec", sid, "--", "true"))
    rounds.add("cli exec -- true (no history, same rounds)", cli_call("sb", "exec", fresh, "--", "true"))
    rounds.add("engine execution list (limit 50)", check(lambda: eng.execution_list(sid), "executions", 50))
    rounds.add("engine execution list (limit 1000)",
               check(lambda: eng.execution_list(sid, limit=1000), "executions", 1000))
    rounds.add("engine events (limit 50, oldest first)", check(lambda: eng.events_list(sid), "events", 50))
    rounds.add("engine events (limit 100, newest first)",
               check(lambda: eng.events_list(sid, limit=100, direction="desc"), "events", 100))
    rounds.add("cli execution list --json", cli_call("sb", "execution", "list", sid, "--json"))
    rounds.add("cli execution list --limit 100 --json",     # the CLI's maximum
               cli_call("sb", "execution", "list", sid, "--limit", "100", "--json"))
    rounds.add("cli events --json", cli_call("sb", "events", sid, "--json"))
    rounds.add("cli events --reverse --json", cli_call("sb", "events", sid, "--reverse", "--json"))
    rounds.add("cli execution list (table)", cli_call("sb", "execution", "list", sid))
    rounds.add("cli --help", cli_call("--help"))
    rounds.run(args.runs, args.warmup, shuffle=True)
    targets = {k: TARGET_LIST_MS for k in rounds.samples if "execution list" in k or "events" in k}
    results += _rows(rounds, targets)

    # 3. 1,000 sandboxes -----------------------------------------------------------------------
    r = eng.sandbox_run(CreateSpec(mode="oneshot", command=["true"]), None, devnull, devnull)
    sb_tpl = dict(eng.store.one("SELECT * FROM sandboxes WHERE id=?", r["sandboxId"]))
    statuses = ["terminated"] * 7 + ["failed"] * 1 + ["deleted"] * 2

    def vary_sandbox(i, row):
        t = t_base + i * 600
        row.update(id=new_id("sandbox"), status=rng.choice(statuses), created_at=t, updated_at=t + 1,
                   terminated_at=t + 1, last_activity=t, cpu_time_ms=rng.randint(1, 10000),
                   memory_byte_sec=rng.randint(10 ** 6, 10 ** 10), executions=rng.randint(1, 20),
                   exit_code=0, volume=None, cgroup=None, owner_pid=None, owner_start=None)

    _insert_copies(eng.store, "sandboxes", sb_tpl, args.sandboxes, vary_sandbox)
    n_sandboxes = eng.store.one("SELECT COUNT(*) FROM sandboxes")[0]
    rounds = H.Rounds()
    rounds.add("engine stats", lambda: eng.stats())
    rounds.add("engine list (limit 50)", lambda: eng.sandbox_list())
    rounds.add("cli stats --json", cli_call("sb", "stats", "--json"))
    rounds.add("cli list --json", cli_call("sb", "list", "--json"))
    rounds.run(args.runs, args.warmup, shuffle=True)
    results += _rows(rounds, {})

    profiles = {}
    if args.profile:
        profiles = {"engine execution list (limit 1000)": H.profile(lambda: eng.execution_list(sid, limit=1000), 10),
                    "engine stats": H.profile(lambda: eng.stats(), 10)}
    eng.sandbox_destroy(sid)
    eng.sandbox_destroy(fresh)
    eng.close()
    os.close(devnull)
    return {"runs": args.runs, "warmup": args.warmup, "interleaved": True, "shuffled": True, "cli": cli,
            "records": {"inserted_executions": args.records, "inserted_events": args.records,
                        "real_executions_before_insert": n_real, "in_sandbox": counts,
                        "insert_seconds": round(insert_s, 2), "sandbox_rows": n_sandboxes,
                        "how": "inserted with SQL as copies of real rows (see bench_history.py docstring)"},
            "results": results, **({"profiles": profiles} if profiles else {})}


def _rows(rounds, targets) -> list[dict]:
    out = []
    for name, s in rounds.samples.items():
        extra, note = {}, None
        if rounds.errors[name]:
            extra["errors"] = rounds.errors[name]
            note = f"{len(rounds.errors[name])} FAILED"
        if s:
            out.append(H.row(name, s, targets.get(name), note, **extra))
    return out


if __name__ == "__main__":
    sys.exit(main())
