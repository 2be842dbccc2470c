"""Relevance maps: where in the image a candidate phrase is, as a (G, G) map (DESIGN §4).

The attention stage writes one map per (sample, candidate) from one of four sources:

- "clip": CLIP Surgery — the phrase's text feature against the image's cached dense features,
  with the redundant feature (the empty prompt, or the sample's other phrases) removed
  (`pipeline.models.clip_surgery.clip_maps`). G is CLIP's patch grid (448 / 16 = 28 for
  ViT-B-16).
- "gt-mask" / "gt-box": oracles that replace CLIP by the referent's ground truth pooled to the
  same kind of grid (area fraction of each cell covered by the mask or by the filled box): the
  upper bound of the prompting step. Every candidate of a sample gets its referent's map.
- "centre": a centred prior for object-centric images (ImageNet: one object of the class, in the
  middle), standing in for CLIP where the paper notes comprehensive responses are easy to get. It
  needs neither CLIP weights nor ground truth; it knows nothing of the phrase.

Maps follow `pipeline.labelling.grid`'s convention: cell (i, j) covers rows [i·H/G, (i+1)·H/G) and
columns [j·W/G, (j+1)·W/G) of the original H×W image.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.dataset import GroundTruth
from pipeline.labelling.grid import mask_to_grid
from pipeline.models.options import ORACLE_SOURCES


def centre_map(grid: int, sigma: float) -> np.ndarray:
    """The centre prior (G, G) float32: an isotropic Gaussian at the image centre, peak 1.

    Evaluated at cell centres in normalised image coordinates (x / W, y / H), so `sigma` is a
    fraction of each side: on a non-square image the prior stretches with the image, as
    object-centric photos frame their object. Equal for every image: it depends on no pixels.
    """
    centres = (np.arange(grid) + 0.5) / grid - 0.5  # (G,) cell centres around 0
    d2 = centres[:, None] ** 2 + centres[None, :] ** 2  # (G, G)
    return np.exp(-d2 / (2.0 * sigma**2)).astype(np.float32)


def _axis_coverage(lo: float, hi: float, n: int, g: int) -> np.ndarray:
    """(g,) share of each of g equal cells over [0, n) covered by the interval [lo, hi)."""
    edges = np.arange(g + 1) * (n / g)  # (g+1,) cell edges in pixels
    lo, hi = max(lo, 0.0), min(hi, float(n))
    overlap = np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo)  # (g,)
    return np.clip(overlap, 0.0, None) * (g / n)


def box_to_grid(
    bbox: tuple[float, float, float, float], image_size: tuple[int, int], grid: int
) -> np.ndarray:
    """A filled COCO xywh box → (G, G) exact area fraction of each cell it covers.

    Sub-pixel exact (no rounding of the box to pixels); equals `mask_to_grid` of the box mask
    when the box has integer edges.
    """
    x, y, w, h = (float(v) for v in bbox)
    height, width = image_size
    rows = _axis_coverage(y, y + h, height, grid)  # (G,)
    cols = _axis_coverage(x, x + w, width, grid)  # (G,)
    return np.outer(rows, cols)  # (G, G)


def oracle_map(source: str, gt: GroundTruth, grid: int) -> np.ndarray:
    """The gt-mask or gt-box relevance map (G, G) float32 of one referent."""
    if source == "gt-mask":
        return mask_to_grid(gt.mask, grid).astype(np.float32)
    if source == "gt-box":
        return box_to_grid(gt.bbox, gt.mask.shape, grid).astype(np.float32)
    raise ValueError(f"{source!r} is not an oracle source ({', '.join(ORACLE_SOURCES)})")
