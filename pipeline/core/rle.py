"""COCO RLE for the store's masks: one encoder and one decoder for every stage and reader.

Masks are stored at the image's original size as the RLE `counts` string; height and width come
from the sample row. Kept free of torch so light readers (render, composites) can import it.
"""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> tuple[str, list[float]]:
    """(H, W) bool mask → COCO RLE counts (str) and its box (COCO xywh)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return rle["counts"].decode("ascii"), bbox


def to_rle(counts: str, height: int, width: int) -> dict:
    """The pycocotools RLE object of stored counts at (height, width)."""
    return {"size": [int(height), int(width)], "counts": counts.encode("ascii")}


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """COCO RLE counts at (height, width) → (H, W) bool mask."""
    with warnings.catch_warnings():
        # pycocotools 2.0.x's decode trips numpy 2's copy-keyword deprecation; harmless here.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(to_rle(counts, height, width)).astype(bool)
