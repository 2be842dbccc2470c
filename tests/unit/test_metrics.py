"""RIS metrics on hand-computed cases: IoU conventions, mIoU vs oIoU, P@X, RLE == dense."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pipeline.scoring.metrics import (
    SUMMARY_KEYS,
    RisMeter,
    intersection_union,
    mask_iou,
    rle_intersection_union,
    rle_iou,
    summarize,
)


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """(h, w) bool mask with rows y0:y1, cols x0:x1 set."""
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE with str counts, as the label store keeps it."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def test_exact_hit() -> None:
    m = box_mask(10, 10, 2, 6, 3, 8)
    assert intersection_union(m, m) == (20, 20)
    assert mask_iou(m, m) == 1.0
    row = summarize([20], [20])
    assert row == {
        "mIoU": 100.0,
        "oIoU": 100.0,
        "P@0.3": 100.0,
        "P@0.5": 100.0,
        "P@0.7": 100.0,
        "n": 1,
    }


def test_all_miss() -> None:
    meter = RisMeter()
    assert meter.add(box_mask(8, 8, 0, 2, 0, 2), box_mask(8, 8, 5, 8, 5, 8)) == 0.0
    assert meter.add(np.zeros((8, 8), bool), box_mask(8, 8, 1, 3, 1, 3)) == 0.0
    row = meter.summarize()
    assert row["mIoU"] == row["oIoU"] == row["P@0.3"] == row["P@0.5"] == row["P@0.7"] == 0.0
    assert row["n"] == 2


def test_empty_union_is_zero_and_a_miss() -> None:
    empty = np.zeros((5, 7), dtype=bool)
    assert intersection_union(empty, empty) == (0, 0)
    assert mask_iou(empty, empty) == 0.0
    row = summarize([0], [0])
    assert row["mIoU"] == 0.0 and row["oIoU"] == 0.0
    assert row["P@0.3"] == row["P@0.5"] == row["P@0.7"] == 0.0
    # With a real hit beside it, the empty pair halves mIoU and P@X but adds nothing to oIoU.
    row = summarize([0, 10], [0, 10])
    assert row["mIoU"] == 50.0 and row["oIoU"] == 100.0 and row["P@0.5"] == 50.0


def test_partial_overlaps_known_numbers() -> None:
    gt = box_mask(10, 10, 0, 10, 0, 4)  # 40 px
    pred = box_mask(10, 10, 0, 10, 2, 6)  # 40 px, 20 shared → IoU 20/60
    assert intersection_union(pred, gt) == (20, 60)
    assert mask_iou(pred, gt) == pytest.approx(1 / 3)
    # IoUs 0.3 (exactly), 0.5, 0.7 (exactly), 0.9: thresholds are inclusive (IoU ≥ X).
    row = summarize([3, 5, 7, 9], [10, 10, 10, 10])
    assert row["mIoU"] == pytest.approx(60.0)
    assert row["oIoU"] == pytest.approx(60.0)
    assert row["P@0.3"] == 100.0 and row["P@0.5"] == 75.0 and row["P@0.7"] == 50.0
    assert row["n"] == 4


def test_oiou_differs_from_miou() -> None:
    # A large object found well (900/1000) and a small one missed (0/100):
    # mIoU = (0.9 + 0) / 2 = 45 %, oIoU = 900 / 1100 = 81.8 %: oIoU favours large objects.
    meter = RisMeter()
    meter.add_counts(900, 1000)
    meter.add_counts(0, 100)
    row = meter.summarize()
    assert row["mIoU"] == pytest.approx(45.0)
    assert row["oIoU"] == pytest.approx(100 * 900 / 1100)
    assert row["P@0.5"] == 50.0


def test_repeat_counts_each_sentence() -> None:
    meter = RisMeter()
    meter.add_counts(1, 2, repeat=3)  # one referent with three sentences
    meter.add_counts(1, 1)
    row = meter.summarize()
    assert row["n"] == 4 and row["mIoU"] == pytest.approx(100 * (3 * 0.5 + 1) / 4)


def test_rle_path_equals_dense_path() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(5, 60, size=2)
        pred = rng.random((h, w)) < rng.random()
        gt = rng.random((h, w)) < rng.random()
        assert rle_intersection_union(encode(pred), encode(gt)) == intersection_union(pred, gt)
        assert rle_iou(encode(pred), encode(gt)) == mask_iou(pred, gt)
    # bytes counts (pycocotools' own output) work too, and empty masks follow the convention
    empty = mask_utils.encode(np.zeros((4, 6), dtype=np.uint8, order="F"))
    assert rle_iou(empty, empty) == 0.0
    a, b = RisMeter(), RisMeter()
    pred, gt = box_mask(9, 9, 1, 5, 1, 5), box_mask(9, 9, 3, 8, 2, 7)
    a.add(pred, gt)
    b.add_rle(encode(pred), encode(gt))
    assert a.summarize() == b.summarize()


def test_size_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="original size"):
        mask_iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="original size"):
        rle_iou(encode(np.zeros((4, 4), bool)), encode(np.zeros((5, 4), bool)))


def test_summary_keys_and_empty_meter() -> None:
    row = RisMeter().summarize()
    assert tuple(row) == SUMMARY_KEYS
    assert row["n"] == 0 and math.isnan(row["mIoU"]) and math.isnan(row["P@0.5"])
    merged = RisMeter([1], [2]).merge(RisMeter([2], [2]))
    assert merged.n == 2 and merged.summarize()["oIoU"] == pytest.approx(75.0)
