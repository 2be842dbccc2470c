"""Store layout: files and bytes of a label store, schema 2 (a Zarr chunk file per row) vs 3.

Builds the same small synthetic store twice, each in a subprocess: with the code of `--base` (a
checkout of the old layout, e.g. `git worktree add /tmp/base 26ed39a`) and with this tree. Counts
files and bytes (apparent, and allocated in file-system blocks) of each; then copies the new
store's row arrays (SAM embeddings, relevance maps) into the old layout (`chunks=(1, ...)`, what
`write_zarr` wrote before schema 3) and times reads of single random rows from both, in this run.

Projection to a RefCOCO-size store (the counts are arguments): the new layout's files are a
constant per shard (measured: files / shards), so files = shards × that + the per-stage records,
shards = sentences / ingest shard size; the old layout adds one chunk file per row of each row
array (per image: SAM embedding; per candidate: relevance; per sentence: sentence relevance).

    .venv/bin/python bench/store_layout.py --base /tmp/base-store
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
BUILD = """
import sys, json
from pathlib import Path
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
build("synthetic", Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]),
      InProcessExecutor())
"""
ROW_ARRAYS = {"sam_embedding": "image", "relevance": "candidate", "sentence_relevance": "sentence"}


def _build(tree: Path, data_root: Path, out: Path, params: dict) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    cmd = [sys.executable, "-c", BUILD, str(data_root), str(out), json.dumps(params)]
    subprocess.run(cmd, check=True, env=env, cwd=tree)
    return time.perf_counter() - start


def _count(store: Path) -> dict[str, int]:
    files = [p for p in store.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "allocated": sum(p.stat().st_blocks * 512 for p in files),
        "zarr_files": sum(1 for p in files if ".zarr" in p.as_posix()),
        "shards": len(list((store / "samples").glob("part-*.parquet"))),
        "records": len(list(store.glob("*/_stage.json"))) + 1,  # + manifest.json
    }


def _rows(store: Path) -> dict[str, int]:
    """Rows of each row array over the store's shards (its images, candidates, sentences)."""
    rows = dict.fromkeys(ROW_ARRAYS, 0)
    for group_path in store.glob("*/part-*.zarr"):
        group = zarr.open_group(str(group_path), mode="r")
        for name in ROW_ARRAYS:
            if name in group:
                rows[name] += group[name].shape[0]
    return rows


def _allocated(paths: list[Path]) -> int:
    return sum(p.stat().st_blocks * 512 for d in paths for p in d.rglob("*") if p.is_file())


def _row_reads(store: Path, scratch: Path, reads: int) -> dict[str, dict[str, float]]:
    """Seconds per single-row read, old layout vs new, of the same arrays (page cache warm)."""
    rng = np.random.default_rng(0)
    out = {}
    for name, table in (("sam_embedding", "encode"), ("relevance", "attention")):
        new_paths = sorted((store / table).glob("part-*.zarr"))
        old_paths = []
        for i, path in enumerate(new_paths):
            data = zarr.open_group(str(path), mode="r")[name][...]
            old = zarr.open_group(str(scratch / f"{table}-{i}.zarr"), mode="w", zarr_format=3)
            chunks = (1, *data.shape[1:]) if data.shape[0] else "auto"
            old.create_array(name, data=data, chunks=chunks)  # the schema-2 layout
            old_paths.append(scratch / f"{table}-{i}.zarr")
        timing = {}
        for layout, paths in (("old", old_paths), ("new", new_paths)):
            arrays = [zarr.open_group(str(p), mode="r")[name] for p in paths]
            arrays = [a for a in arrays if a.shape[0]]
            picks = [(int(rng.integers(len(arrays))), rng.random()) for _ in range(reads)]
            for a in arrays:  # warm both the same way: every row once
                for r in range(a.shape[0]):
                    a[r]
            start = time.perf_counter()
            for k, frac in picks:
                a = arrays[k]
                a[int(frac * a.shape[0])]
            timing[layout] = (time.perf_counter() - start) / reads
            timing[f"{layout}_allocated"] = _allocated([p / name for p in paths])
        out[name] = timing
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout of the old layout")
    parser.add_argument("--images", type=int, default=16, help="synthetic images to build")
    parser.add_argument("--shard-size", type=int, default=16, help="ingest.shard_size here")
    parser.add_argument("--reads", type=int, default=200, help="single-row reads per layout")
    parser.add_argument("--refcoco-sentences", type=int, default=142_210)
    parser.add_argument("--refcoco-images", type=int, default=19_994)
    parser.add_argument("--refcoco-candidates", type=int, default=178_000)
    parser.add_argument("--refcoco-shard-size", type=int, default=512, help="ingest.shard_size")
    args = parser.parse_args()

    from pipeline.core.config import from_section
    from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic

    params = {
        "synthetic": {"n_images": args.images, "seed": 3},
        "ingest": {"shard_size": args.shard_size},
        "phrases": {"max_candidates": 4},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_root = tmp / "synthetic"
        generate_synthetic(data_root, from_section(SyntheticConfig, params["synthetic"], "x"))
        seconds = {
            "old": _build(args.base, data_root, tmp / "old", params),
            "new": _build(REPO, data_root, tmp / "new", params),
        }
        counts = {layout: _count(tmp / layout) for layout in ("old", "new")}
        rows = _rows(tmp / "new")
        (tmp / "scratch").mkdir()
        reads = _row_reads(tmp / "new", tmp / "scratch", args.reads)

    print(f"small store: {args.images} images, shard_size {args.shard_size}; {rows}")
    for layout, c in counts.items():
        print(
            f"  {layout}: {c['files']} files ({c['zarr_files']} in Zarr), {c['shards']} shards, "
            f"{c['bytes'] / 1e6:.2f} MB apparent, {c['allocated'] / 1e6:.2f} MB allocated, "
            f"build {seconds[layout]:.1f} s"
        )
    new, old = counts["new"], counts["old"]
    shards = math.ceil(args.refcoco_sentences / args.refcoco_shard_size)
    refcoco_rows = {
        "sam_embedding": args.refcoco_images,
        "relevance": args.refcoco_candidates,
        "sentence_relevance": args.refcoco_sentences,
    }
    # files = shards × (files a shard) + one per row of each row array (old only) + records
    per_shard_new = (new["files"] - new["records"]) / new["shards"]
    per_shard_old = (old["files"] - old["records"] - sum(rows.values())) / old["shards"]
    projected_new = shards * per_shard_new + new["records"]
    projected_old = shards * per_shard_old + sum(refcoco_rows.values()) + old["records"]
    print(
        f"RefCOCO projection ({args.refcoco_sentences} sentences / shard_size "
        f"{args.refcoco_shard_size} = {shards} shards; {refcoco_rows}): new "
        f"{projected_new:,.0f} files ({per_shard_new:.1f} a shard); old {projected_old:,.0f} "
        f"files ({per_shard_old:.1f} a shard + one a row)"
    )
    for name, t in reads.items():
        per_row = refcoco_rows[name] / max(rows[name], 1)
        print(
            f"  single-row read of {name}: old {t['old'] * 1e3:.3f} ms, new {t['new'] * 1e3:.3f} "
            f"ms (new/old {t['new'] / t['old']:.2f}); allocated old {t['old_allocated'] / 1e6:.2f}"
            f" MB, new {t['new_allocated'] / 1e6:.2f} MB → RefCOCO ≈ old "
            f"{t['old_allocated'] * per_row / 1e9:.2f} GB, "
            f"new {t['new_allocated'] * per_row / 1e9:.2f} GB"
        )


if __name__ == "__main__":
    main()
