"""`ppt-labels eval-labels`: score a store's pseudo-labels against ground truth (DESIGN §7).

Rows, per (referent, sentence) sample at the image's original size:
- `H_sem_referent`: the referent candidate (c=1) of every H_sem sample — the labels the trainer
  takes as given;
- `best_candidate`: the best-overlapping candidate of every sample (oracle selection) — the ceiling
  that a perfect Select round could reach with these masks.
Where the dataset has phrase ground truth (the synthetic world), two more:
- `candidate_vs_denotation`: every candidate that matches a truth phrase, against what that
  phrase denotes. A phrase that denotes several objects ("the circle" among three circles) is
  scored against the union of all of them: a mask of one circle then scores its share of the
  union, which is what such a candidate's label should cover (it is the phrase's, not the
  referent's);
- `H_ref_referent_best` (a rate, not IoU): the share of H_ref samples whose best pseudo-label
  (highest IoU with the referent's ground truth) belongs to the referent's own phrase: how often
  a perfect Select would pick the subject's candidate.
Ground truth is read from the dataset here and nowhere in training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from rich.progress import track

from pipeline.core.errors import StoreError
from pipeline.core.rle import decode_rle, encode_rle, to_rle
from pipeline.data.dataset import denotation_mask
from pipeline.data.registry import open_dataset
from pipeline.scoring.metrics import RisMeter, iou_from_counts, rle_intersection_union
from pipeline.store.reader import LabelStore
from pipeline.store.validate import verify_store

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
    verify_store(store_dir)
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
    rows: dict[str, dict[str, float]] = {
        "H_sem_referent": referent.summarize(),
        "best_candidate": best.summarize(),
    }
    source = open_dataset(store.manifest["dataset"], data_root)
    if getattr(source, "truth", None) is not None:
        rows.update(phrase_rows(store, source, candidates, truths))
    return rows


def phrase_rows(
    store: LabelStore,
    source: Any,
    candidates: dict[str, list[dict[str, Any]]],
    truths: dict[str, dict[str, Any]],
) -> dict[str, dict[str, float]]:
    """The phrase-truth rows of the module docstring."""
    denotation, won, n_ref = RisMeter(), 0, 0
    for sample in store.samples().to_pylist():
        h, w = sample["height"], sample["width"]
        objects = {o.ann_id: o for o in source.objects(sample["image_id"]) or ()}
        best: tuple[float, str | None] = (-1.0, None)
        for cand in candidates.get(sample["sample_id"], []):
            pred = decode_rle(cand["mask_rle"], h, w) if cand.get("mask_rle") else None
            if cand.get("denotes"):
                union = denotation_mask(objects, cand["denotes"], (h, w))
                denotation.add(pred if pred is not None else np.zeros_like(union), union)
            gt = truths.get(sample["sample_id"])
            if pred is not None and gt is not None:
                iou = iou_from_counts(*rle_intersection_union(to_rle(cand["mask_rle"], h, w), gt))
                best = max(best, (iou, cand.get("truth_role")), key=lambda b: b[0])
        if sample.get("subset") == "H_ref" and best[0] >= 0:
            n_ref += 1
            won += best[1] == "referent"
    rate = 100.0 * won / n_ref if n_ref else float("nan")
    return {
        "candidate_vs_denotation": denotation.summarize(),
        "H_ref_referent_best": {"rate": rate, "n": n_ref},
    }
