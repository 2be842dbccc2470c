"""Referring-segmentation metrics (DESIGN §7): one implementation for pseudo-labels and predictions.

A sample is one (referent, sentence) pair, scored at the image's original size:

    IoU_s  = |P_s ∩ G_s| / |P_s ∪ G_s|, and IoU_s = 0 when the union is empty
    mIoU   = mean_s IoU_s
    oIoU   = Σ_s |P_s ∩ G_s| / Σ_s |P_s ∪ G_s|            (0 when every union is empty)
    P@X    = share of samples with IoU_s ≥ X, X ∈ {0.3, 0.5, 0.7}

The empty-union convention: RIS referents always have a non-empty ground truth, so an empty union
only arises from degenerate data; scoring it 0 (rather than 1 or skipping it) keeps n honest and
never rewards predicting nothing. It also means an empty pair counts as a miss for every P@X.

Two equivalent ways in: dense (H, W) bool masks, or COCO RLEs (the label store's format), scored
with pycocotools' area/merge without decoding. `RisMeter` accumulates intersections and unions;
`summarize` turns them into the table row {"mIoU", "oIoU", "P@0.3", "P@0.5", "P@0.7", "n"} with
percentages in 0-100 (n is a plain count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
SUMMARY_KEYS: tuple[str, ...] = ("mIoU", "oIoU", *(f"P@{t}" for t in THRESHOLDS), "n")

Rle = Mapping[str, Any]  # COCO RLE: {"size": [H, W], "counts": bytes | str}


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """|pred ∩ gt| and |pred ∪ gt| of two (H, W) masks (any dtype; nonzero = foreground)."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {pred.shape} and ground truth {gt.shape} differ in size: resize the "
            "prediction to the image's original size before scoring"
        )
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def _as_rle(rle: Rle) -> dict[str, Any]:
    """A copy pycocotools accepts: counts as bytes (the store keeps them as str)."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    elif not isinstance(counts, bytes):
        raise ValueError("RLE counts must be compressed (bytes or str); use frPyObjects first")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def rle_intersection_union(pred: Rle, gt: Rle) -> tuple[int, int]:
    """|pred ∩ gt| and |pred ∪ gt| of two compressed COCO RLEs of one image, without decoding."""
    a, b = _as_rle(pred), _as_rle(gt)
    if a["size"] != b["size"]:
        raise ValueError(
            f"prediction RLE size {a['size']} and ground truth size {b['size']} differ: encode "
            "both at the image's original size"
        )
    area_a, area_b = (int(x) for x in mask_utils.area([a, b]))
    inter = int(mask_utils.area(mask_utils.merge([a, b], intersect=True)))
    # Inclusion-exclusion saves a second merge.
    return inter, area_a + area_b - inter


def iou_from_counts(intersection: int, union: int) -> float:
    """IoU of one sample; 0 when the union is empty (see the module docstring)."""
    return intersection / union if union > 0 else 0.0


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) masks at the same size; 0 when both are empty."""
    return iou_from_counts(*intersection_union(pred, gt))


def rle_iou(pred: Rle, gt: Rle) -> float:
    """IoU of two compressed COCO RLEs; equals `mask_iou` of their decoded masks."""
    return iou_from_counts(*rle_intersection_union(pred, gt))


def summarize(
    intersections: Sequence[int], unions: Sequence[int], thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, float]:
    """RIS table row from per-sample intersections and unions (same length n).

    Returns {"mIoU", "oIoU", "P@0.3", "P@0.5", "P@0.7", "n"}: percentages in 0-100 and n as a
    count. With n = 0 every percentage is NaN (undefined, not 0) so an empty split is not
    mistaken for a failed one.
    """
    inter = np.asarray(intersections, dtype=np.float64)  # (n,)
    union = np.asarray(unions, dtype=np.float64)  # (n,)
    if inter.shape != union.shape:
        raise ValueError(f"{inter.size} intersections but {union.size} unions")
    n = int(inter.size)
    out: dict[str, float] = {}
    if n == 0:
        out = {"mIoU": float("nan"), "oIoU": float("nan")}
        out.update({f"P@{t}": float("nan") for t in thresholds})
        out["n"] = 0
        return out
    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    total_union = union.sum()
    out["mIoU"] = 100.0 * float(ious.mean())
    out["oIoU"] = 100.0 * float(inter.sum() / total_union) if total_union > 0 else 0.0
    for t in thresholds:
        out[f"P@{t}"] = 100.0 * float(np.mean(ious >= t))
    out["n"] = n
    return out


@dataclass
class RisMeter:
    """Accumulates per-sample intersections and unions; `summarize()` gives the table row.

    Add a sample once per (referent, sentence): a pseudo-label shared by the sentences of a
    referent is added once per sentence (`repeat`), as RIS benchmarks count it.
    """

    intersections: list[int] = field(default_factory=list)  # (n,) pixels
    unions: list[int] = field(default_factory=list)  # (n,) pixels

    def add_counts(self, intersection: int, union: int, repeat: int = 1) -> float:
        """Record one sample (`repeat` times) from its counts; returns its IoU."""
        self.intersections.extend([int(intersection)] * repeat)
        self.unions.extend([int(union)] * repeat)
        return iou_from_counts(intersection, union)

    def add(self, pred: np.ndarray, gt: np.ndarray, repeat: int = 1) -> float:
        """Record one sample from (H, W) masks; returns its IoU."""
        return self.add_counts(*intersection_union(pred, gt), repeat=repeat)

    def add_rle(self, pred: Rle, gt: Rle, repeat: int = 1) -> float:
        """Record one sample from compressed COCO RLEs; returns its IoU."""
        return self.add_counts(*rle_intersection_union(pred, gt), repeat=repeat)

    def merge(self, other: RisMeter) -> RisMeter:
        """Combine two meters (e.g. from shards); the order of samples does not matter."""
        return RisMeter(self.intersections + other.intersections, self.unions + other.unions)

    @property
    def n(self) -> int:
        """Number of samples recorded."""
        return len(self.intersections)

    def summarize(self) -> dict[str, float]:
        """The RIS table row of everything recorded so far (see `summarize`)."""
        return summarize(self.intersections, self.unions)
