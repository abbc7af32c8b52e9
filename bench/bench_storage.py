"""Issue 3, speed: pause, resume, checkpoints and snapshots of a sandbox holding a large tree, next
to `cp -a` and `tar` of the same tree in the same run; and what unflushed (dirty) data costs a
checkpoint.

    python3 -m bench.bench_storage [--small] [--runs 10] [--baseline-runs 3] [--out FILE] [--no-write]

The tree: 500 MB in 30,000 files (--small: 50 MB in 3,000 files), 100 files per directory, two
directory levels; 1% of the files hold 40% of the bytes, the rest are 0..2x the average of the
remainder; content is random (incompressible), sliced from one random block. It is written by
this process straight into the sandbox's root (`<volume>/root/home/agentuity/tree`), which is
what a process inside the sandbox writing it would leave on the same btrfs subvolume, only
faster to make; then os.sync() so that the timed operations start with no unflushed writes.

Operations (engine: methods of Engine in this process; cli: a `localsb` process per call):

    pause / resume                 freeze and thaw the sandbox's cgroup
    checkpoint create              freeze, read-only btrfs snapshot, thaw
    checkpoint restore             to the first checkpoint (the whole tree): stop the sandbox's
                                   processes, replace the subvolume by a writable snapshot, new init
    snapshot create                read-only snapshot plus sizeBytes/fileCount (a walk of the tree)
    create --snapshot              a new sandbox from that snapshot (deleted again, untimed)

After every operation that deletes a subvolume (restore, the untimed delete after a create from a
snapshot), the bench commits the filesystem and waits (untimed) for btrfs's cleaner, so the next
sample starts from a quiet filesystem; how long that took is reported separately. Baselines, same tree, same pool
filesystem, --baseline-runs times each: `cp -a` (coreutils >= 9 reflinks on btrfs by default),
`cp -a --reflink=never` (a real copy), `tar -cf` to a file, `tar -xf` of that file.

Dirty data: for each size, that many MB are written into the sandbox (1 MB files, no fsync) and a
checkpoint is timed; then the same amount again and a plain sync(2) is timed, for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

from bench import harness as H

TARGETS_MS = {"engine pause": 5, "engine resume": 5, "engine checkpoint create": 30,
              "engine checkpoint restore": 30, "engine snapshot create": 30}
BLOCK = 8 << 20


def make_tree(dest: str, total_bytes: int, nfiles: int, seed: int = 42) -> dict:
    """Write `nfiles` files totalling `total_bytes` under dest (see the module docstring)."""
    rng = random.Random(seed)
    block = os.urandom(BLOCK)
    n_large = max(1, nfiles // 100)
    n_small = nfiles - n_large
    large_total = int(total_bytes * 0.4)
    small_avg = (total_bytes - large_total) / n_small
    sizes = [rng.randint(0, int(2 * small_avg)) for _ in range(n_small)]
    scale = (total_bytes - large_total) / max(1, sum(sizes))
    sizes = [int(s * scale) for s in sizes]
    sizes += [large_total // n_large] * n_large
    rng.shuffle(sizes)
    sizes[-1] += total_bytes - sum(sizes)
    dirs = set()
    written = 0
    for i, size in enumerate(sizes):
        d = os.path.join(dest, f"d{i // 10000:02d}", f"s{(i // 100) % 100:02d}")
        if d not in dirs:
            os.makedirs(d, exist_ok=True)
            dirs.add(d)
        size = min(size, BLOCK)
        off = rng.randint(0, BLOCK - size)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as fh:
            fh.write(block[off:off + size])
        written += size
    return {"files": len(sizes), "bytes": written, "dirs": len(dirs)}


def _times(x: float) -> str:
    return f"{x:.1f}x" if x < 10 else f"{round(x):,}x"


def dirty_kb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("Dirty:"):
                return int(line.split()[1])
    return -1


def write_dirty(dest: str, mb: int) -> None:
    os.makedirs(dest, exist_ok=True)
    chunk = os.urandom(1 << 20)
    for i in range(mb):
        with open(os.path.join(dest, f"dirty{i:04d}.bin"), "wb") as fh:
            fh.write(chunk)


def loop_dio(pool_root: str) -> str | None:
    """Direct I/O of the pool's loop device (0: its writes land in the backing file's page cache)."""
    with open("/proc/self/mounts") as fh:
        for line in fh:
            src, mnt = line.split()[:2]
            if mnt == pool_root and src.startswith("/dev/loop"):
                try:
                    with open(f"/sys/block/{os.path.basename(src)}/loop/dio") as f:
                        return f"{src} dio={f.read().strip()}"
                except OSError:
                    return src
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.bench_storage", description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="50 MB in 3,000 files instead of 500 MB in 30,000")
    ap.add_argument("--runs", type=int, default=10, help="samples per sandbox operation (default 10)")
    ap.add_argument("--baseline-runs", type=int, default=3, help="samples per cp/tar baseline (default 3)")
    ap.add_argument("--dirty-mb", default=None,
                    help="comma-separated dirty sizes in MB (default 0,16,64,256; --small: 0,4,16,64)")
    ap.add_argument("--out", help="results file (default bench/results/storage.json or storage-small.json)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    ap.add_argument("--profile", action="store_true", help="also cProfile the engine-level operations")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_storage: needs root (cgroups, btrfs)", file=sys.stderr)
        return 2
    H.byte_compile()
    with H.bench_state_dir() as sd:
        payload = run(sd, args)
    print()
    H.print_table(payload["results"], title=f"storage ({payload['tree']['files']} files, "
                  f"{payload['tree']['bytes'] >> 20} MB): p50 over {args.runs} runs "
                  f"({args.baseline_runs} for cp/tar)")
    print()
    H.print_table(payload["dirty"], title="checkpoint with unflushed data (p50 of 3)")
    if not args.no_write:
        name = "storage-small" if args.small else "storage"
        print("\nwrote", H.write_results(name, payload, args.out))
    return 0


def run(sd: str, args) -> dict:
    from localsb.api.specs import CreateSpec
    from localsb.engine import Engine
    from localsb.linux.storage import wait_deleted
    import btrfsutil

    total, nfiles = (50 << 20, 3000) if args.small else (500 << 20, 30000)
    dirty_sizes = [int(x) for x in (args.dirty_mb or ("0,4,16,64" if args.small else "0,16,64,256")).split(",")]
    env = dict(os.environ, LOCALSB_HOME=sd)
    cli = H.localsb_argv()
    eng = Engine(sd)
    phases = {}
    t_phase = [time.perf_counter()]

    def phase(name):
        now = time.perf_counter()
        phases[name] = round(now - t_phase[0], 1)
        t_phase[0] = now
        print(f"\n  [{name}: {phases[name]} s]", file=sys.stderr, flush=True)

    def cli_call(*a, capture=False):
        return H.run_quiet(cli + list(a), env, capture=capture)

    sid = eng.sandbox_create(CreateSpec())["sandboxId"]
    volume = eng.store.one("SELECT volume FROM sandboxes WHERE id=?", sid)["volume"]
    home = os.path.join(volume, "root", "home", "agentuity")
    tree = os.path.join(home, "tree")
    print(f"writing {nfiles} files, {total >> 20} MB into {tree} ...", file=sys.stderr)
    t0 = time.perf_counter()
    tree_info = make_tree(tree, total, nfiles)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    os.sync()
    tree_info.update(write_s=round(t_write, 2), sync_s=round(time.perf_counter() - t0, 2))
    # a few processes inside, so that freeze and restore have something to stop
    devnull = H.devnull_fd()

    def start_sleepers():
        eng.sandbox_execute(sid, ["sh", "-c", "for i in 1 2 3 4 5; do sleep 100000 >/dev/null 2>&1 & done"],
                            stdout=devnull, stderr=devnull)
    start_sleepers()
    eng.checkpoint_create(sid, "full")      # the restore target: the whole tree
    phase("setup")
    cleaner = []

    def settle():
        # btrfs cleans deleted subvolumes after a transaction commit, which by itself comes only
        # every 30 s (commit=30): commit now (BTRFS_IOC_SYNC), then wait for the cleaner
        t = time.perf_counter()
        btrfsutil.sync(eng.pool.root)
        wait_deleted(eng.pool, 120)
        cleaner.append(time.perf_counter() - t)

    samples: dict[str, list[float]] = {}
    errors: dict[str, list[str]] = {}
    counter = iter(range(10 ** 6))

    def timed(name, fn, setup=None, after=None):
        """One sample of fn (setup and after untimed); failures are recorded, not fatal."""
        samples.setdefault(name, [])
        errors.setdefault(name, [])
        try:
            arg = setup() if setup else None
            t = time.perf_counter()
            r = fn(arg) if setup else fn()
            dt = time.perf_counter() - t
            if after:
                after(r)
            samples[name].append(dt)
        except Exception as exc:  # noqa: BLE001 - a failed call is a result
            errors[name].append(str(exc))
            print(f"\n  {name}: FAILED: {exc}", file=sys.stderr)

    snaps = []

    def eng_snapshot():
        snaps.append(eng.snapshot_create(sid)["snapshotId"])

    def cli_snapshot():
        snaps.append(json.loads(cli_call("sb", "snapshot", "create", sid, "--json", capture=True).stdout)["snapshotId"])

    def destroy_and_settle(new_id):
        eng.sandbox_destroy(new_id)
        settle()

    def restore_after(_):
        settle()
        start_sleepers()    # restore ended every process; the next pause should have some to freeze

    for i in range(args.runs):
        print(f"\r  round {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
        timed("engine pause", lambda: eng.sandbox_pause(sid))
        timed("engine resume", lambda: eng.sandbox_resume(sid))
        timed("cli pause", lambda: cli_call("sb", "pause", sid))
        timed("cli resume", lambda: cli_call("sb", "resume", sid))
        timed("engine checkpoint create", lambda: eng.checkpoint_create(sid, f"e{next(counter)}"))
        timed("cli checkpoint create", lambda: cli_call("sb", "checkpoint", "create", sid, f"c{next(counter)}"))
        timed("engine snapshot create", eng_snapshot)
        timed("cli snapshot create", cli_snapshot)
        timed("engine create --snapshot", lambda: eng.sandbox_create(CreateSpec(snapshot=snaps[-1]))["sandboxId"],
              after=destroy_and_settle)
        timed("cli create --snapshot", lambda: json.loads(cli_call("sb", "create", "--snapshot", snaps[-1], "--json",
                                                                   capture=True).stdout)["sandboxId"],
              after=destroy_and_settle)
        timed("engine checkpoint restore", lambda: eng.checkpoint_restore(sid, "full"), after=restore_after)
        timed("cli checkpoint restore", lambda: cli_call("sb", "checkpoint", "restore", sid, "full"),
              after=restore_after)
    print(file=sys.stderr)
    restored_files = sum(len(f) for _, _, f in os.walk(tree))
    assert restored_files == tree_info["files"], (restored_files, tree_info)

    # what snapshot create spends on sizeBytes/fileCount: the walk of the snapshot's tree alone
    # (of the snapshot, not of the live root, whose /usr is an overlay mount of the host's /usr)
    snap_root = os.path.join(eng.store.one("SELECT volume FROM snapshots WHERE id=?", snaps[0])["volume"], "root")
    walk = [H.time_once(eng.pool.usage, snap_root)[0] for _ in range(3)]
    phase("sandbox operations")

    profiles = {}
    if args.profile:
        profiles = {
            "engine pause+resume": H.profile(lambda: (eng.sandbox_pause(sid), eng.sandbox_resume(sid)), 10),
            "engine checkpoint create": H.profile(lambda: eng.checkpoint_create(sid, f"p{next(counter)}"), 5),
            "engine snapshot create": H.profile(eng_snapshot, 3),
            "engine checkpoint restore": H.profile(lambda: (eng.checkpoint_restore(sid, "full"), settle()), 3),
        }

    # baselines on the same tree and filesystem ------------------------------------------------
    scratch = os.path.join(eng.pool.root, f"lsbbench-scratch-{os.getpid()}")
    os.makedirs(scratch)
    archive = os.path.join(scratch, "tree.tar")

    def sh(argv):
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def rm_and_sync(path):
        shutil.rmtree(path, ignore_errors=True)
        os.sync()

    for i in range(args.baseline_runs):
        print(f"\r  baseline round {i + 1}/{args.baseline_runs}", end="", file=sys.stderr, flush=True)
        dst = os.path.join(scratch, "copy")
        timed("baseline cp -a", lambda: sh(["cp", "-a", tree, dst]), after=lambda _: rm_and_sync(dst))
        timed("baseline cp -a --reflink=never", lambda: (sh(["cp", "-a", "--reflink=never", tree, dst]), os.sync()),
              after=lambda _: rm_and_sync(dst))
        timed("baseline tar -cf", lambda: sh(["tar", "-C", tree, "-cf", archive, "."]))
        os.makedirs(dst)
        timed("baseline tar -xf", lambda: sh(["tar", "-C", dst, "-xf", archive]), after=lambda _: rm_and_sync(dst))
        os.unlink(archive)
    print(file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
    phase("baselines")

    # dirty data -------------------------------------------------------------------------------
    dirty_rows = []
    ddir = os.path.join(home, "dirty")
    for mb in dirty_sizes:
        ck, sy, before = [], [], []
        for _ in range(3):
            write_dirty(ddir, mb)
            before.append(dirty_kb())
            ck.append(H.time_once(eng.checkpoint_create, sid, f"d{next(counter)}")[0])
            rm_and_sync(ddir)
            write_dirty(ddir, mb)
            sy.append(H.time_once(os.sync)[0])
            rm_and_sync(ddir)
        note = f"host Dirty before: {sorted(before)[1] >> 10} MB"
        dirty_rows.append(H.row(f"engine checkpoint create, {mb} MB dirty", ck, None, note, dirty_mb=mb))
        dirty_rows.append(H.row(f"sync(2) alone, {mb} MB dirty", sy, None, None, dirty_mb=mb))

    phase("dirty data")
    eng.sandbox_destroy(sid)
    for s in snaps:
        eng.snapshot_delete(s)
    pool_info = {"root": eng.pool.root, "driver": eng.pool.name, "loop": loop_dio(eng.pool.root)}
    eng.close()
    os.close(devnull)

    base = {k: H.percentile(samples[k], 50) for k in ("baseline cp -a", "baseline cp -a --reflink=never")
            if samples.get(k)}
    rows = []
    for name, s in samples.items():
        if not s:
            rows.append({"name": name, "n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None,
                         "target_ms": TARGETS_MS.get(name), "note": f"ALL FAILED: {errors[name][:1]}",
                         "errors": errors[name]})
            continue
        extra, note = {}, None
        if not name.startswith("baseline") and base:
            p50 = H.percentile(s, 50)
            extra = {f"faster_than_{k.split(' ', 1)[1].replace(' ', '_')}": round(v / p50, 1) for k, v in base.items()}
            note = ", ".join(f"{_times(v / p50)} faster than {k.split(' ', 1)[1]}" for k, v in base.items())
        if errors[name]:
            extra["errors"] = errors[name]
            note = f"{note or ''} ({len(errors[name])} FAILED)".strip()
        rows.append(H.row(name, s, TARGETS_MS.get(name), note, **extra))
    rows.append(H.row("diagnostic: usage walk of the tree", walk, None,
                      "what snapshot create spends on sizeBytes/fileCount"))
    if cleaner:
        rows.append(H.row("diagnostic: commit + btrfs cleaner after a delete", cleaner, None,
                          "untimed in the rows above (else a background cost)"))
    return {"runs": args.runs, "baseline_runs": args.baseline_runs, "small": bool(args.small), "cli": cli,
            "tree": tree_info, "pool": pool_info, "phases_s": phases, "results": rows, "dirty": dirty_rows,
            **({"profiles": profiles} if profiles else {})}


if __name__ == "__main__":
    sys.exit(main())
