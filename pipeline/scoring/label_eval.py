"""`ppt-labels eval-labels`: score a store's pseudo-labels against ground truth (DESIGN §7).

Two rows, both per (referent, sentence) sample at the image's original size:
- `H_sem_referent`: the referent candidate (c=1) of every H_sem sample — the labels the trainer
  takes as given;
- `best_candidate`: the best-overlapping candidate of every sample (oracle selection) — the ceiling
  that a perfect Select round could reach with these masks.
Ground truth is read from the dataset here and nowhere in training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils
from rich.progress import track

from pipeline.core.errors import StoreError
from pipeline.core.rle import encode_rle, to_rle
from pipeline.data.registry import open_dataset
from pipeline.scoring.metrics import RisMeter, rle_intersection_union
from pipeline.store.reader import LabelStore

log = logging.getLogger(__name__)


def ground_truth_rles(
    store: LabelStore,
    data_root: Path,
    dataset: str | None = None,
    sample_ids: Iterable[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """sample_id → its referent's ground-truth mask, a COCO RLE at the image's original size.

    For every sample of `store` (or only `sample_ids`) that has ground truth in `dataset` (the
    store's own by default) under `data_root`; samples without it (ImageNet, composites) are
    absent. The one place evaluation reads ground truth: eval-labels and the trainer share it.
    """
    source = open_dataset(dataset or store.manifest["dataset"], data_root)
    records = {r.sample_id: r for r in source.records()[0]}
    wanted = store.samples().column("sample_id").to_pylist() if sample_ids is None else sample_ids
    by_ann: dict[int, dict[str, Any] | None] = {}  # sentences of one referent share its mask
    out: dict[str, dict[str, Any]] = {}
    for sample_id in wanted:
        record = records.get(sample_id)
        if record is None or record.ann_id < 0:
            continue
        if record.ann_id not in by_ann:
            truth = source.ground_truth(record)
            by_ann[record.ann_id] = (
                to_rle(encode_rle(truth.mask)[0], *truth.mask.shape) if truth is not None else None
            )
        if by_ann[record.ann_id] is not None:
            out[sample_id] = by_ann[record.ann_id]
    return out


def evaluate_labels(store_dir: Path, data_root: Path) -> dict[str, dict[str, float]]:
    """Metrics of the pseudo-labels in `store_dir`, keyed by row name (see module docstring)."""
    store = LabelStore(store_dir)
    if "masks" not in store.tables:
        raise StoreError(f"{store_dir}: no masks table; build the masks stage first")
    truths = ground_truth_rles(store, data_root)
    candidates: dict[str, list[dict[str, Any]]] = {}
    for cand in store.candidates().to_pylist():
        candidates.setdefault(cand["sample_id"], []).append(cand)

    referent, best = RisMeter(), RisMeter()
    skipped = 0
    for sample in track(store.samples().to_pylist(), description="eval-labels"):
        gt = truths.get(sample["sample_id"])
        if gt is None:
            skipped += 1  # no ground truth (ImageNet, composites)
            continue
        counts = []
        for cand in candidates.get(sample["sample_id"], []):
            if cand.get("mask_rle") is None:
                counts.append((0, int(mask_utils.area(gt))))  # no mask: a miss
                continue
            pred = to_rle(cand["mask_rle"], sample["height"], sample["width"])
            counts.append(rle_intersection_union(pred, gt))
            if sample.get("subset") == "H_sem" and cand.get("referent") == 1:
                referent.add_counts(*counts[-1])
        if counts:
            best.add_counts(*max(counts, key=lambda c: c[0] / c[1] if c[1] else 0.0))
    if skipped:
        log.info("eval-labels: %d samples without ground truth skipped", skipped)
    return {"H_sem_referent": referent.summarize(), "best_candidate": best.summarize()}
