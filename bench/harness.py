"""Timing helpers shared by the benches: run an operation N times, p50/p95/p99, a table, JSON results,
and a throw-away state directory that is torn down whatever happens.

Percentiles interpolate linearly between order statistics (numpy's default). With 30 samples the
p99 is essentially the maximum: read it as "worst seen", not as a tail estimate.
"""
from __future__ import annotations

import compileall
import contextlib
import datetime
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench", "results")


def _loadavg() -> str | None:
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().strip()
    except OSError:
        return None


LOADAVG_AT_START = _loadavg()   # other work shares the machine: results say how busy it was


# statistics --------------------------------------------------------------------------------------
def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between the closest ranks."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples_s: list[float]) -> dict:
    """Seconds in, milliseconds out: n, p50, p95, p99, mean, min, max."""
    ms = [x * 1000.0 for x in samples_s]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p95_ms": round(percentile(ms, 95), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(sum(ms) / len(ms), 3),
            "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


# timing ------------------------------------------------------------------------------------------
def time_once(fn, *args, **kw) -> tuple[float, object]:
    """(seconds, result) of one call, on the monotonic high-resolution clock."""
    t0 = time.perf_counter()
    r = fn(*args, **kw)
    return time.perf_counter() - t0, r


def repeat(fn, n: int, warmup: int = 0, setup=None, teardown=None) -> list[float]:
    """Call fn() n times (after `warmup` untimed calls) and return the durations in seconds.

    setup() runs untimed before each call and its result is passed to fn; teardown(result) runs
    untimed after it (e.g. delete what a timed create made)."""
    out = []
    for i in range(warmup + n):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        r = fn(arg) if setup else fn()
        dt = time.perf_counter() - t0
        if teardown:
            teardown(r)
        if i >= warmup:
            out.append(dt)
    return out


class Rounds:
    """Interleaved measurement: each round times every registered operation once, in order.

    Other work shares this machine; interleaving spreads any slow period over all operations
    (ours and the baselines) instead of penalising whichever ran during it."""

    def __init__(self):
        self.ops: list[tuple[str, object]] = []
        self.samples: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, fn) -> None:
        """fn() is timed whole; if it returns a float, that float is the sample instead (for an
        operation whose untimed setup must run in the same call)."""
        self.ops.append((name, fn))
        self.samples[name] = []
        self.errors[name] = []

    def run(self, n: int, warmup: int = 2, progress: bool = True, shuffle: bool = False) -> dict[str, list[float]]:
        """shuffle: each round runs the operations in a new (seeded) random order, so that no
        operation always follows the same neighbour: what ran just before skews a sample (an
        in-process call right after another in-process call is measurably faster than right after
        a CLI process). Only for operations that do not depend on their order within a round."""
        import random
        rng = random.Random(1)
        for i in range(warmup + n):
            order = list(self.ops)
            if shuffle:
                rng.shuffle(order)
            for name, fn in order:
                t0 = time.perf_counter()
                try:
                    r = fn()
                except Exception as exc:  # noqa: BLE001 - a failed call is a result: count it, go on
                    self.errors[name].append(f"round {i + 1}: {exc}")
                    print(f"\n  {name}: FAILED: {exc}", file=sys.stderr)
                    continue
                dt = time.perf_counter() - t0
                if isinstance(r, float):
                    dt = r
                if i >= warmup:
                    self.samples[name].append(dt)
            if progress:
                print(f"\r  round {i + 1}/{warmup + n}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        return self.samples


# processes ---------------------------------------------------------------------------------------
def localsb_argv() -> list[str]:
    """The `localsb` console script beside the real interpreter, never a pyenv shim (a shim is a
    bash script that costs ~50 ms per call); else `python -m localsb` with that interpreter."""
    exe = os.path.realpath(sys.executable)
    script = os.path.join(os.path.dirname(exe), "localsb")
    if os.path.isfile(script) and os.access(script, os.X_OK) and "/shims/" not in script:
        return [script]
    return [exe, "-m", "localsb"]


def run_quiet(argv: list[str], env: dict | None = None, check: bool = True,
              capture: bool = False) -> subprocess.CompletedProcess:
    """Run argv with stdin and (unless capture) stdout/stderr on /dev/null; raise on failure."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode(errors='replace')[-800:]}")
    return p


def byte_compile() -> None:
    """This machine sets PYTHONDONTWRITEBYTECODE: without .pyc files every CLI call would compile
    the whole CLI from source, which is not what an installed localsb costs."""
    for pkg in ("localsb", "mockcloud"):
        compileall.compile_dir(os.path.join(REPO, pkg), quiet=1)


# state directory ---------------------------------------------------------------------------------
@contextlib.contextmanager
def bench_state_dir():
    """A fresh LOCALSB_HOME under /tmp/lsbbench-<random>; on exit every sandbox and snapshot in it
    is deleted through the engine, the pool is unmounted (close_pool) and the directory removed."""
    d = f"/tmp/lsbbench-{os.getpid()}-{secrets.token_hex(4)}"
    os.makedirs(d)
    old = os.environ.get("LOCALSB_HOME")
    os.environ["LOCALSB_HOME"] = d
    try:
        yield d
    finally:
        try:
            teardown_state_dir(d)
        finally:
            if old is None:
                os.environ.pop("LOCALSB_HOME", None)
            else:
                os.environ["LOCALSB_HOME"] = old


def teardown_state_dir(d: str) -> None:
    from localsb.engine import Engine
    try:
        e = Engine(d)
        live = ("creating", "idle", "running", "paused", "suspended", "stopping", "terminated", "failed")
        for r in e.store.all("SELECT id FROM sandboxes WHERE status IN (%s)" % ",".join("?" * len(live)), *live):
            try:
                e.sandbox_destroy(r["id"])
            except Exception as exc:  # noqa: BLE001 - go on with the rest; report it
                print(f"bench teardown: delete {r['id']}: {exc}", file=sys.stderr)
        for r in e.store.all("SELECT id FROM snapshots WHERE status='ready'"):
            try:
                e.snapshot_delete(r["id"])
            except Exception as exc:  # noqa: BLE001
                print(f"bench teardown: snapshot {r['id']}: {exc}", file=sys.stderr)
        e.close()
    finally:
        from localsb.linux.storage import close_pool
        try:
            close_pool(d)
        except Exception as exc:  # noqa: BLE001 - a busy pool goes lazily rather than leak
            print(f"bench teardown: close_pool: {exc}", file=sys.stderr)
            try:
                close_pool(d, force=True)
            except Exception:  # noqa: BLE001 - reported below
                pass
            pinned = _mount_holders(os.path.join(d, "pool"))
            if pinned:
                # Another process's mount namespace copied the pool mount when it was made (e.g.
                # an `unshare --mount` of other work on this machine). The loop device is
                # autoclear: it goes when that namespace does.
                print(f"bench teardown: the pool is still mounted in the mount namespace of pid(s) "
                      f"{', '.join(pinned)}; its loop device is released when they exit", file=sys.stderr)
        if any(m == os.path.join(d, "pool") for m in _own_mounts()):
            print(f"bench teardown: {d}/pool is still mounted here; leaving {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _own_mounts() -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [line.split()[1] for line in fh]


def _mount_holders(mountpoint: str) -> list[str]:
    """Pids whose mount namespace still has `mountpoint` (first pid per namespace)."""
    seen, out = set(), []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns in seen:
                continue
            with open(f"/proc/{pid}/mountinfo") as fh:
                if any(line.split()[4] == mountpoint for line in fh):
                    seen.add(ns)
                    out.append(pid)
        except OSError:
            continue
    return out


# reporting ---------------------------------------------------------------------------------------
def host_info() -> dict:
    def read(p):
        try:
            with open(p) as fh:
                return fh.read().strip()
        except OSError:
            return None
    cpu = None
    for line in (read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "loadavg_start": LOADAVG_AT_START, "loadavg": read("/proc/loadavg"),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def fmt_ms(v) -> str:
    if v is None:
        return "-"
    if v >= 10000:
        return f"{v / 1000:.1f}s"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def print_table(rows: list[dict], title: str | None = None, file=None) -> str:
    """rows: dicts with name, n, p50_ms, p95_ms, p99_ms and optional target_ms, note; returns the text."""
    cols = [("operation", "name"), ("n", "n"), ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"),
            ("p99 ms", "p99_ms"), ("target", "target_ms"), ("note", "note")]
    table = []
    for r in rows:
        line = []
        for _, k in cols:
            v = r.get(k)
            if k.endswith("_ms"):
                line.append(("≤ " + fmt_ms(v)) if k == "target_ms" and v is not None else fmt_ms(v))
            else:
                line.append("" if v is None else str(v))
        table.append(line)
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, (h, _) in enumerate(cols)]
    out = []
    if title:
        out.append(title)
    out.append("  ".join(h.ljust(w) if i in (0, 6) else h.rjust(w) for i, ((h, _), w) in enumerate(zip(cols, widths))))
    for t in table:
        out.append("  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))))
    text = "\n".join(s.rstrip() for s in out)
    print(text, file=file or sys.stdout, flush=True)
    return text


def markdown_table(rows: list[dict]) -> str:
    out = ["| operation | n | p50 ms | p95 ms | p99 ms | target | note |", "|---|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        t = r.get("target_ms")
        out.append(f"| {r['name']} | {r['n']} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p95_ms'])} | "
                   f"{fmt_ms(r['p99_ms'])} | {'≤ ' + fmt_ms(t) if t is not None else ''} | {r.get('note') or ''} |")
    return "\n".join(out)


def row(name: str, samples_s: list[float], target_ms: float | None = None, note: str | None = None,
        **extra) -> dict:
    d = {"name": name, **summarize(samples_s), "target_ms": target_ms}
    if target_ms is not None:
        d["meets_target"] = d["p50_ms"] <= target_ms
    if note:
        d["note"] = note
    d.update(extra)
    return d


def write_results(bench: str, payload: dict, out: str | None = None) -> str:
    """bench/results/<bench>.json (or `out`), with the host's description; returns the path."""
    path = out or os.path.join(RESULTS_DIR, f"{bench}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = {"bench": bench, "host": host_info(), **payload}
    with open(path + ".tmp", "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(path + ".tmp", path)
    return path


def devnull_fd() -> int:
    return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def profile(fn, n: int = 10, top: int = 15, sort: str = "cumulative") -> str:
    """Run fn() n times under cProfile; print and return the `top` entries (for a slow figure)."""
    import cProfile
    import io
    import pstats
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).strip_dirs().sort_stats(sort).print_stats(top)
    text = buf.getvalue()
    print(text, file=sys.stderr)
    return text


def _summary_markdown() -> str:
    """The tables of the README's Performance section, from bench/results/*.json."""
    out = []
    for name in ("lifecycle", "storage", "storage-small", "history"):
        path = os.path.join(RESULTS_DIR, f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            doc = json.load(fh)
        h = doc["host"]
        extra = ""
        if "tree" in doc:
            extra = f", tree {doc['tree']['files']:,} files / {doc['tree']['bytes'] >> 20} MB"
        load = h["loadavg"].split()[0]
        if h.get("loadavg_start"):
            load = f"{h['loadavg_start'].split()[0]} at start, {load} at end"
        out.append(f"### {name} ({h['date'][:10]}, {h['cpus']} CPUs, load average {load}{extra})\n")
        out.append(markdown_table(doc["results"]))
        if doc.get("dirty"):
            out.append("\nCheckpoint with unflushed data:\n")
            out.append(markdown_table(doc["dirty"]))
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(_summary_markdown())
