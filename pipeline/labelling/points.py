"""Point targets: M points uniform in a mask's box, labelled by the mask (DESIGN §1, §6).

These are what the trainer's point head learns: positives where the pseudo-mask is, negatives in
the rest of its box. Each candidate's draw is seeded by a stable hash of (seed, sample_id,
cand_idx), so it depends on neither shard layout, order nor process.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def candidate_rng(seed: int, sample_id: str, cand_idx: int) -> np.random.Generator:
    """A generator seeded by a stable hash (not Python's salted `hash`) of the candidate."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}\0{cand_idx}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_points(
    mask: np.ndarray, bbox: list[float], m: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """m points uniform in the xywh box of an (H, W) mask, label = mask at the point's pixel.

    Returns [{"x", "y", "label"}] with x, y normalised to [0, 1] by width and height.
    """
    height, width = mask.shape
    x0, y0, w, h = bbox
    if w <= 0 or h <= 0:
        return []
    xs = x0 + rng.random(m) * w  # (m,) pixels, in [x0, x0 + w)
    ys = y0 + rng.random(m) * h  # (m,)
    px = np.clip(xs.astype(np.int64), 0, width - 1)
    py = np.clip(ys.astype(np.int64), 0, height - 1)
    labels = mask[py, px].astype(np.int8)  # (m,) 1 inside, 0 outside
    xs_n = np.clip(xs / width, 0.0, 1.0).astype(np.float32)
    ys_n = np.clip(ys / height, 0.0, 1.0).astype(np.float32)
    return [
        {"x": float(x), "y": float(y), "label": int(lab)}
        for x, y, lab in zip(xs_n, ys_n, labels, strict=True)
    ]
