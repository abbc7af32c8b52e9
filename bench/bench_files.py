#!/usr/bin/env python3
"""Throughput of the sandbox file operations next to the plain tools, in the same run.

    python3 bench/bench_files.py [--size-mb 1024] [--files 20000] [--runs 3] [--dir DIR]

Data: one large file made of real binaries and libraries from /usr (compresses like a typical
build artefact) and a tree of ``--files`` files (sources from /usr/lib/python3*, a few dozen per
directory, mixed modes, 2% symlinks). A directory on the sandbox storage (btrfs pool) can be given
with --dir; the default is a temporary directory.

Each operation runs ``--runs`` times after one warm-up (the page cache is warm for both sides);
the table shows medians. ``ratio`` is baseline time / our time: 1.0 is as fast as the plain tool,
the target is >= 0.7. Operations and their baselines:

    cp in file      fs_write_file (stream into the root)       cp -a
    cp out file     fs_read to a local file                     cp -a
    cp in tree      fs_copy_in (tree, no archive)               cp -a
    cp out tree     fs_copy_out                                 cp -a
    download tgz    fs_download tar.gz (level 1)                tar cf - | gzip -1   and  tar czf
    upload tgz      fs_upload tar.gz                            tar xzf
    download zip    fs_download zip (level 1)                   zip -qry -1
    upload zip      fs_upload zip                               unzip -q
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from localsb.engine import files as F  # noqa: E402
from localsb.linux.rootfs_access import RootedFS  # noqa: E402


def _sources() -> list[bytes]:
    out = []
    for f in sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))[:4000]:
        try:
            with open(f, "rb") as fh:
                out.append(fh.read())
        except OSError:
            pass
    return out or [b"x" * 2000]


def make_big(path: str, size: int) -> None:
    blobs = []
    for f in sorted(glob.glob("/usr/bin/*") + glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")):
        if os.path.isfile(f) and not os.path.islink(f):
            try:
                with open(f, "rb") as fh:
                    blobs.append(fh.read())
            except OSError:
                pass
        if sum(map(len, blobs)) > 96 << 20:
            break
    data = b"".join(blobs) or os.urandom(1 << 20)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, len(data))
            fh.write(data[:n])
            left -= n


def make_tree(root: str, nfiles: int) -> int:
    srcs = _sources()
    modes = (0o644, 0o644, 0o644, 0o755, 0o600, 0o664)
    total = 0
    per_dir = 40
    for i in range(nfiles):
        d = os.path.join(root, f"pkg{i // (per_dir * 10):03d}", f"mod{(i // per_dir) % 10}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i:05d}.py")
        if i % 50 == 49:
            os.symlink(f"f{i - 1:05d}.py", p)
            continue
        data = srcs[i % len(srcs)]
        with open(p, "wb") as fh:
            fh.write(data)
        os.chmod(p, modes[i % len(modes)])
        total += len(data)
    return total


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timed_pair(ours, base, runs: int) -> tuple[float, float]:
    """Medians of ``runs`` timings of each, alternating ours and the baseline so that a load
    change on a shared machine hits both alike (one warm-up each first)."""
    ours()
    base()
    a, b = [], []
    for _ in range(runs):
        a.append(_once(ours))
        b.append(_once(base))
    return statistics.median(a), statistics.median(b)


def sh(cmd: str):
    return lambda: subprocess.run(cmd, shell=True, check=True)


def fresh(path: str):
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to put the data (default: $TMPDIR)")
    ap.add_argument("--btrfs", action="store_true",
                    help="put the sandbox root on a fresh loop-mounted btrfs (as the engine's "
                         "pool is), the local side in --dir; needs root")
    ap.add_argument("--only", default="", help="comma-separated operation names to run")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="lsbbench-files-", dir=args.dir)
    pool = None
    try:
        if args.btrfs:
            pool = work + ".pool"
            os.mkdir(pool)
            img = pool + ".img"
            with open(img, "wb") as fh:
                fh.truncate((args.size_mb * 4 + 4096) << 20)
            subprocess.run(["mkfs.btrfs", "-q", img], check=True, capture_output=True)
            subprocess.run(["mount", "-o", "loop", img, pool], check=True)
        run(work, pool or work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if pool:
            subprocess.run(["umount", pool], check=False)
            os.rmdir(pool)
            os.unlink(pool + ".img")


def run(work: str, sandbox_side: str, args) -> None:
    local = os.path.join(work, "local")
    root = os.path.join(sandbox_side, "root")
    os.makedirs(local)
    os.makedirs(os.path.join(root, "home/agentuity"))
    big = os.path.join(local, "big.bin")
    tree = os.path.join(local, "tree")
    os.makedirs(tree)
    size = args.size_mb << 20
    t = time.perf_counter()
    make_big(big, size)
    tree_bytes = make_tree(tree, args.files)
    print(f"# data: {args.size_mb} MiB file, {args.files} files / {tree_bytes / 1e6:.1f} MB tree;"
          f" local side {local}, sandbox root {root} (made in {time.perf_counter() - t:.1f}s);"
          f" medians of {args.runs} alternating runs", flush=True)
    rfs = RootedFS(root)
    sbx = os.path.join(root, "home/agentuity")
    tgz = os.path.join(local, "tree.tgz")
    zp = os.path.join(local, "tree.zip")
    bigtgz = os.path.join(local, "big.tgz")
    rows = []
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def row(name, ours, base, base_name, nbytes):
        if only and name not in only:
            return
        o, b = timed_pair(ours, base, args.runs)
        rows.append((name, o, b, base_name, nbytes))
        print(f"{name:<18} {o:8.2f}s {nbytes / o / 1e6:8.0f} MB/s   {base_name:<24} {b:8.2f}s   "
              f"ratio {b / o:5.2f}", flush=True)

    def ours_write_big():
        with open(big, "rb") as src:
            F.fs_write_file(rfs, "big.bin", src)

    def ours_read_big():
        with open(os.path.join(local, "big.out"), "wb") as out:
            F.fs_read(rfs, "big.bin", out)

    row("cp in file", ours_write_big,
        sh(f"cp -a {big} {sbx}/big.cp"), "cp -a", size)
    ours_write_big()
    row("cp out file", ours_read_big,
        sh(f"cp -a {sbx}/big.bin {local}/big.cp"), "cp -a", size)

    def ours_copy_in():
        fresh(os.path.join(sbx, "tree"))
        F.fs_copy_in(rfs, tree, "tree")

    def base_copy_in():
        fresh(os.path.join(sbx, "tree.cp"))
        subprocess.run(["cp", "-a", tree, os.path.join(sbx, "tree.cp")], check=True)

    row("cp in tree", ours_copy_in, base_copy_in, "cp -a", tree_bytes)
    ours_copy_in()

    def ours_copy_out():
        fresh(os.path.join(local, "tree.out"))
        F.fs_copy_out(rfs, "tree", os.path.join(local, "tree.out"))

    def base_copy_out():
        fresh(os.path.join(local, "tree.cp"))
        subprocess.run(["cp", "-a", os.path.join(sbx, "tree"), os.path.join(local, "tree.cp")],
                       check=True)

    row("cp out tree", ours_copy_out, base_copy_out, "cp -a", tree_bytes)

    def dl(fmt, dest, path="tree"):
        def go():
            with open(dest, "wb") as out:
                F.fs_download(rfs, path, fmt, out)
        return go

    def ul(src, path):
        def go():
            fresh(os.path.join(sbx, path))
            with open(src, "rb") as fh:
                F.fs_upload(rfs, path, "", fh)
        return go

    def untar(src, dest, cmd):
        def go():
            fresh(dest)
            os.makedirs(dest)
            subprocess.run(cmd.format(src=src, dest=dest), shell=True, check=True)
        return go

    row("download tgz", dl("tar.gz", tgz),
        sh(f"tar cf - -C {sbx}/tree . | gzip -1 > {local}/base.tgz"), "tar | gzip -1", tree_bytes)
    row("download tgz", dl("tar.gz", tgz),
        sh(f"tar czf {local}/base.tgz -C {sbx}/tree ."), "tar czf (gzip -6)", tree_bytes)
    dl("tar.gz", tgz)()
    row("upload tgz", ul(tgz, "up"),
        untar(tgz, f"{sbx}/up.base", "tar xzf {src} -C {dest}"), "tar xzf", tree_bytes)
    row("download zip", dl("zip", zp),
        sh(f"cd {sbx}/tree && rm -f {local}/base.zip && zip -qry -1 {local}/base.zip ."),
        "zip -qry -1", tree_bytes)
    dl("zip", zp)()
    row("upload zip", ul(zp, "upz"),
        untar(zp, f"{sbx}/upz.base", "unzip -q {src} -d {dest}"), "unzip -q", tree_bytes)
    os.makedirs(os.path.join(sbx, "bigdir"), exist_ok=True)
    os.replace(os.path.join(sbx, "big.bin"), os.path.join(sbx, "bigdir/big.bin"))
    row("download big tgz", dl("tar.gz", bigtgz, "bigdir"),
        sh(f"tar cf - -C {sbx}/bigdir . | gzip -1 > {local}/base.tgz"), "tar | gzip -1", size)
    dl("tar.gz", bigtgz, "bigdir")()
    row("upload big tgz", ul(bigtgz, "bigup"),
        untar(bigtgz, f"{sbx}/bigup.base", "tar xzf {src} -C {dest}"), "tar xzf", size)

    print()
    print(f"{'operation':<18} {'ours':>9} {'MB/s':>7}  {'baseline':<24} {'base':>9}  ratio")
    for name, o, b, bn, nb in rows:
        print(f"{name:<18} {o:8.2f}s {nb / o / 1e6:7.0f}  {bn:<24} {b:8.2f}s  {b / o:5.2f}"
              f"{'' if b / o >= 0.7 else '  < 0.7'}")
    rfs.close()


if __name__ == "__main__":
    main()
