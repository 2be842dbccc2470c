"""Referent pseudo-labels as a COCO instances document (images, annotations, categories).

One annotation per exported sample: its referent's mask as compressed RLE (`{"size": [H, W],
"counts": str}`, what pycocotools' `COCO.annToMask` and FiftyOne's COCO importer read), its box
(xywh), area, `score` (SAM's predicted IoU), `iscrowd` 0, and the sample's facts as extra fields
COCO readers ignore: `expression`, `phrase`, `sample_id`, `split`, `subset`, `cand_idx`.
Categories are the phrases' head nouns: pseudo-labels have no class, the phrase is what names it.

Image ids are the dataset's own when they are all integers (RefCOCO's COCO ids, the synthetic
world's), else 1..N in order of first appearance; file names are the image's base name, made
unique with the image's sha256 where two images share one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from pycocotools import mask as mask_utils

from pipeline.core.rle import to_rle
from pipeline.export.referents import ReferentLabel


def image_entries(labels: Sequence[ReferentLabel]) -> dict[str, dict[str, Any]]:
    """image_sha256 → COCO image entry (id, file_name, height, width, source path and sha256)."""
    first: dict[str, ReferentLabel] = {}
    for label in labels:
        first.setdefault(label.image_sha256, label)
    numeric = all(lab.image_id.isdigit() for lab in first.values())
    numeric = numeric and len({lab.image_id for lab in first.values()}) == len(first)
    names: dict[str, int] = {}
    for lab in first.values():
        base = PurePosixPath(lab.image_path).name
        names[base] = names.get(base, 0) + 1
    out = {}
    for i, (sha, lab) in enumerate(first.items(), start=1):
        base = PurePosixPath(lab.image_path).name
        out[sha] = {
            "id": int(lab.image_id) if numeric else i,
            "file_name": base if names[base] == 1 else f"{sha[:12]}_{base}",
            "height": lab.height,
            "width": lab.width,
            "source_path": lab.image_path,  # relative to the store's --data-root
            "sha256": sha,
        }
    return out


def category_ids(labels: Sequence[ReferentLabel]) -> dict[str, int]:
    """Head noun → category id (1..N, sorted by name)."""
    return {name: i for i, name in enumerate(sorted({lab.head for lab in labels}), start=1)}


def annotation(label: ReferentLabel, ann_id: int, image_id: int, category_id: int) -> dict:
    """The COCO annotation of one label (segmentation: one compressed RLE dict)."""
    rle = to_rle(label.mask_rle, label.height, label.width)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": rle["size"], "counts": label.mask_rle},
        "area": int(mask_utils.area(rle)),
        "bbox": [round(v, 2) for v in label.bbox],
        "iscrowd": 0,
        "score": None if label.sam_score is None else round(float(label.sam_score), 4),
        "expression": label.expression,
        "phrase": label.phrase,
        "sample_id": label.sample_id,
        "split": label.split,
        "subset": label.subset,
        "cand_idx": label.cand_idx,
    }


def coco_document(labels: Sequence[ReferentLabel], description: str) -> dict[str, Any]:
    """The COCO instances document of `labels` (annotation ids 1..N in label order)."""
    images = image_entries(labels)
    categories = category_ids(labels)
    annotations = [
        annotation(lab, i, images[lab.image_sha256]["id"], categories[lab.head])
        for i, lab in enumerate(labels, start=1)
    ]
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [
            {"id": i, "name": n, "supercategory": "phrase"} for n, i in categories.items()
        ],
    }
