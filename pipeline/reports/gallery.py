"""One held-out sample of a report's gallery: what the model was given, did and should have done.

`GalleryItem` is what the trainer side fills in (trainer/inference/held_out.py); `gallery_png`
draws it as two panels side by side, the model's answer and the reference, at the same scale:

    model      its mask filled blue and outlined, its points: positive ● green, negative ● red
    reference  the ground truth (or, where a dataset has none, the referent pseudo-label) amber

Drawn with PIL rather than matplotlib: a report holds several of these and each is a plain
overlay, which PIL draws at the pixel size the page shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

MASK_RGB = (31, 119, 180)  # the model's mask
REFERENCE_RGB = (255, 176, 0)  # ground truth / pseudo-label
POSITIVE_RGB = (0, 200, 60)
NEGATIVE_RGB = (230, 20, 20)
ALPHA = 0.45


@dataclass(frozen=True)
class GalleryItem:
    """A held-out sample with the model's prediction and its reference mask."""

    store: str  # the label store's name
    sample_id: str
    split: str
    expression: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, the most confident query's mask
    points: np.ndarray  # (M, 2) x / W, y / H of the prompts SAM was given
    positive: np.ndarray  # (M,) bool
    score: float  # the query's referent confidence
    reference: np.ndarray | None  # (H, W) bool, None when the sample has no reference
    reference_kind: str  # "ground truth" | "pseudo-label" | "none"

    @property
    def iou(self) -> float | None:
        """IoU (%) of the mask with the reference (None without one; 0 for an empty union)."""
        if self.reference is None:
            return None
        union = int((self.mask | self.reference).sum())
        return 100.0 * int((self.mask & self.reference).sum()) / union if union else 0.0


def _overlay(image: np.ndarray, mask: np.ndarray | None, rgb: tuple[int, int, int]) -> np.ndarray:
    """`image` with `mask` tinted `rgb` and its boundary drawn opaque."""
    out = image.astype(np.float32)
    if mask is None or not mask.any():
        return out.astype(np.uint8)
    colour = np.array(rgb, dtype=np.float32)
    out[mask] = (1 - ALPHA) * out[mask] + ALPHA * colour
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    out[mask & ~inner] = colour
    return out.astype(np.uint8)


def _resized(pixels: np.ndarray, side: int) -> Image.Image:
    image = Image.fromarray(pixels)
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def gallery_png(item: GalleryItem, side: int = 300) -> bytes:
    """PNG bytes of the model panel and the reference panel, each `side` px on its long side."""
    model = _resized(_overlay(item.image, item.mask, MASK_RGB), side)
    draw = ImageDraw.Draw(model)
    radius = max(3, side // 60)
    for (x, y), positive in zip(item.points, item.positive, strict=True):
        cx, cy = x * model.width, y * model.height
        fill = POSITIVE_RGB if positive else NEGATIVE_RGB
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill,
                     outline=(255, 255, 255), width=1)  # fmt: skip
    reference = _resized(_overlay(item.image, item.reference, REFERENCE_RGB), side)
    gap = 8
    canvas = Image.new("RGB", (model.width + gap + reference.width, model.height), "white")
    canvas.paste(model, (0, 0))
    canvas.paste(reference, (model.width + gap, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
