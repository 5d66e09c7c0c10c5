"""Snapshot benchmark: LayerStore.capture against `tar -cf - . | zstd -T1 -3` on the same overlay upper.

Builds a ~200 MB tree of mixed files (many small ones, some medium and large, partly compressible, plus
symlinks, hard links, whiteouts and opaque dirs) in a tmpfs directory, then times in each round, alternating:

  baseline: tar -C upper -cf - . | zstd -T1 -3 -q -o out.tar.zst
  capture:  LayerStore.capture(upper)  (canonical tar + sha256 + zstd blob + the unpacked copy for overlayfs)

Reports medians, MB/s (of the upper's data) and the throughput ratio baseline_time / capture_time
(target >= 0.7). Each capture goes to a fresh store, so nothing is short-circuited by the digest.

    .venv/bin/python bench/bench_snapshot.py [--size-mb 200] [--rounds 5] [--dir /dev/shm/...] [--keep]
                                             [--threads -1] [--level 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shoal.runtime.layers import OPAQUE_XATTR, LayerStore

TARGET = 0.7
WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
         "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "import", "def", "return",
         "class", "self", "none", "true", "false", "int", "str", "bytes", "list", "dict", "path", "usr", "lib",
         "share", "include", "bin", "etc", "var", "debian", "python3", "package", "version", "depends",
         "description", "license"]


class Pools:
    """Content to slice files from: text (~3-4x with zstd -3), binary-ish (~1.5-2x) and random (1x)."""

    def __init__(self, rng: random.Random, size: int = 8 << 20) -> None:
        vocab = WORDS + ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz_", k=rng.randint(3, 12)))
                         for _ in range(3000)]
        words = rng.choices(vocab, k=size // 6)
        text = " ".join(f"{w}\n" if i % 11 == 0 else w for i, w in enumerate(words)).encode()
        self.text = (text * 2)[:size]
        # "binary": a skewed byte distribution, zero-heavy like executables
        table = bytes((0 if b < 96 else (b % 32 if b < 192 else b)) for b in range(256))
        self.binary = rng.randbytes(size).translate(table)
        self.random = rng.randbytes(size)

    def content(self, rng: random.Random, size: int) -> bytes:
        pool = rng.choices((self.text, self.binary, self.random), weights=(5, 3, 2))[0]
        if size >= len(pool):
            return (pool * (size // len(pool) + 1))[:size]
        start = rng.randrange(0, len(pool) - size)
        return pool[start:start + size]


def build_upper(upper: Path, size_mb: int, seed: int = 42) -> dict[str, int]:
    """A tree like the upper of an image VM: ~30% of bytes in small files, 30% medium, 40% large."""
    rng = random.Random(seed)
    pools = Pools(rng)
    total = size_mb << 20
    upper.mkdir(parents=True)
    dirs = [upper]
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "whiteouts": 0, "opaque": 0, "bytes": 0}
    for i in range(max(8, size_mb * 2)):
        parent = rng.choice(dirs)
        d = parent / f"dir{i:04d}-{rng.choice(WORDS)}"
        d.mkdir()
        dirs.append(d)
        counts["dirs"] += 1

    def write(path: Path, size: int) -> None:
        path.write_bytes(pools.content(rng, size))
        os.chmod(path, rng.choice((0o644, 0o644, 0o755, 0o600)))
        counts["files"] += 1
        counts["bytes"] += size

    budget = int(total * 0.3)
    n = 0
    while budget > 0:  # small: 100 B .. 32 KB, mostly a few KB
        size = min(int(rng.lognormvariate(8.3, 1.0)), 32 << 10)
        write(rng.choice(dirs) / f"small{n:06d}.{rng.choice(('py', 'txt', 'so', 'h', 'json'))}", size)
        budget -= size
        n += 1
    budget = int(total * 0.3)
    while budget > 0:  # medium: 64 KB .. 2 MB
        size = rng.randint(64 << 10, 2 << 20)
        write(rng.choice(dirs) / f"medium{n:06d}.bin", size)
        budget -= size
        n += 1
    budget = total - counts["bytes"]
    while budget > 0:  # large: 8 .. 32 MB
        size = min(rng.randint(8 << 20, 32 << 20), max(budget, 1 << 20))
        write(rng.choice(dirs) / f"large{n:06d}.img", size)
        budget -= size
        n += 1
    files = [p for p in upper.rglob("small*")]
    for i in range(max(20, size_mb)):
        target = rng.choice(files)
        link = rng.choice(dirs) / f"link{i:05d}"
        link.symlink_to(os.path.relpath(target, link.parent) if i % 2 else f"/usr/lib/{target.name}")
        counts["symlinks"] += 1
    for i in range(max(5, size_mb // 4)):
        os.link(rng.choice(files), rng.choice(dirs) / f"hard{i:05d}")
        counts["hardlinks"] += 1
    for i in range(max(20, size_mb * 2)):
        os.mknod(rng.choice(dirs) / f"deleted{i:05d}", 0o020000, os.makedev(0, 0))
        counts["whiteouts"] += 1
    for d in rng.sample(dirs[1:], k=min(len(dirs) - 1, max(2, size_mb // 20))):
        os.setxattr(d, OPAQUE_XATTR, b"y")
        counts["opaque"] += 1
    for excluded in ("tmp", "run"):
        (upper / excluded).mkdir()
        (upper / excluded / "junk").write_bytes(b"x" * 1000)
    return counts


def baseline(upper: Path, out: Path) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(f"tar -C '{upper}' -cf - . | zstd -T1 -3 -q -o '{out}'", shell=True, check=True)
    return time.perf_counter() - start


def capture(upper: Path, stores: Path, index: int, threads: int, level: int) -> tuple[float, int, int]:
    store = LayerStore(stores / f"store{index}" / "layers", threads=threads, compression_level=level)
    start = time.perf_counter()
    info = store.capture(upper)
    elapsed = time.perf_counter() - start
    return elapsed, info.size, store.blob(info.digest).stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to make the scratch dir (default /dev/shm; use a tmpfs: the root fs is slow)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    parser.add_argument("--threads", type=int, default=-1, help="zstd threads of the capture (-1 = one per CPU)")
    parser.add_argument("--level", type=int, default=3, help="zstd level of the capture")
    args = parser.parse_args()
    if shutil.which("zstd") is None:
        print("zstd is not installed (apt-get install zstd)", file=sys.stderr)
        return 2
    parent = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()))
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-snap-", dir=parent))
    try:
        upper = work / "upper"
        t0 = time.perf_counter()
        counts = build_upper(upper, args.size_mb)
        mb = counts["bytes"] / 1e6
        print(f"upper: {mb:.0f} MB in {counts['files']} files, {counts['dirs']} dirs, {counts['symlinks']} symlinks, "
              f"{counts['hardlinks']} hard links, {counts['whiteouts']} whiteouts, {counts['opaque']} opaque dirs "
              f"(built in {time.perf_counter() - t0:.1f} s)  cpus={os.cpu_count()}")
        stores = work / "stores"
        base_times: list[float] = []
        cap_times: list[float] = []
        sizes = (0, 0)
        for r in range(args.rounds + 1):  # round 0 warms up caches and is not counted
            b = baseline(upper, work / "baseline.tar.zst")
            c, tar_size, blob_size = capture(upper, stores, r, args.threads, args.level)
            shutil.rmtree(stores / f"store{r}")
            if r == 0:
                continue
            base_times.append(b)
            cap_times.append(c)
            sizes = (tar_size, blob_size)
            print(f"round {r}: baseline {b:.3f} s  capture {c:.3f} s  ratio {b / c:.2f}")
        bm, cm = statistics.median(base_times), statistics.median(cap_times)
        ratio = bm / cm
        base_size = (work / "baseline.tar.zst").stat().st_size
        label = f"capture (LayerStore, zstd -{args.level}, threads={args.threads}):"
        print(f"{'baseline (tar | zstd -T1 -3):':<44} median {bm:.3f} s  {mb / bm:.0f} MB/s  "
              f"-> {base_size / 1e6:.1f} MB")
        print(f"{label:<44} median {cm:.3f} s  {mb / cm:.0f} MB/s  -> {sizes[1] / 1e6:.1f} MB "
              f"(tar {sizes[0] / 1e6:.1f} MB) + unpacked copy")
        verdict = "OK" if ratio >= TARGET else "BELOW TARGET"
        print(f"throughput ratio baseline/capture = {ratio:.2f} (target >= {TARGET}) {verdict}")
        return 0 if ratio >= TARGET else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
