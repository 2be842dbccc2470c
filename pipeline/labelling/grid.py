"""Relevance maps on their grid: normalising, pooling a mask to the grid, upsampling, agreement,
and the coarse pixel frame where prompts are built (`Frame`).

Map convention. A relevance map is (G, G) over the image resized to a square (any G, e.g. 28 or
32): cell (i, j) covers rows [i·H/G, (i+1)·H/G) and cols [j·W/G, (j+1)·W/G) of the original H×W
image, so one cell is H/G × W/G pixels.

Agreement between a mask and a map is their soft IoU on the grid: with m = the mask's area
fraction per cell and r the normalised map, agreement = Σ min(m, r) / Σ max(m, r) ∈ [0, 1]. It is
the plain IoU when both are binary, 1 for a mask that exactly explains an oracle gt-mask map, and
does not depend on a threshold.

The frame. Prompts are built and masks compared with maps on a coarse pixel lattice over the image,
SAM's low-res mask resolution (long side 256, `Frame`), not on the full-size image: map, frame and
image coordinates are related by scales alone, so a frame point is an image point analytically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ImageSize = tuple[int, int]  # (H, W) of the original image


def normalize_map(relevance: np.ndarray) -> np.ndarray | None:
    """Min-max normalise a (G, G) map to [0, 1]; None when it is constant (no location)."""
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"relevance map must be 2-D (G, G), got shape {r.shape}")
    lo, hi = float(r.min()), float(r.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("relevance map holds NaN or inf: check the attention stage's output")
    return None if hi - lo <= 1e-12 else (r - lo) / (hi - lo)


def area_weights(n: int, g: int) -> np.ndarray:
    """(g, n) share of each of n pixels falling in each of g equal cells, rows sum to 1."""
    edges = np.arange(g + 1) * (n / g)  # (g+1,) cell edges in pixels
    px = np.arange(n)
    overlap = np.minimum(edges[1:, None], px + 1) - np.maximum(edges[:-1, None], px)  # (g, n)
    return np.clip(overlap, 0.0, None) * (g / n)


def mask_to_grid(mask: np.ndarray, grid: int | tuple[int, int]) -> np.ndarray:
    """(..., H, W) mask → (..., G, G) (or Gh, Gw) exact area fraction of each cell it covers.

    This is also the gt-mask oracle relevance map, and the gt-box one for a filled box.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    m = np.asarray(mask, dtype=np.float64)
    return area_weights(m.shape[-2], gh) @ m @ area_weights(m.shape[-1], gw).T  # (..., Gh, Gw)


def _taps(n: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps of n equal pixels' centres on g cell centres: (lo, hi, frac), each (n,);
    constant over the outer half cells (torch's align_corners=False)."""
    src = np.maximum((np.arange(n) + 0.5) * (g / n) - 0.5, 0.0)  # (n,) in cell units
    lo = np.minimum(src.astype(np.int64), g - 1)
    return lo, np.minimum(lo + 1, g - 1), src - lo


def upsample_map(relevance: np.ndarray, image_size: ImageSize) -> np.ndarray:
    """(G, G) map → (H, W) float32, bilinear between cell centres (the map convention)."""
    r = np.asarray(relevance, dtype=np.float64)
    lo, hi, f = _taps(int(image_size[0]), r.shape[0])
    rows = r[lo] * (1 - f)[:, None] + r[hi] * f[:, None]  # (H, G)
    lo, hi, f = _taps(int(image_size[1]), r.shape[1])
    return (rows[:, lo] * (1 - f) + rows[:, hi] * f).astype(np.float32)


def agreement(mask: np.ndarray, relevance: np.ndarray) -> float:
    """Soft IoU of an (H, W) mask with a normalised (G, G) map (module docstring), in [0, 1]."""
    return float(soft_iou(mask_to_grid(mask, relevance.shape), relevance))


def soft_iou(fractions: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Agreement from masks' area fractions (..., G, G) and a normalised (G, G) map → (...)."""
    inter = np.minimum(fractions, relevance).sum(axis=(-2, -1))
    union = np.maximum(fractions, relevance).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def cell_side(relevance: np.ndarray, image_size: ImageSize) -> float:
    """Mean side of one map cell in pixels."""
    return 0.5 * (image_size[0] / relevance.shape[0] + image_size[1] / relevance.shape[1])


@dataclass(frozen=True)
class Frame:
    """The image on a coarse pixel lattice: frame pixel (u, v) covers image rows [u·sy, (u+1)·sy)
    and columns [v·sx, (v+1)·sx) of the original (H, W), with (sy, sx) = `scale`.

    `Frame.of` makes SAM's low-res one (its mask logits are 256² over the padded 1024² input, so
    the image is long side 256 there): a map upsampled to the frame is the full-size upsampled map
    sampled at frame pixel centres (`upsample_map` is bilinear between cell centres either way).
    """

    image_size: ImageSize  # (H, W) of the original image
    shape: tuple[int, int]  # (h, w) frame pixels

    @classmethod
    def of(cls, image_size: ImageSize, long_side: int = 256) -> Frame:
        """The frame of an (H, W) image with `long_side` pixels along its longer side."""
        h, w = (int(v) for v in image_size)
        scale = long_side / max(h, w)
        return cls((h, w), (max(1, round(h * scale)), max(1, round(w * scale))))

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): image pixels per frame pixel along rows and columns."""
        return self.image_size[0] / self.shape[0], self.image_size[1] / self.shape[1]

    def to_image(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Frame pixel centres (rows, cols: (N,) ints) → (N, 2) float32 image (x, y)."""
        sy, sx = self.scale
        return np.stack([(cols + 0.5) * sx, (rows + 0.5) * sy], axis=-1).astype(np.float32)
