"""Relevance maps on their grid: normalising, pooling a mask to the grid, upsampling, agreement.

Map convention. A relevance map is (G, G) over the image resized to a square (any G, e.g. 28 or
32): cell (i, j) covers rows [i·H/G, (i+1)·H/G) and cols [j·W/G, (j+1)·W/G) of the original H×W
image, so one cell is H/G × W/G pixels.

Agreement between a mask and a map is their soft IoU on the grid: with m = the mask's area
fraction per cell and r the normalised map, agreement = Σ min(m, r) / Σ max(m, r) ∈ [0, 1]. It is
the plain IoU when both are binary, 1 for a mask that exactly explains an oracle gt-mask map, and
does not depend on a threshold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def _area_weights(n: int, g: int) -> np.ndarray:
    """(g, n) share of each of n pixels falling in each of g equal cells, rows sum to 1."""
    edges = np.arange(g + 1) * (n / g)  # (g+1,) cell edges in pixels
    px = np.arange(n)
    overlap = np.minimum(edges[1:, None], px + 1) - np.maximum(edges[:-1, None], px)  # (g, n)
    return np.clip(overlap, 0.0, None) * (g / n)


def mask_to_grid(mask: np.ndarray, grid: int | tuple[int, int]) -> np.ndarray:
    """(H, W) mask → (G, G) (or (Gh, Gw)) exact area fraction of each cell covered by the mask.

    This is also the gt-mask oracle relevance map, and the gt-box one for a filled box.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    m = np.asarray(mask, dtype=np.float64)
    return _area_weights(m.shape[0], gh) @ m @ _area_weights(m.shape[1], gw).T  # (Gh, Gw)


def upsample_map(relevance: np.ndarray, image_size: ImageSize) -> np.ndarray:
    """(G, G) map → (H, W) float32, bilinear between cell centres (the map convention)."""
    t = torch.as_tensor(np.asarray(relevance, dtype=np.float32))[None, None]  # (1, 1, G, G)
    up = F.interpolate(t, size=tuple(image_size), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def agreement(mask: np.ndarray, relevance: np.ndarray) -> float:
    """Soft IoU of an (H, W) mask with a normalised (G, G) map (module docstring), in [0, 1]."""
    m = mask_to_grid(mask, relevance.shape)  # (G, G)
    union = np.maximum(m, relevance).sum()
    return float(np.minimum(m, relevance).sum() / union) if union > 0 else 0.0


def cell_side(relevance: np.ndarray, image_size: ImageSize) -> float:
    """Mean side of one map cell in pixels."""
    return 0.5 * (image_size[0] / relevance.shape[0] + image_size[1] / relevance.shape[1])
