"""One held-out sample of a report's gallery: what the model was given, did and should have done.

`GalleryItem` is what the trainer side fills in (trainer/inference/held_out.py); `gallery_png`
draws it as two panels side by side, the model's answer and the reference, at the same scale:

    model      its mask filled blue and outlined, its points: positive ● green, negative ● red
    reference  the ground truth (or, where a dataset has none, the referent pseudo-label) amber

each labelled in its corner.

Drawn with PIL rather than matplotlib: a report holds several of these and each is a plain
overlay, which PIL draws at the pixel size the page shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

MASK_RGB = (30, 144, 255)  # the model's mask
REFERENCE_RGB = (255, 200, 0)  # ground truth / pseudo-label
POSITIVE_RGB = (0, 200, 60)
NEGATIVE_RGB = (230, 20, 20)
ALPHA = 0.5


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


def _panel(image: np.ndarray, mask: np.ndarray | None, rgb: tuple[int, int, int], side: int,
           label: str) -> Image.Image:  # fmt: skip
    """`image` scaled to `side` on its long side, `mask` tinted `rgb` with a 2 px outline drawn
    at display scale (an outline drawn at full size would vanish in the downscale), and `label`
    in the top-left corner."""
    panel = Image.fromarray(image)
    scale = side / max(panel.size)
    size = (max(1, round(panel.width * scale)), max(1, round(panel.height * scale)))
    pixels = np.asarray(panel.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    if mask is not None and mask.any():
        shown = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        colour = np.array(rgb, dtype=np.float32)
        pixels[shown] = (1 - ALPHA) * pixels[shown] + ALPHA * colour
        p = np.pad(shown, 2)
        inner = shown.copy()
        for dy in range(-2, 3):  # eroded by 2 px: what is left of the mask is its outline
            for dx in range(-2, 3):
                inner &= p[2 + dy : 2 + dy + shown.shape[0], 2 + dx : 2 + dx + shown.shape[1]]
        pixels[shown & ~inner] = colour
    out = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    box = draw.textbbox((4, 3), label)
    draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text((4, 3), label, fill=(255, 255, 255))
    return out


def gallery_png(item: GalleryItem, side: int = 250) -> bytes:
    """PNG bytes of the model panel and the reference panel, each `side` px on its long side."""
    model = _panel(item.image, item.mask, MASK_RGB, side, "model")
    draw = ImageDraw.Draw(model)
    radius = max(4, side // 50)
    for (x, y), positive in zip(item.points, item.positive, strict=True):
        cx, cy = x * model.width, y * model.height
        fill = POSITIVE_RGB if positive else NEGATIVE_RGB
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill,
                     outline=(255, 255, 255), width=1)  # fmt: skip
    reference = _panel(item.image, item.reference, REFERENCE_RGB, side, item.reference_kind)
    gap = 8
    canvas = Image.new("RGB", (model.width + gap + reference.width, model.height), "white")
    canvas.paste(model, (0, 0))
    canvas.paste(reference, (model.width + gap, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
