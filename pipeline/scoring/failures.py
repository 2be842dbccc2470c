"""What a referring mask got wrong, where the dataset knows every object of the image (the
synthetic world): one class per (referent, sentence) sample.

    hit           IoU with the referent ≥ 0.5 (P@0.5's hits)
    part          most of the mask lies on the referent but covers under half of it: a part or
                  a sub-blob instead of the whole (the paper's salient-part failure)
    loose         most of the mask lies on the referent and covers at least half of it, yet
                  IoU < 0.5: the whole referent plus as much again elsewhere
    other object  most of the mask lies on other annotated objects (a distractor, a landmark)
    background    most of the mask lies on no annotated object
    empty         no mask at all

`other_kind` says which other object: the landmark the sentence names, or a look-alike of the
referent (same class and colour, same class, same colour) that only the sentence's words tell
apart, or an unrelated object (`bench/failure_kinds.py` tabulates it).

"Most" is the largest of the three shares of the mask's pixels (referent / other objects /
neither); a tie goes to the referent, then to other objects. `breakdown` gives each class's share
of the samples in percent, so a table says which failure dominates: D_sem / D_ref (the
object-centric data) teach whole objects, i.e. they fix *part*, not *other object*.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.rle import decode_rle, encode_rle
from pipeline.data.registry import open_dataset

CLASSES: tuple[str, ...] = ("hit", "part", "loose", "other object", "background", "empty")

# sample_id → (height, width, the referent's RLE counts, the other objects' union's RLE counts)
ObjectTruths = dict[str, tuple[int, int, str, str]]


def object_truths(
    dataset: str, data_root: Path, sample_ids: Collection[str] | None = None
) -> ObjectTruths | None:
    """Every sample's referent and the union of the other annotated objects of its image, as
    RLE counts (small: a test split's masks decoded at once would not be); None where the
    dataset does not know every object of an image (only the synthetic world does)."""
    source = open_dataset(dataset, Path(data_root))
    if getattr(source, "truth", None) is None:  # decided before any record is read (RefCOCO)
        return None
    out: ObjectTruths = {}
    by_referent: dict[tuple[str, int], tuple[int, int, str, str] | None] = {}
    for record in source.records()[0]:
        if record.ann_id < 0 or (sample_ids is not None and record.sample_id not in sample_ids):
            continue
        key = (record.image_id, record.ann_id)  # the sentences of a referent share its truth
        if key not in by_referent:
            objects = source.objects(record.image_id)
            by_referent[key] = _referent_and_others(objects, record.ann_id)
        if (truth := by_referent[key]) is not None:
            out[record.sample_id] = truth
    return out


def _referent_and_others(objects: Iterable[Any], ann_id: int) -> tuple[int, int, str, str] | None:
    masks = {o.ann_id: o.mask for o in objects}
    if ann_id not in masks:
        return None
    referent = masks.pop(ann_id)
    others = np.zeros_like(referent)
    for mask in masks.values():
        others |= mask
    h, w = referent.shape
    return h, w, encode_rle(referent)[0], encode_rle(others)[0]


def classify(pred: np.ndarray, truth: tuple[int, int, str, str]) -> str:
    """`failure_class` of a prediction against one `object_truths` entry."""
    h, w, referent, others = truth
    return failure_class(pred, decode_rle(referent, h, w), decode_rle(others, h, w))


def failure_class(pred: np.ndarray, referent: np.ndarray, others: np.ndarray) -> str:
    """The class of one prediction (all (H, W) bool: the mask, the referent's ground truth and
    the union of the image's other annotated objects)."""
    pred = pred.astype(bool, copy=False)
    area = int(np.count_nonzero(pred))
    if area == 0:
        return "empty"
    on_referent = int(np.count_nonzero(pred & referent))
    union = int(np.count_nonzero(pred | referent))
    if on_referent >= 0.5 * union:
        return "hit"
    on_others = int(np.count_nonzero(pred & others & ~referent))
    elsewhere = area - on_referent - on_others
    if on_referent >= max(on_others, elsewhere):
        return "part" if on_referent < 0.5 * np.count_nonzero(referent) else "loose"
    return "other object" if on_others >= elsewhere else "background"


def breakdown(classes: Iterable[str]) -> dict[str, float]:
    """Share of samples per class in percent (every class present, in CLASSES order) and n."""
    counts = Counter(classes)
    unknown = set(counts) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown failure classes {sorted(unknown)}; known: {CLASSES}")
    n = sum(counts.values())
    out: dict[str, float] = {c: 100.0 * counts[c] / n if n else float("nan") for c in CLASSES}
    out["n"] = n
    return out


OTHER_KINDS: tuple[str, ...] = (
    "landmark", "same class and colour", "same class", "same colour", "unrelated",
)  # fmt: skip


def other_kind(pred: np.ndarray, referent: Any, objects: Iterable[Any], landmarks: set[int]) -> str:
    """Which object an *other object* mask is on (the one it covers most), against the referent:
    objects are `ObjectTruth`s (shape, colours, mask); `landmarks` the ann_ids the sentence's
    landmark phrases denote."""
    others = [o for o in objects if o.ann_id != referent.ann_id]
    if not others:
        raise ValueError("the image has no object besides the referent")
    hit = max(others, key=lambda o: int(np.count_nonzero(pred & o.mask)))
    if hit.ann_id in landmarks:
        return "landmark"
    same_class = hit.shape == referent.shape
    same_colour = bool(set(hit.colours) & set(referent.colours))
    if same_class:
        return "same class and colour" if hit.colour == referent.colour else "same class"
    return "same colour" if same_colour else "unrelated"
