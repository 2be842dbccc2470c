"""The files of a synthetic dataset as data: refer refs, COCO instances, phrase ground truth.

`refer_tables` turns planned images into the refs list (refer toolkit layout), the COCO instances
dict and one phrase-truth table per split. An annotation's segmentation is the object's visible
area: its exact polygon where nothing covers it, else the COCO RLE of what stays visible. Beyond
COCO's keys, every annotation carries its `colour` and, for a shape with an inner part, `part`
(the part's class, colour and visible RLE): what the `simulated` relevance source needs to spill
a phrase's response onto objects sharing a word. Phrase truth rows name, for every sentence,
each noun phrase's span and the annotation ids it denotes (`expressions.noun_phrases`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.data.synthetic.expressions import Expression, noun_phrases
from pipeline.data.synthetic.scenes import (
    SHAPES,
    Scene,
    part_masks,
    polygon_mask,
    visible_masks,
)


@dataclass(frozen=True)
class PlannedImage:
    """One image of a dataset before rendering: its scene and the sentences of its referents."""

    image_id: int
    file_name: str  # under images/<dataset>/
    split: str
    scene: Scene
    # Object index -> its (expression, sentence) pairs; objects nothing singles out are not refs.
    refs: dict[int, list[tuple[Expression, str]]]


def _rle(mask: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]  # fmt: skip


def _annotation(plan: PlannedImage, j: int, ann_id: int, visible, parts) -> dict[str, Any]:
    """The COCO annotation of object j: exact polygon if unoccluded, else its visible RLE."""
    obj, scene = plan.scene.objects[j], plan.scene
    full = polygon_mask(obj.polygon, scene.width, scene.height)
    occluded = bool((full & ~visible[j]).any())
    ann: dict[str, Any] = {
        "id": ann_id,
        "image_id": plan.image_id,
        "category_id": SHAPES.index(obj.shape) + 1,
        "segmentation": _rle(visible[j]) if occluded else [list(obj.polygon)],
        "bbox": _bbox(visible[j]) if occluded else list(obj.bbox),
        "iscrowd": 0,
        "area": float(visible[j].sum()) if occluded else round(obj.area, 2),
        "colour": obj.colour,
    }
    if obj.part is not None and parts[j] is not None and parts[j].any():
        ann["part"] = {"shape": obj.part.shape, "colour": obj.part.colour,
                       "segmentation": _rle(parts[j])}  # fmt: skip
    return ann


def refer_tables(
    plans: list[PlannedImage], first_ids: tuple[int, int, int] = (0, 0, 0)
) -> tuple[list[dict], dict, dict[str, list[dict]]]:
    """(refs, COCO instances, split → phrase-truth rows) with unique ann / ref / sent ids.

    `first_ids` are the (ann, ref, sent) ids to count on from, so that two datasets of one world
    never share an id.
    """
    refs: list[dict] = []
    coco: dict = {"images": [], "annotations": []}
    coco["categories"] = [
        {"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)
    ]
    truth: dict[str, list[dict]] = {}
    ann_id, ref_id, sent_id = first_ids
    for p in plans:
        coco["images"].append(
            {"id": p.image_id, "file_name": p.file_name, "height": p.scene.height,
             "width": p.scene.width}
        )  # fmt: skip
        visible = visible_masks(p.scene)
        parts = part_masks(p.scene, visible)
        ann_ids = []
        for j in range(len(p.scene.objects)):
            ann_id += 1
            ann_ids.append(ann_id)
            coco["annotations"].append(_annotation(p, j, ann_id, visible, parts))
        for j, described in sorted(p.refs.items()):
            ref_id += 1
            sentences = []
            for expr, text in described:
                sent_id += 1
                sentences.append(
                    {"tokens": text.split(), "raw": text, "sent": text, "sent_id": sent_id}
                )
                for phrase in noun_phrases(p.scene, expr, text, j):
                    truth.setdefault(p.split, []).append(
                        {"sent_id": sent_id, "ref_id": ref_id, "role": phrase.role,
                         "phrase": text[phrase.start : phrase.end], "start": phrase.start,
                         "end": phrase.end, "head_start": phrase.head_start,
                         "head_end": phrase.head_end,
                         "ann_ids": [ann_ids[k] for k in phrase.objects]}
                    )  # fmt: skip
            refs.append(
                {"sent_ids": [s["sent_id"] for s in sentences],
                 # refer names a ref "<image stem>_<ann_id>"; readers take the image from COCO.
                 "file_name": f"{Path(p.file_name).stem}_{ann_ids[j]}.png",
                 "ann_id": ann_ids[j], "ref_id": ref_id, "image_id": p.image_id,
                 "split": p.split, "sentences": sentences,
                 "category_id": SHAPES.index(p.scene.objects[j].shape) + 1}
            )  # fmt: skip
    return refs, coco, truth
