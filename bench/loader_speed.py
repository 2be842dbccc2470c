"""Trainer loader: samples/s per worker of today's loader (commit 26ed39a) against this one.

Both loaders run, in the same run, over the same rows (the small synthetic store the tests build,
built by each side's own code since each reads only its own schema version; or --store and
--old-store) and the same CLIP features, as the curriculum asks
for them: one `TrainingData.loader(samples, batch, workers, seed * 100_003 + epoch, True, True)`
per epoch (mask losses on: targets with masks, full SAM embeddings), every sample of --splits
(default train) of every subset. Each side runs in its own process (the old one with PYTHONPATH
at a checkout of the baseline commit, a temporary `git worktree` unless --base is given), with
num_workers 0 and 1.

Printed:
- samples/s per worker, the best of --rounds alternating runs of each side: steady state (first
  batch to last, so a worker's start-up is not counted; the old loader also starts a new worker
  every epoch) and all-in, old vs new, ratio;
- the same batches: sample ids of every batch of every epoch compared; the tensors of the first
  epoch compared (features exactly after float32 conversion; target masks by max difference and
  by the IoU of the thresholded masks);
- peak RSS of each side (its process, and its worker processes);
- the one-time cost of the new target cache;
- projections: host bytes of one batch of 64 at configs/paper.yaml's sizes (ViT-B-16 stages
  2/5/8/11, SAM 256 × 64 × 64, 256² targets), and RefCOCO's word features (142k sentences,
  padded to T = 30 against the 5.7 tokens of a mean sentence), old vs new.

    .venv/bin/python bench/loader_speed.py                      # builds the small store once
    .venv/bin/python bench/loader_speed.py --store labels/synthetic --data-root data/synthetic
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BASELINE = "26ed39a"
SUBSETS = ("H_sem", "H_ref", "D_sem", "D_ref")
SPEC = {"stage_indices": (1, 3), "input_size": 112, "batch_size": 16}  # tiny CLIP's cache
# configs/paper.yaml's sizes, per sample: CLIP ViT-B-16 at 224 (14² patches, width 768) at 4
# stages, SAM's 256 × 64 × 64 embedding, 256² targets, word width 512 (RefCOCO: T 30, mean 5.7)
PAPER = {"stages": 4 * 196 * 768, "sam": 256 * 64 * 64, "target": 256 * 256, "word": 512}
REFCOCO = {"sentences": 142_000, "padded_t": 30, "mean_t": 5.7}


# ----------------------------------------------------------------------------- child: one side


def child(
    side: str,
    store_dir: Path,
    data_root: Path,
    work: Path,
    epochs: int,
    batch: int,
    splits: tuple[str, ...] = ("train",),
) -> None:
    """Run one side's loader (module docstring); print a JSON report; save epoch 0's tensors."""
    import pyarrow as pa
    import torch

    import trainer
    from pipeline.models.frozen import build_clip
    from pipeline.store.reader import LabelStore
    from trainer.data.feature_cache import CacheSpec, ClipCache, build_clip_cache
    from trainer.data.loaders import TrainingData
    from trainer.data.sam_embeddings import SamEmbeddings

    torch.set_num_threads(1)
    store = LabelStore(store_dir)
    clip = build_clip("ppt-tiny-vit", allow_random=True)
    path = build_clip_cache(store, data_root, clip, CacheSpec(**SPEC), work / "cache")
    cache = ClipCache(path)
    data = TrainingData([store], [cache], [SamEmbeddings(store)], splits)
    report: dict[str, Any] = {"trainer": str(Path(trainer.__file__).parent)}
    if hasattr(data, "target_caches"):  # the new loader: its target cache, built once
        data.cache_dir = work / "cache"
        start = time.perf_counter()
        data.target_caches()
        report["target_cache_s"] = time.perf_counter() - start
    arrow = pa.total_allocated_bytes()
    tracemalloc.start()
    samples = data.samples(SUBSETS, None, unselected=True)
    # what the samples hold: Python heap (objects, numpy) + Arrow buffers still allocated
    held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow
    report["index_bytes"] = held
    tracemalloc.stop()
    report["samples"] = len(samples)
    report["candidates"] = sum(len(s.candidates) for s in samples)
    ids: dict[str, list[list[str]]] = {}
    for workers in (0, 1):
        steady, total, n_steady, n_total = 0.0, 0.0, 0, 0
        for epoch in range(epochs):
            start = time.perf_counter()
            loader = data.loader(samples, batch, workers, epoch * 100_003 + epoch, True, True)
            first, saving = None, 0.0  # saving: the time spent keeping batches, not counted
            for b, raw in enumerate(loader):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    n_steady += len(raw["sample_id"])
                n_total += len(raw["sample_id"])
                ids.setdefault(f"{workers}/{epoch}", []).append(list(raw["sample_id"]))
                if workers == 0 and epoch == 0:
                    save_batch(raw, work / f"{side}-batch{b}.npz")
                    report["batch_bytes"] = report.get("batch_bytes", 0) + batch_bytes(raw)
                    saving += time.perf_counter() - now
            end = time.perf_counter() - saving
            steady += end - (first or end)
            total += end - start
        report[f"steady_{workers}"] = n_steady / steady if steady else float("nan")
        report[f"total_{workers}"] = n_total / total
        del loader
        if hasattr(data, "_last"):
            data._last = None  # the persistent worker exits (and counts in RUSAGE_CHILDREN)
        gc.collect()
    report["ids"] = ids
    report["words_held"] = int(cache.words.nbytes)  # as the cache reader holds them
    report["mean_candidates"] = float(np.mean([len(s.candidates) for s in samples]))
    report["rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["rss_workers_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(report))


def tensors(raw: dict[str, Any]) -> dict[str, Any]:
    """A batch's tensors by name (targets flattened to target<b>_<name>)."""
    out = {f"stage{i}": s for i, s in enumerate(raw["stages"])}
    for k in ("words", "text_pad", "sam_embedding", "sam_tokens", "relevance", "size"):
        if k in raw:
            out[k] = raw[k]
    for b, t in enumerate(raw.get("targets", [])):
        out.update({f"target{b}_{k}": v for k, v in t.items()})
    return out


def batch_bytes(raw: dict[str, Any]) -> int:
    """Host bytes of a batch's tensors."""
    return sum(int(v.numel() * v.element_size()) for v in tensors(raw).values())


def save_batch(raw: dict[str, Any], path: Path) -> None:
    """A batch's tensors as float32/bool/int numpy arrays."""
    arrays = {}
    for k, v in tensors(raw).items():
        arrays[k] = (v.float() if v.is_floating_point() else v).numpy()
    np.savez(path, **arrays)


# ----------------------------------------------------------------------------- parent


def small_store(work: Path, trees: dict[str, Path]) -> tuple[dict[str, Path], Path]:
    """The tests' small synthetic store (tests/helpers.py SMALL_PARAMS), built once in `work` by
    each side's code (a tree reads only its own schema version): the same rows in each layout."""
    sys.path.insert(0, str(REPO))
    from store_layout import build_store

    from pipeline.core.config import from_section
    from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic
    from tests.helpers import SMALL_PARAMS

    root = work / "data"
    if not (root / "done").is_file():
        generate_synthetic(
            root, from_section(SyntheticConfig, SMALL_PARAMS["synthetic"], "synthetic")
        )
        (root / "done").touch()
    stores = {side: work / f"store-{side}" for side in trees}
    for side, tree in trees.items():
        if not (stores[side] / "manifest.json").is_file():
            build_store(tree, root, stores[side], SMALL_PARAMS)
    return stores, root


def run_side(side: str, tree: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One side in its own process, with `tree`'s packages first on the path, on its own
    store (`args.stores[side]`, built by that tree's code)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--store",
           str(args.stores[side]), "--data-root", str(args.data_root), "--work", str(work),
           "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--splits", ",".join(args.splits)]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(report["trainer"]).resolve().parent != tree.resolve():
        raise SystemExit(f"{side} side imported {report['trainer']}, not {tree}")
    return report


def best(kept: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """`report` with each samples/s the higher of its and `kept`'s (the first round: as is)."""
    if not kept:
        return report
    rates = [k for k in report if k.startswith(("steady_", "total_"))]
    first = {k: kept[k] for k in ("target_cache_s",) if k in kept}  # built in the first round
    return {**report, **first, **{k: max(kept[k], report[k]) for k in rates}}


def compare_tensors(work: Path) -> dict[str, float]:
    """Epoch 0, no workers: features equal after float32; target masks' max difference and the
    lowest IoU of their thresholded (> 0.5) masks."""
    worst = {"feature_max_diff": 0.0, "target_max_diff": 0.0, "target_min_iou": 1.0, "batches": 0}
    b = 0
    while (work / f"old-batch{b}.npz").is_file():
        old, new = np.load(work / f"old-batch{b}.npz"), np.load(work / f"new-batch{b}.npz")
        if set(old) != set(new):
            raise SystemExit(f"batch {b}: tensors {sorted(set(old) ^ set(new))} on one side only")
        for k in old:
            if old[k].shape != new[k].shape:
                raise SystemExit(f"batch {b} {k}: shape {old[k].shape} vs {new[k].shape}")
            diff = float(np.abs(old[k].astype(np.float64) - new[k]).max()) if old[k].size else 0.0
            if k.endswith("_masks"):
                worst["target_max_diff"] = max(worst["target_max_diff"], diff)
                for a, c in zip(old[k] > 0.5, new[k] > 0.5, strict=True):
                    union = (a | c).sum()
                    iou = (a & c).sum() / union if union else 1.0
                    worst["target_min_iou"] = min(worst["target_min_iou"], float(iou))
            else:
                worst["feature_max_diff"] = max(worst["feature_max_diff"], diff)
        b += 1
    worst["batches"] = b
    return worst


def projections(old: dict[str, Any]) -> dict[str, float]:
    """Host MB of a batch of 64 at the paper's sizes; RefCOCO's word features in GB."""
    e = old["mean_candidates"]
    per_sample = PAPER["stages"] + PAPER["sam"] + e * PAPER["target"]
    words_t = REFCOCO["padded_t"] * PAPER["word"]
    return {
        "batch64_old_mb": 64 * per_sample * 4 / 1e6,  # float32 features and targets
        "batch64_new_mb": 64 * per_sample * 2 / 1e6,  # float16
        "refcoco_words_f32_padded_gb": REFCOCO["sentences"] * words_t * 4 / 1e9,
        "refcoco_words_f16_padded_gb": REFCOCO["sentences"] * words_t * 2 / 1e9,
        "refcoco_words_new_gb": REFCOCO["sentences"] * REFCOCO["mean_t"] * PAPER["word"] * 2 / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="the new side's store (with --old-store)")
    parser.add_argument("--old-store", type=Path, help="the same rows built by the old code")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--work", type=Path, help="scratch dir (default: a temporary one)")
    parser.add_argument("--base", type=Path, help=f"a checkout of {BASELINE} (default: made)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--splits", default="train", help="comma-separated splits to load")
    parser.add_argument("--child", choices=("old", "new"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        splits = tuple(args.splits.split(","))
        child(args.child, args.store, args.data_root, args.work, args.epochs, args.batch, splits)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="loader-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    base, made = args.base, args.base is None
    if made:
        base = work / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base),
                        BASELINE], check=True, capture_output=True)  # fmt: skip
    args.splits = tuple(args.splits.split(","))
    try:
        if args.store is None:
            args.stores, args.data_root = small_store(work, {"old": base, "new": REPO})
        else:
            args.stores = {"old": args.old_store or args.store, "new": args.store}
        # the sides alternate, each keeping its best round: a shared machine's load hits both
        old, new = {}, {}
        for _ in range(args.rounds):
            old = best(old, run_side("old", base, args, work))
            new = best(new, run_side("new", REPO, args, work))
    finally:
        if made:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)  # fmt: skip
    same_ids = old["ids"] == new["ids"]
    check = compare_tensors(work)
    print(
        f"stores {args.stores['new']} (old: {args.stores['old']}): {old['samples']} samples of "
        f"{','.join(args.splits)}, batch {args.batch}, "
        f"{args.epochs} epochs per worker count, best of {args.rounds} alternating rounds; "
        f"{old['mean_candidates']:.2f} targets a sample"
    )
    print(f"{'samples/s per worker':<34}{'old':>10}{'new':>10}{'ratio':>8}")
    for workers in (0, 1):
        for kind in ("steady", "total"):
            a, b = old[f"{kind}_{workers}"], new[f"{kind}_{workers}"]
            print(f"  num_workers={workers} {kind:<19}{a:>10.1f}{b:>10.1f}{b / a:>7.2f}x")
    print(f"same sample ids in every batch, every epoch: {same_ids}")
    print(
        f"epoch 0 tensors ({check['batches']} batches): features max |diff| "
        f"{check['feature_max_diff']:.3g}; target masks max |diff| "
        f"{check['target_max_diff']:.3g}, min IoU of thresholded {check['target_min_iou']:.4f}"
    )
    print(
        f"host bytes of epoch 0's batches: old {old['batch_bytes'] / 1e6:.1f} MB, new "
        f"{new['batch_bytes'] / 1e6:.1f} MB"
    )
    print(
        f"peak RSS MB: old {old['rss_self_mb']:.0f} (+ worker {old['rss_workers_mb']:.0f}), "
        f"new {new['rss_self_mb']:.0f} (+ worker {new['rss_workers_mb']:.0f})"
    )
    print(f"new target cache, built once: {new['target_cache_s']:.2f} s")
    per = {k: v["index_bytes"] / v["candidates"] for k, v in (("old", old), ("new", new))}
    print(
        f"sample index: old {per['old']:.0f} B, new {per['new']:.0f} B a candidate (Python heap "
        f"+ Arrow); at 178k candidates old {per['old'] * 178e3 / 1e9:.2f} GB, new "
        f"{per['new'] * 178e3 / 1e9:.2f} GB (new: Arrow/numpy buffers, shared by workers)"
    )
    print(
        f"word features held: old {old['words_held'] / 1e3:.0f} kB padded, new "
        f"{new['words_held'] / 1e3:.0f} kB packed"
    )
    p = projections(old)
    print(
        f"projected host memory of a batch of 64 (paper sizes): old {p['batch64_old_mb']:.0f} MB"
        f" float32, new {p['batch64_new_mb']:.0f} MB float16"
    )
    print(
        f"projected RefCOCO word features: old {p['refcoco_words_f32_padded_gb']:.2f} GB float32"
        f" ({p['refcoco_words_f16_padded_gb']:.2f} GB float16) padded to T=30, new "
        f"{p['refcoco_words_new_gb']:.2f} GB packed"
    )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
