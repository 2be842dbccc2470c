"""Failure classes (pipeline.scoring.failures) on hand-drawn masks: what a miss hit instead."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.dataset import ObjectTruth
from pipeline.scoring.failures import CLASSES, OTHER_KINDS, breakdown, failure_class, other_kind
from pipeline.scoring.metrics import mask_iou


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((40, 60), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


REFERENT = _box(5, 25, 5, 25)  # 400 px
OTHERS = _box(5, 25, 35, 55)  # another object, 400 px


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (_box(5, 25, 5, 25), "hit"),
        (_box(5, 25, 5, 15), "hit"),  # half the referent: IoU exactly 0.5, as P@0.5 counts it
        (_box(8, 16, 8, 16), "part"),  # 64 px inside the referent, 16 % of it
        # all of it, 200 px of the other object and 250 of background: IoU 0.47
        (REFERENT | _box(5, 15, 35, 55) | _box(30, 40, 0, 25), "loose"),
        (_box(5, 25, 35, 55), "other object"),
        (_box(5, 25, 30, 55), "other object"),  # all of it and a 100 px margin
        (_box(20, 30, 20, 45), "background"),  # 25 px on the referent, 50 on the other, 175 off
        (_box(30, 40, 0, 60), "background"),
        (np.zeros((40, 60), dtype=bool), "empty"),
    ],
)
def test_each_class_on_a_hand_drawn_mask(pred: np.ndarray, expected: str) -> None:
    assert failure_class(pred, REFERENT, OTHERS) == expected
    assert (expected == "hit") == (mask_iou(pred, REFERENT) >= 0.5)  # hit is P@0.5's hit


def test_shares_in_percent_in_a_fixed_order() -> None:
    shares = breakdown(["hit", "part", "hit", "background"])
    assert list(shares) == [*CLASSES, "n"] and shares["n"] == 4
    assert shares["hit"] == 50.0 and shares["part"] == shares["background"] == 25.0
    assert shares["other object"] == shares["loose"] == shares["empty"] == 0.0
    with pytest.raises(ValueError, match="unknown failure classes"):
        breakdown(["hit", "miss"])


def _object(ann_id: int, shape: str, colour: str, box: np.ndarray, part: str | None = None):
    return ObjectTruth(ann_id, shape, colour, part, box, None)


def test_other_kind_names_the_object_the_mask_covers_most() -> None:
    referent = _object(1, "circle", "red", REFERENT)
    left, right = _box(30, 40, 0, 20), _box(30, 40, 30, 60)
    scene = {
        "landmark": _object(2, "circle", "red", left),  # named by the sentence: wins over looks
        "same class and colour": _object(2, "circle", "red", left),
        "same class": _object(2, "circle", "blue", left),
        "same colour": _object(2, "square", "green", left, part="red"),  # its part is red
        "unrelated": _object(2, "square", "blue", left),
    }
    for expected, other in scene.items():
        landmarks = {2} if expected == "landmark" else {3}
        small = _object(3, "star", "green", right)  # a smaller overlap elsewhere loses
        pred = left | _box(30, 32, 30, 40)
        assert other_kind(pred, referent, [referent, other, small], landmarks) == expected
    assert set(OTHER_KINDS) == set(scene)
    with pytest.raises(ValueError, match="no object besides"):
        other_kind(left, referent, [referent], set())
