"""Can a statistic the store already holds tell a right pseudo-label from a wrong one?

    .venv/bin/python bench/label_signals.py --out DIR [--split train] [--min-score 0.945]

A diagnostic: the train split's H_sem referent pseudo-labels (the trainer's targets; those SAM
scored under `--min-score` left out, as `data.min_label_score` leaves them) are scored against
the referent's ground truth (a *hit*: IoU ≥ 0.5), and each signal below is asked how well it
ranks hits above misses (AUC: 0.5 is a coin, 1 a perfect filter) and what keeping the labels in
its top half would leave (hit rate, mIoU, count). Signals, none of which reads the truth:

    sam_score        SAM's own predicted IoU (the masks stage's `sam_score`)
    relevance_score  the label's agreement with the map that prompted it (soft IoU; the masks
                     stage's `relevance_score`, `data.min_label_relevance` filters on it)
    dominance        the map's largest region's share of the mass of all its regions ≥ 0.5
    mass share       the share of the map's mass that falls inside the label

DIR is a `bench/ablation.py --out` directory (its world and scene store are read).
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from scipy import ndimage

from pipeline.core.rle import decode_rle
from pipeline.labelling.grid import mask_to_grid
from pipeline.scoring.failures import ObjectTruths, object_truths
from pipeline.scoring.metrics import mask_iou
from pipeline.store.reader import LabelStore

SIGNALS = ("sam_score", "relevance_score", "dominance", "mass share")


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties half)."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def map_shape(relevance: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(dominance, mass share) of one (G, G) map and the (H, W) label it prompted."""
    m = relevance.astype(np.float64)
    m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
    regions, n = ndimage.label(m >= 0.5)
    mass = ndimage.sum(m, regions, index=np.arange(1, n + 1)) if n else np.zeros(1)
    share = float((m * mask_to_grid(mask, m.shape)).sum() / max(m.sum(), 1e-12))
    return float(mass.max() / max(mass.sum(), 1e-12)), share


def h_sem_samples(store: LabelStore, split: str) -> set[str]:
    """The sample_ids of a store's H_sem samples of `split`."""
    samples = store.samples().select(["sample_id", "split"])
    in_split = pc.equal(samples["split"], split)
    wanted = set(samples.filter(in_split)["sample_id"].to_pylist())
    subsets = store.candidates().select(["sample_id", "subset"])
    h_sem = set(subsets.filter(pc.equal(subsets["subset"], "H_sem"))["sample_id"].to_pylist())
    return wanted & h_sem


def kept_labels(store: LabelStore, sample_ids: Collection[str], min_score: float) -> list[dict]:
    """The label (candidate 0) of each of `sample_ids` that the trainer keeps as a target: it
    has a mask and SAM scored it ≥ `min_score` (`data.min_label_score`)."""
    return [
        c
        for c in store.candidates().to_pylist()
        if c["sample_id"] in sample_ids and c["cand_idx"] == 0 and c["mask_rle"]
        and (c["sam_score"] or 0.0) >= min_score
    ]  # fmt: skip


def label_and_truth(label: dict, truths: ObjectTruths) -> tuple[np.ndarray, float]:
    """A label's (H, W) mask and its IoU with its sample's referent (`object_truths`)."""
    h, w, referent, _ = truths[label["sample_id"]]
    mask = decode_rle(label["mask_rle"], h, w)
    return mask, mask_iou(mask, decode_rle(referent, h, w))


def label_rows(out: Path, split: str, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) signals of every kept label, in SIGNALS order, and (n,) its IoU with the truth."""
    store = LabelStore(out / "labels" / "synthetic")
    labels = kept_labels(store, h_sem_samples(store, split), min_score)
    truths = object_truths("synthetic", out / "data", {c["sample_id"] for c in labels})
    if not truths:
        raise SystemExit(f"{out}: no {split}-split H_sem label with ground truth")
    labels = [c for c in labels if c["sample_id"] in truths]
    maps = store.phrase_relevance([c["sample_id"] for c in labels], 1)[:, 0]  # H_sem: one phrase
    signals, ious = [], []
    for c, relevance in zip(labels, maps, strict=True):
        mask, iou = label_and_truth(c, truths)
        signals.append([c["sam_score"], c["relevance_score"], *map_shape(relevance, mask)])
        ious.append(iou)
    return np.asarray(signals, np.float64), np.asarray(ious)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a bench/ablation.py --out dir")
    parser.add_argument("--split", default="train")
    parser.add_argument("--min-score", type=float, default=0.945, help="data.min_label_score")
    args = parser.parse_args()
    signals, iou = label_rows(args.out, args.split, args.min_score)
    hit = iou >= 0.5
    print(f"{len(iou)} {args.split}-split H_sem labels (SAM score ≥ {args.min_score}): "
          f"{100 * hit.mean():.1f} % hits, mIoU {100 * iou.mean():.1f}\n")  # fmt: skip
    print("| signal | AUC | top half: hits % | mIoU | labels |\n|---|---|---|---|---|")
    for name, column in zip(SIGNALS, signals.T, strict=True):
        top = column >= np.median(column)
        print(f"| {name} | {auc(column, hit):.3f} | {100 * hit[top].mean():.1f} | "
              f"{100 * iou[top].mean():.1f} | {int(top.sum())} |")  # fmt: skip


if __name__ == "__main__":
    main()
