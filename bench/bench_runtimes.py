"""Issue 7, speed: runtime images (cold build time and size of each) and sandbox create from them,
next to `base`, and with a cached dependency layer.

    python3 -m bench.bench_runtimes [--runs 20] [--warmup 2] [--runtimes debian:12,bun:1,...]
                                    [--state DIR] [--out FILE] [--no-write]

1. Cold builds, in a fresh state directory (so: a fresh btrfs pool, nothing cached by localsb;
   the registries and any HTTP cache between them and this machine are as they are): each
   runtime in --runtimes, in order, through Engine.runtime_build. A runtime whose base is not
   built yet pays for it (python:3.14 pays for debian:sid; node:lts then reuses it), and the row
   says so. Sizes are what the image's root holds (apparent bytes); a derived image shares its
   parent's blocks, so "adds" (its size minus its parent's) is what it costs on disk.
2. Create, interleaved rounds: Engine.sandbox_create + destroy (destroy untimed) for base and
   each built runtime, and for debian:12 with the cached `--dependency jq` layer; plus the CLI's
   `run -- true` for base, debian:12 and the jq layer.

--state DIR reuses a state directory whose images are already built (the build rows then say
"reused"; the directory is left as it was). Without it everything runs in a throw-away
directory that is torn down at the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from bench import harness as H

DEFAULT_RUNTIMES = "debian:12,python:3.11,bun:1,python:3.14,node:lts,debian:13,node:20"
CREATE_TARGET_MS = 50


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.bench_runtimes", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed create rounds (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--runtimes", default=DEFAULT_RUNTIMES, help=f"to build, in order (default {DEFAULT_RUNTIMES})")
    ap.add_argument("--state", help="reuse this state directory (images built there are reused, nothing removed)")
    ap.add_argument("--out", help="results file (default bench/results/runtimes.json)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_runtimes: needs root (debootstrap, namespaces, cgroups, btrfs)", file=sys.stderr)
        return 2
    H.byte_compile()
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]
    if args.state:
        os.environ["LOCALSB_HOME"] = os.path.abspath(args.state)
        payload = run(os.path.abspath(args.state), names, args)
    else:
        with H.bench_state_dir() as sd:
            payload = run(sd, names, args)
    print()
    print_builds(payload["builds"])
    print()
    H.print_table(payload["results"], title=f"create: p50/p95/p99 over {args.runs} interleaved rounds")
    if not args.no_write:
        print("\nwrote", H.write_results("runtimes", payload, args.out))
    return 0


def print_builds(builds: list[dict]) -> None:
    print(f"{'runtime':12} {'build s':>8} {'own s':>7} {'size MB':>8} {'adds MB':>8} {'files':>7}  version / note")
    for b in builds:
        print(f"{b['name']:12} {b['wall_s']:8.1f} {b['own_s']:7.1f} {b['size_mb']:8.0f} {b['adds_mb']:8.0f} "
              f"{b['files']:7d}  {b['version']}{'  (' + b['note'] + ')' if b.get('note') else ''}")


def run(sd: str, names: list[str], args) -> dict:
    from localsb.api.specs import CreateSpec
    from localsb.engine import Engine, images, runtimes

    eng = Engine(sd)
    builds = []
    for name in names:
        chain = [r["name"] for r in runtimes.chain(name)]
        missing = [n for n in chain if not images.is_built(sd, n)]
        t0 = time.perf_counter()
        r = eng.runtime_build(name)
        wall = time.perf_counter() - t0
        info = images.image_info(r["image"])
        parent = runtimes.RECIPES[name]["build"].get("from")
        psize = images.image_info(images.image_path(eng.pool.root, parent)).get("sizeBytes", 0) if parent else 0
        note = "reused" if not missing else (f"includes {', '.join(m for m in missing if m != name)}"
                                             if len(missing) > 1 else None)
        builds.append({"name": name, "wall_s": round(wall, 1), "own_s": info.get("buildSeconds", 0.0),
                       "size_mb": round(info.get("sizeBytes", 0) / 1e6, 1),
                       "adds_mb": round((info.get("sizeBytes", 0) - psize) / 1e6, 1),
                       "files": info.get("files", 0), "version": info.get("version", ""), "note": note})
        print(f"  built {name} in {wall:.1f} s", file=sys.stderr)

    # the jq layer (its build is not a create: made once here, untimed)
    t0 = time.perf_counter()
    images.ensure_deps(eng.pool, "debian:12", ["jq"], log_dir=os.path.join(sd, "logs"))
    jq_build = time.perf_counter() - t0

    def create(**kw):
        def fn():
            t = time.perf_counter()
            sid = eng.sandbox_create(CreateSpec(**kw))["sandboxId"]
            dt = time.perf_counter() - t
            eng.sandbox_destroy(sid)
            return dt
        return fn

    cli = H.localsb_argv()
    env = dict(os.environ, LOCALSB_HOME=sd)
    rounds = H.Rounds()
    targets = {}
    rounds.add("engine create base", create())
    for name in ["debian:12"] + [n for n in names if n != "debian:12" and n in runtimes.BY_NAME]:
        if images.is_built(sd, name):
            rounds.add(f"engine create {name}", create(runtime=name))
            targets[f"engine create {name}"] = CREATE_TARGET_MS
    rounds.add("engine create --dependency jq (cached)", create(dependencies=["jq"]))
    targets["engine create --dependency jq (cached)"] = CREATE_TARGET_MS
    rounds.add("cli run base -- true", lambda: H.run_quiet(cli + ["sb", "run", "--", "true"], env))
    rounds.add("cli run debian:12 -- true",
               lambda: H.run_quiet(cli + ["sb", "run", "--runtime", "debian:12", "--", "true"], env))
    rounds.add("cli run --dependency jq -- true",
               lambda: H.run_quiet(cli + ["sb", "run", "--dependency", "jq", "--", "true"], env))
    samples = rounds.run(args.runs, args.warmup)
    eng.close()

    rows = []
    for name, s in samples.items():
        extra = {"errors": rounds.errors[name]} if rounds.errors[name] else {}
        rows.append(H.row(name, s, targets.get(name), f"{len(rounds.errors[name])} FAILED" if extra else None,
                          **extra))
    return {"runs": args.runs, "warmup": args.warmup, "interleaved": True, "builds": builds,
            "jq_layer_build_s": round(jq_build, 1), "results": rows,
            "notes": ["build s: wall time of Engine.runtime_build, parents not yet built included; own s: the "
                      "image's own step (image.json buildSeconds)",
                      "size MB: apparent bytes under the image's root; adds MB: minus its parent's (shared blocks)",
                      "engine create: CreateSpec → idle sandbox with its supervisor; destroy untimed"]}


if __name__ == "__main__":
    sys.exit(main())
