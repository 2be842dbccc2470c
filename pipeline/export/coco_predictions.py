"""A model's masks for (image, text) rows as one COCO instances document (`predict --texts`).

Images: one entry per distinct image file (id 1..N in order of first appearance, `file_name`
relative to --images). Annotations: one per CSV row, `id` = the row number, its mask as
compressed RLE (`{"size": [H, W], "counts": str}`, what `pycocotools.COCO` and `loadRes` read),
`bbox` (xywh), `area`, `score` (the model's referent confidence), `iscrowd` 0, category 1
("referent": a referring expression names one object, not a class), and the row's `text` and
`mask_file` as extra fields COCO readers ignore. An empty mask is kept (area 0, bbox zeros): every
row has its annotation, so row numbers and ids always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycocotools import mask as mask_utils

from pipeline.core.rle import encode_rle, to_rle

CATEGORY = {"id": 1, "name": "referent", "supercategory": "referent"}


@dataclass(frozen=True)
class RowPrediction:
    """One row's prediction, as `predict --texts` hands it to the document."""

    row: int
    image: str  # relative to --images
    height: int
    width: int
    text: str
    mask_rle: str  # COCO RLE counts at (height, width)
    score: float
    mask_file: str  # relative to the output folder


def row_prediction(row: int, image: str, text: str, mask: Any, score: float, mask_file: str):
    """The `RowPrediction` of an (H, W) bool mask."""
    counts, _ = encode_rle(mask)
    h, w = mask.shape
    return RowPrediction(row, image, int(h), int(w), text, counts, float(score), mask_file)


def predictions_document(rows: Sequence[RowPrediction], description: str) -> dict[str, Any]:
    """The COCO document of `rows` (module docstring), annotations in row order."""
    images: dict[str, dict[str, Any]] = {}
    annotations = []
    for r in sorted(rows, key=lambda r: r.row):
        entry = images.setdefault(
            r.image,
            {"id": len(images) + 1, "file_name": r.image, "height": r.height, "width": r.width},
        )
        rle = to_rle(r.mask_rle, r.height, r.width)
        area = int(mask_utils.area(rle))
        bbox = [float(v) for v in mask_utils.toBbox(rle)] if area else [0.0, 0.0, 0.0, 0.0]
        annotations.append(
            {
                "id": r.row,
                "image_id": entry["id"],
                "category_id": CATEGORY["id"],
                "segmentation": {"size": [r.height, r.width], "counts": r.mask_rle},
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
                "score": round(r.score, 6),
                "text": r.text,
                "mask_file": r.mask_file,
            }
        )
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [CATEGORY],
    }
