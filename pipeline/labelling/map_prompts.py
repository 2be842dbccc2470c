"""Relevance map → SAM prompts, on the map's grid or on SAM's low-res frame (`grid.Frame`).

The prompt builders of `pipeline.labelling.prompting`'s rules (its docstring says what each rule
is and why). Every builder takes a normalised (G, G) map and the image's frame and returns
`Prompts` in original image pixels: a frame pixel is an image point by the frame's scale, so
nothing is computed at the image's full size (a frame is ≈ 6× fewer pixels than a COCO image).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pipeline.labelling.decoding import Prompts
from pipeline.labelling.grid import Frame, cell_side, upsample_map


def clip_surgery_prompts(
    relevance: np.ndarray, frame: Frame, t: float = 0.8, down_sample: int = 2
) -> Prompts:
    """CLIP Surgery's `similarity_map_to_points`: num positives and num negatives.

    relevance: (G, G) raw or normalised map. Returns 2·num points at cell centres of the
    downsampled grid, truncated to int pixels as the reference does (the frame is unused).
    """
    image_size = frame.image_size
    sm = torch.as_tensor(np.asarray(relevance, dtype=np.float32))[None, None]  # (1, 1, G, G)
    h, w = relevance.shape[0] // down_sample, relevance.shape[1] // down_sample
    sm = F.interpolate(sm, (h, w), mode="bilinear")[0, 0].reshape(-1)  # (h*w,) "to smooth"
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    rank = torch.sort(sm, stable=True).indices  # ascending
    num = max(1, min(int((sm >= t).sum()), sm.numel() // 2))  # ≥ 1: the max is always 1 ≥ t
    scale_h, scale_w = image_size[0] / h, image_size[1] / w
    idx = torch.cat([rank[-num:], rank[:num]]).numpy()  # positives, then negatives
    # +0.5: cell centre; clipped to the last pixel and truncated to int as in the reference.
    x = np.minimum((idx % w + 0.5) * scale_w, image_size[1] - 1).astype(np.int64)
    y = np.minimum((idx // w + 0.5) * scale_h, image_size[0] - 1).astype(np.int64)
    labels = np.r_[np.ones(num, np.int64), np.zeros(num, np.int64)]
    return Prompts(np.stack([x, y], axis=1).astype(np.float32), labels)


def _farthest_points(cands: np.ndarray, first: int, k: int, min_dist: float) -> np.ndarray:
    """Greedy farthest-point sampling: (N, 2) candidates → indices of ≤ k spread points."""
    chosen = [first]
    dist = np.linalg.norm(cands - cands[first], axis=1)  # (N,) distance to the chosen set
    while len(chosen) < k:
        j = int(np.argmax(dist))
        if dist[j] < min_dist:  # the rest would crowd the points already chosen
            break
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(cands - cands[j], axis=1))
    return np.asarray(chosen)


def _spread_points(
    allowed: np.ndarray, depth: np.ndarray, k: int, min_dist: float, frame: Frame
) -> np.ndarray:
    """≤ k image (x, y) points at frame pixels in `allowed` (h, w): the deepest, then spread."""
    rows, cols = np.nonzero(allowed)
    if k <= 0 or rows.size == 0:
        return np.zeros((0, 2), np.float32)
    first = int(np.argmax(depth[rows, cols]))
    cands = frame.to_image(rows, cols)  # (N, 2) x, y
    return cands[_farthest_points(cands, first, k, min_dist)]


def _edges(up: np.ndarray, comp: np.ndarray, t: float, step: float, n: int) -> tuple[int, int]:
    """[start, stop) image pixels of `comp` (h, w) along axis 1, from the frame map `up` (h, w).

    Per frame line, the region's first and last frame pixel are refined to where the map,
    linear between two frame samples `step` image pixels apart, crosses t; the image pixels of
    the region are those whose centre is past that crossing (a line touching the frame's edge
    keeps the image's edge: the map is constant over the outer half cell).
    """
    lines = np.flatnonzero(comp.any(axis=1))
    c, u, k = comp[lines], up[lines], np.arange(len(lines))
    first = np.argmax(c, axis=1)  # (L,)
    last = c.shape[1] - 1 - np.argmax(c[:, ::-1], axis=1)  # (L,)
    inside, outside = u[k, first], u[k, np.maximum(first - 1, 0)]
    cross = (first - 0.5 + (t - outside) / np.maximum(inside - outside, 1e-12)) * step
    start = np.where(first == 0, 0, np.ceil(cross - 0.5))  # first pixel centre ≥ the crossing
    inside, outside = u[k, last], u[k, np.minimum(last + 1, c.shape[1] - 1)]
    cross = (last + 0.5 + (inside - t) / np.maximum(inside - outside, 1e-12)) * step
    stop = np.where(last == c.shape[1] - 1, n, np.floor(cross - 0.5) + 1)
    return int(np.clip(start.min(), 0, n)), int(np.clip(stop.max(), 0, n))


def box_points_prompts(
    relevance: np.ndarray,
    frame: Frame,
    region_t: float = 0.5,
    pos_t: float = 0.8,
    neg_t: float = 0.1,
    n_pos: int = 3,
    n_neg: int = 2,
    margin: float = 0.5,
) -> Prompts:
    """Box of the map's main region, spread positives inside it, negatives in its empty parts.

    relevance: (G, G) normalised map. The map is upsampled to the frame (bilinear between cell
    centres, so a region edge falls where the map crosses `region_t`). Region = the connected
    component of {map ≥ region_t} with the largest relevance mass (a CLIP map's stray peaks are
    small). Box = its bounding box in image pixels (`_edges`). Positives: the region's deepest
    point (farthest from its edge) and farthest-spread points with map ≥ pos_t, all ≥ `margin`
    cells inside the edge. Negatives: points of the box with map ≤ neg_t, deepest first,
    ≥ `margin` cells from any region point: the box already excludes the outside, so only holes
    and corners of the box need them. Distances are in image pixels.
    """
    up = upsample_map(relevance, frame.shape)  # (h, w)
    t = min(region_t, float(up.max()))
    region = up >= t
    comps, n = ndimage.label(region)
    mass = ndimage.sum(up, comps, index=np.arange(1, n + 1))  # (n,)
    comp = comps == int(np.argmax(mass)) + 1  # (h, w)
    (sy, sx), (height, width) = frame.scale, frame.image_size
    x0, x1 = _edges(up, comp, t, sx, width)
    y0, y1 = _edges(up.T, comp.T, t, sy, height)
    box = np.array([x0, y0, x1, y1], dtype=np.float32)

    cell = cell_side(relevance, frame.image_size)
    depth_in = ndimage.distance_transform_edt(comp, sampling=frame.scale)  # (h, w) to the edge
    allowed = comp & (depth_in >= margin * cell) & (up >= pos_t)
    if not allowed.any():  # thin or faint region: fall back to its deepest points
        allowed = depth_in >= depth_in.max()
    pos = _spread_points(allowed, depth_in, n_pos, cell, frame)

    xs = (np.arange(frame.shape[1]) + 0.5) * sx  # (w,) frame pixel centres in image pixels
    ys = (np.arange(frame.shape[0]) + 0.5) * sy  # (h,)
    in_box = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]  # (h, w)
    depth_out = ndimage.distance_transform_edt(~region, sampling=frame.scale)  # to any region
    allowed = in_box & (up <= neg_t) & (depth_out >= margin * cell)
    neg = _spread_points(allowed, depth_out, n_neg, cell, frame)

    labels = np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]
    return Prompts(np.concatenate([pos, neg]).astype(np.float32), labels, box)


def corrective_click(
    mask: np.ndarray, up: np.ndarray, pos_t: float, neg_t: float, min_depth: float, frame: Frame
) -> tuple[np.ndarray, int] | None:
    """The click an annotator would add: at the deepest point of the worst error vs the map.

    mask: (h, w) bool SAM mask on the frame; up: (h, w) normalised map on the frame. Errors are
    mask points where the map is clearly low (→ negative click) and map-high points the mask
    misses (→ positive). Returns (image (x, y), label), or None when no error is `min_depth`
    image pixels deep.
    """
    best: tuple[np.ndarray, int] | None = None
    best_depth = min_depth
    for error, label in ((mask & (up <= neg_t), 0), (~mask & (up >= pos_t), 1)):
        if not error.any():
            continue
        depth = ndimage.distance_transform_edt(error, sampling=frame.scale)  # (h, w)
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        if depth[row, col] >= best_depth:
            best, best_depth = (
                (frame.to_image(np.array(row), np.array(col)), label),
                depth[row, col],
            )
    return best
