"""Issue 2, speed: the sandbox lifecycle through the CLI and the engine, next to baselines run in
the same process and the same rounds.

    python3 -m bench.bench_lifecycle [--runs 30] [--warmup 2] [--out FILE] [--no-write] [--profile]

Measured (each a whole call, wall clock, p50/p95/p99 over --runs rounds):

    CLI      localsb --help | sb run -- true | sb create --json | sb exec <live id> -- true |
             sb delete <id> --confirm          (a new process per call: the console script beside
                                                the real interpreter, never a pyenv shim)
    engine   Engine.sandbox_run(['true']) | sandbox_create | sandbox_execute(live, ['true']) |
             sandbox_destroy                   (in this process: no interpreter start)
    baseline subprocess.run(['true']) | unshare -fpmnui --mount-proc true |
             bwrap --unshare-all --ro-bind / / true
    floors   python -S -c pass (bare interpreter) | python -c pass (with site and this machine's .pth
             files) | python -c 'import localsb.cli.main' (the CLI's own import cost on top)

Rounds are interleaved (each round times every operation once) so that load from other work on
the machine falls on ours and the baselines alike, and shuffled (a new seeded random order each
round) so that no operation always runs right after the same neighbour. `delete` removes a
sandbox a `create` made (if the shuffle put the delete first, it makes one, untimed): always a
fresh idle sandbox.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from bench import harness as H

TARGETS_MS = {"cli run -- true": 60, "cli exec -- true": 30, "cli create": 50, "cli --help": 80}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.bench_lifecycle", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--out", help="results file (default bench/results/lifecycle.json)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    ap.add_argument("--profile", action="store_true",
                    help="also profile the engine-level operations with cProfile and print the hot spots")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_lifecycle: needs root (namespaces, cgroups, btrfs)", file=sys.stderr)
        return 2
    for tool in ("unshare", "bwrap"):
        if shutil.which(tool) is None:
            print(f"bench_lifecycle: {tool} is missing (apt-get install -y "
                  f"{'bubblewrap' if tool == 'bwrap' else 'util-linux'})", file=sys.stderr)
            return 2
    H.byte_compile()
    with H.bench_state_dir() as sd:
        payload = run(sd, args)
    rows = payload["results"]
    print()
    H.print_table(rows, title=f"lifecycle: p50/p95/p99 over {args.runs} interleaved rounds")
    if not args.no_write:
        print("\nwrote", H.write_results("lifecycle", payload, args.out))
    return 0


def run(sd: str, args) -> dict:
    from localsb.api.specs import CreateSpec
    from localsb.engine import Engine

    env = dict(os.environ, LOCALSB_HOME=sd)
    cli = H.localsb_argv()
    py = os.path.realpath(sys.executable)
    devnull = H.devnull_fd()
    eng = Engine(sd)

    # the pool mount and the base image are made once per state dir: not what a call costs
    first = H.time_once(H.run_quiet, cli + ["sb", "run", "--", "true"], env)[0]
    cli_live = json.loads(H.run_quiet(cli + ["sb", "create", "--json"], env, capture=True).stdout)["sandboxId"]
    eng_live = eng.sandbox_create(CreateSpec())["sandboxId"]

    def cli_call(*a, capture=False):
        return lambda: H.run_quiet(cli + list(a), env, capture=capture)

    pending_cli, pending_eng = [], []

    def cli_create():
        out = H.run_quiet(cli + ["sb", "create", "--json"], env, capture=True).stdout
        pending_cli.append(json.loads(out)["sandboxId"])

    def cli_delete():
        if not pending_cli:     # the shuffle put delete before create in this round
            cli_create()
        t = time.perf_counter()
        H.run_quiet(cli + ["sb", "delete", pending_cli.pop(), "--confirm"], env)
        return time.perf_counter() - t

    def eng_run():
        r = eng.sandbox_run(CreateSpec(mode="oneshot", command=["true"]), None, devnull, devnull)
        assert r["exitCode"] == 0, r

    def eng_create():
        pending_eng.append(eng.sandbox_create(CreateSpec())["sandboxId"])

    def eng_exec():
        r = eng.sandbox_execute(eng_live, ["true"], stdout=devnull, stderr=devnull)
        assert r.get("exitCode") == 0, r

    def eng_delete():
        if not pending_eng:
            eng_create()
        t = time.perf_counter()
        eng.sandbox_destroy(pending_eng.pop())
        return time.perf_counter() - t

    rounds = H.Rounds()
    rounds.add("baseline subprocess.run(['true'])", lambda: subprocess.run(["true"], stdin=subprocess.DEVNULL,
                                                                           stdout=subprocess.DEVNULL))
    rounds.add("baseline unshare -fpmnui --mount-proc true",
               lambda: H.run_quiet(["unshare", "-fpmnui", "--mount-proc", "true"]))
    rounds.add("baseline bwrap --unshare-all --ro-bind / / true",
               lambda: H.run_quiet(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"]))
    rounds.add("python -S -c pass", lambda: H.run_quiet([py, "-S", "-c", "pass"]))
    rounds.add("python -c pass", lambda: H.run_quiet([py, "-c", "pass"]))
    rounds.add("python -c 'import localsb.cli.main'", lambda: H.run_quiet([py, "-c", "import localsb.cli.main"]))
    rounds.add("cli --help", cli_call("--help"))
    rounds.add("cli run -- true", cli_call("sb", "run", "--", "true"))
    rounds.add("cli create", cli_create)
    rounds.add("cli exec -- true", cli_call("sb", "exec", cli_live, "--", "true"))
    rounds.add("cli delete", cli_delete)
    rounds.add("engine run -- true", eng_run)
    rounds.add("engine create", eng_create)
    rounds.add("engine exec -- true", eng_exec)
    rounds.add("engine delete", eng_delete)
    samples = rounds.run(args.runs, args.warmup, shuffle=True)

    profiles = {}
    if args.profile:
        profiles = {name: H.profile(fn, 10) for name, fn in (
            ("engine run -- true", eng_run), ("engine exec -- true", eng_exec),
            ("engine create+delete", lambda: (eng_create(), eng_delete())))}

    for sid in (cli_live, eng_live, *pending_cli, *pending_eng):
        eng.sandbox_destroy(sid)
    eng.close()
    os.close(devnull)

    base = {k: H.percentile(samples[k], 50) for k in ("baseline unshare -fpmnui --mount-proc true",
                                                       "baseline bwrap --unshare-all --ro-bind / / true")}
    rows = []
    for name, s in samples.items():
        p50 = H.percentile(s, 50)
        extra = {}
        note = None
        if not name.startswith("baseline"):
            extra = {"x_unshare": round(p50 / base["baseline unshare -fpmnui --mount-proc true"], 2),
                     "x_bwrap": round(p50 / base["baseline bwrap --unshare-all --ro-bind / / true"], 2)}
            note = f"{extra['x_unshare']}x unshare, {extra['x_bwrap']}x bwrap"
        if rounds.errors[name]:
            extra["errors"] = rounds.errors[name]
            note = f"{note or ''} ({len(rounds.errors[name])} FAILED)".strip()
        rows.append(H.row(name, s, TARGETS_MS.get(name), note, **extra))
    return {"runs": args.runs, "warmup": args.warmup, "interleaved": True, "shuffled": True, "cli": cli,
            "first_cli_run_ms": round(first * 1000, 1), "results": rows,
            "notes": ["first_cli_run_ms: the first `run` in a fresh state dir (provisions the btrfs pool "
                      "image and the base image); not part of the samples"],
            **({"profiles": profiles} if profiles else {})}


if __name__ == "__main__":
    sys.exit(main())
