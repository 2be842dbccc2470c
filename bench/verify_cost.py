"""What verifying a store costs on a re-run: hashing every file vs the per-machine hash cache.

    python bench/verify_cost.py [--mb 1024] [--chunks 20000] [--refcoco-gb 41] \
        [--refcoco-files 600000]

Writes a temporary tree shaped like a store (a few large shards and many small Zarr chunks),
then times, in the same run: `sha256_file` over every file (what `labels validate` does), the
`HashCache` on its first pass (hashes and records) and on a second pass (stat only: what a no-op
`build` re-run pays). Prints the rates, the ratio to the full hash, and both projected to a
RefCOCO-size store (default 41 GB in 600k files: ~20k SAM embeddings of 2 MB, ~570k relevance
chunks, and the Parquet tables), from the page cache and bounded by a cold disk's read rate.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.core.hashing import sha256_file
from pipeline.store.verify import CACHE_ENV, HashCache


def _tree(root: Path, mb: int, chunks: int) -> tuple[list[Path], int]:
    rng_block = os.urandom(1 << 20)
    files = []
    big = root / "encode"
    big.mkdir(parents=True)
    for i in range(max(1, mb // 64)):  # 64 MB shards
        path = big / f"part-{i:05d}.parquet"
        path.write_bytes(rng_block * 64)
        files.append(path)
    small = root / "attention" / "part-00000.zarr" / "relevance" / "c"
    small.mkdir(parents=True)
    for i in range(chunks):  # 16 KB chunks
        path = small / str(i)
        path.write_bytes(rng_block[(i % 60) * 16384 : (i % 60 + 1) * 16384])
        files.append(path)
    return files, sum(p.stat().st_size for p in files)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="MB of large shards")
    parser.add_argument("--chunks", type=int, default=20000, help="small chunk files")
    parser.add_argument("--refcoco-gb", type=float, default=41.0)
    parser.add_argument("--refcoco-files", type=int, default=600_000)
    parser.add_argument(
        "--disk-gbps", type=float, default=0.5, help="cold read rate of the store's disk (GB/s)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_ENV] = str(Path(tmp) / "cache")
        root = Path(tmp) / "store"
        files, total = _tree(root, args.mb, args.chunks)
        full = _timed(lambda: [sha256_file(p) for p in files])

        def cached() -> None:
            cache = HashCache(root)
            for p in files:
                cache.sha256(p)
            cache.save()

        first = _timed(cached)
        second = _timed(cached)
        big = [p for p in files if p.suffix == ".parquet"]
        small = [p for p in files if p.suffix != ".parquet"]
        hash_big = _timed(lambda: [sha256_file(p) for p in big])
        per_file = (full - hash_big) / max(1, len(small))  # open + read + hash of a 16 KB file
        rate = sum(p.stat().st_size for p in big) / hash_big
        stat_per_file = second / len(files)

    print(f"tree: {len(files)} files, {total / 1e9:.2f} GB")
    print(f"full sha256 (labels validate): {full:7.2f} s   1.00x")
    print(f"hash cache, first pass:        {first:7.2f} s   {first / full:.2f}x")
    print(f"hash cache, re-run (stat only):{second:7.2f} s   {second / full:.4f}x")
    print(f"rates: sha256 {rate / 1e9:.2f} GB/s on large files, {per_file * 1e6:.0f} µs per "
          f"small file; cached check {stat_per_file * 1e6:.1f} µs per file")  # fmt: skip
    gb, n = args.refcoco_gb, args.refcoco_files
    warm = gb * 1e9 / rate + n * per_file
    cold = max(warm, gb / args.disk_gbps)
    print(f"RefCOCO projection ({gb:.0f} GB, {n} files): full hash {warm / 60:.1f} min from the "
          f"page cache, {cold / 60:.1f} min from a {args.disk_gbps} GB/s disk; re-run with the "
          f"cache {n * stat_per_file:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
