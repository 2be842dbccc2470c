"""Relevance map → SAM prompts → one mask per candidate (DESIGN §4).

Maps follow `pipeline.labelling.grid`'s convention. Rules min-max normalise a map to [0, 1]
first; a constant map carries no location and gives an empty mask (score 0) with a warning.

Rules (`PROMPT_RULES`, variants are data: a name → a function with its parameters bound):

- "clip_surgery": CLIP Surgery's SAM demo, faithfully (github.com/xmed-lab/CLIP_Surgery,
  clip/clip.py `similarity_map_to_points(sm, shape, t=0.8, down_sample=2)` and demo.py): bilinear
  downsampling of the map to (G//2, G//2) (for even G the mean of 2×2 cells), min-max
  normalisation, num = min(#cells ≥ 0.8, cells // 2); positives = the num highest cells,
  negatives = the num lowest, each at its cell centre truncated to int pixels; SAM with
  multimask_output=True; keep the mask of highest predicted IoU. (Ties are broken by a stable
  sort here, so the choice among equal cells is deterministic; the reference's is unspecified.)
- "box_points" (ours): the map, upsampled bilinearly to pixels, is thresholded at 0.5 and its
  connected component of largest relevance mass is the object region; prompts = the region's
  bounding box + 3 positives (the region's deepest point, then farthest-point spread over its
  confident core, map ≥ 0.8, ≥ half a cell inside the edge) + ≤ 2 negatives (box pixels with
  map ≤ 0.1 farthest from the region: holes and empty corners of the box). SAM multimask; the
  output maximising agreement + predicted IoU is kept. Why: SAM is far better at "segment the
  object in this box" than at reading a cloud of cell-centre points (the box alone is ~the GT-box
  reference), the spread positives say which object of the box, the negatives cut the
  background the box cannot, and the map itself picks among SAM's nested candidates.
- "box_points_clicks": the same, then ≤ 2 corrective clicks (`_corrective_click`) placed where
  the mask and the map disagree most, each kept only if agreement rises. Better on faithful
  maps (gt-mask), worse where the map is only a coarse stand-in for the shape (gt-box).
  Numbers for all rules: bench/prompting_rules.py.

Agreement (`pipeline.labelling.grid.agreement`) is the soft IoU of a mask and a map.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything import SamPredictor

from pipeline.labelling.grid import ImageSize, agreement, cell_side, normalize_map, upsample_map

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Prompts:
    """SAM prompts in the original image's pixel coordinates."""

    points: np.ndarray  # (P, 2) float32 (x, y); P may be 0
    labels: np.ndarray  # (P,) int64: 1 positive, 0 negative
    box: np.ndarray | None = None  # (4,) float32 (x0, y0, x1, y1), or no box


@dataclass(frozen=True, eq=False)
class PromptResult:
    """One candidate's mask and how it was obtained."""

    mask: np.ndarray  # (H, W) bool at the original size
    score: float  # SAM's predicted IoU of the chosen mask
    agreement: float  # soft IoU of the mask with the map (module docstring), in [0, 1]
    prompts: Prompts


PromptRule = Callable[[np.ndarray, SamPredictor, ImageSize], PromptResult]


def _empty_result(image_size: ImageSize) -> PromptResult:
    log.warning("constant relevance map: no location to prompt, returning an empty mask")
    empty = Prompts(np.zeros((0, 2), np.float32), np.zeros((0,), np.int64))
    return PromptResult(np.zeros(image_size, dtype=bool), 0.0, 0.0, empty)


def clip_surgery_prompts(
    relevance: np.ndarray, image_size: ImageSize, t: float = 0.8, down_sample: int = 2
) -> Prompts:
    """CLIP Surgery's `similarity_map_to_points`: num positives and num negatives.

    relevance: (G, G) raw or normalised map; image_size: (H, W). Returns 2·num points.
    """
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


@torch.no_grad()
def clip_surgery_rule(
    relevance: np.ndarray,
    predictor: SamPredictor,
    image_size: ImageSize,
    t: float = 0.8,
    down_sample: int = 2,
    multimask: bool = True,
) -> PromptResult:
    """The CLIP Surgery demo: its points, SAM multimask, the mask of highest predicted IoU."""
    r = normalize_map(relevance)
    if r is None:
        return _empty_result(image_size)
    prompts = clip_surgery_prompts(r, image_size, t=t, down_sample=down_sample)
    masks, scores, _ = predictor.predict(
        point_coords=prompts.points, point_labels=prompts.labels, multimask_output=multimask
    )  # (3 or 1, H, W), (3 or 1,)
    best = int(np.argmax(scores))
    return PromptResult(masks[best], float(scores[best]), agreement(masks[best], r), prompts)


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
    allowed: np.ndarray, depth: np.ndarray, k: int, min_dist: float, stride: int
) -> np.ndarray:
    """≤ k (x, y) points in `allowed` (H, W): the deepest (max `depth`), then farthest-spread."""
    sub = np.zeros_like(allowed)
    sub[::stride, ::stride] = True  # a lattice keeps the search cheap on large images
    ys, xs = np.nonzero(allowed & sub)
    if ys.size == 0:  # `allowed` is smaller than the lattice spacing
        ys, xs = np.nonzero(allowed)
    if k <= 0 or ys.size == 0:
        return np.zeros((0, 2), np.float32)
    first = int(np.argmax(depth[ys, xs]))
    cands = np.stack([xs, ys], axis=1).astype(np.float32)  # (N, 2) x, y
    return cands[_farthest_points(cands, first, k, min_dist)] + 0.5  # pixel centres


def box_points_prompts(
    relevance: np.ndarray,
    image_size: ImageSize,
    region_t: float = 0.5,
    pos_t: float = 0.8,
    neg_t: float = 0.1,
    n_pos: int = 3,
    n_neg: int = 2,
    margin: float = 0.5,
) -> Prompts:
    """Box of the map's main region, spread positives inside it, negatives in its empty parts.

    relevance: (G, G) normalised map; image_size: (H, W). The map is upsampled to pixels
    (bilinear between cell centres, so a region edge falls where the map crosses `region_t`,
    i.e. at sub-cell precision for an area-fraction map). Region = the connected component of
    {map ≥ region_t} with the largest relevance mass (a CLIP map's stray peaks are small).
    Box = its bounding box. Positives: the region's deepest point (farthest from its edge) and
    farthest-spread points with map ≥ pos_t, all ≥ `margin` cells inside the edge. Negatives:
    points of the box with map ≤ neg_t, deepest first, ≥ `margin` cells from any region pixel:
    the box already excludes the outside, so only holes and corners of the box need them.
    """
    up = upsample_map(relevance, image_size)  # (H, W)
    region = up >= min(region_t, float(up.max()))
    comps, n = ndimage.label(region)
    mass = ndimage.sum(up, comps, index=np.arange(1, n + 1))  # (n,)
    comp = comps == int(np.argmax(mass)) + 1  # (H, W)
    ys, xs = np.nonzero(comp)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)

    cell = cell_side(relevance, image_size)
    stride = max(1, int(cell // 4))
    depth_in = ndimage.distance_transform_edt(comp)  # (H, W) distance to the region's edge
    allowed = comp & (depth_in >= margin * cell) & (up >= pos_t)
    if not allowed.any():  # thin or faint region: fall back to its deepest pixels
        allowed = depth_in >= depth_in.max()
    pos = _spread_points(allowed, depth_in, n_pos, min_dist=cell, stride=stride)

    in_box = np.zeros_like(comp)
    in_box[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
    depth_out = ndimage.distance_transform_edt(~region)  # (H, W) distance to any region pixel
    allowed = in_box & (up <= neg_t) & (depth_out >= margin * cell)
    neg = _spread_points(allowed, depth_out, n_neg, min_dist=cell, stride=stride)

    labels = np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]
    return Prompts(np.concatenate([pos, neg]).astype(np.float32), labels, box)


def _corrective_click(
    mask: np.ndarray, up: np.ndarray, pos_t: float, neg_t: float, min_depth: float
) -> tuple[np.ndarray, int] | None:
    """The click an annotator would add: at the deepest point of the worst error vs the map.

    mask: (H, W) bool SAM mask; up: (H, W) upsampled normalised map. Errors are mask pixels
    where the map is clearly low (→ negative click) and map-high pixels the mask misses
    (→ positive). Returns ((x, y), label) or None when no error is `min_depth` pixels deep.
    """
    best: tuple[np.ndarray, int] | None = None
    best_depth = min_depth
    for error, label in ((mask & (up <= neg_t), 0), (~mask & (up >= pos_t), 1)):
        if not error.any():
            continue
        depth = ndimage.distance_transform_edt(error)  # (H, W)
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        if depth[y, x] >= best_depth:
            best, best_depth = (np.array([x + 0.5, y + 0.5], np.float32), label), depth[y, x]
    return best


@torch.no_grad()
def box_points_rule(
    relevance: np.ndarray,
    predictor: SamPredictor,
    image_size: ImageSize,
    region_t: float = 0.5,
    pos_t: float = 0.8,
    neg_t: float = 0.1,
    n_pos: int = 3,
    n_neg: int = 2,
    margin: float = 0.5,
    multimask: bool = True,
    w_score: float = 1.0,
    corrections: int = 0,
) -> PromptResult:
    """Box + points (`box_points_prompts`), the SAM mask that best agrees with the map.

    Among SAM's multimask outputs the choice maximises agreement + w_score · predicted IoU: the
    map says which of the nested candidates (part / object / group) it means, SAM's score
    breaks near-ties. Then up to `corrections` corrective clicks (`_corrective_click`), each
    kept only if the new mask agrees better with the map (the map is the only judge there is).
    """
    r = normalize_map(relevance)
    if r is None:
        return _empty_result(image_size)
    prompts = box_points_prompts(r, image_size, region_t, pos_t, neg_t, n_pos, n_neg, margin)

    def predict(p: Prompts) -> tuple[np.ndarray, float, float]:
        has_points = len(p.labels) > 0
        masks, scores, _ = predictor.predict(
            point_coords=p.points if has_points else None,
            point_labels=p.labels if has_points else None,
            box=p.box,
            multimask_output=multimask,
        )  # (C, H, W), (C,)
        agree = np.array([agreement(m, r) for m in masks])  # (C,)
        best = int(np.argmax(agree + w_score * scores))
        return masks[best], float(scores[best]), float(agree[best])

    mask, score, agree = predict(prompts)
    up = upsample_map(r, image_size) if corrections > 0 else None  # (H, W)
    for _ in range(corrections):
        click = _corrective_click(mask, up, pos_t, neg_t, margin * cell_side(r, image_size))
        if click is None:
            break
        points = np.concatenate([prompts.points, click[0][None]])  # (P+1, 2)
        trial = Prompts(points, np.r_[prompts.labels, click[1]], prompts.box)
        t_mask, t_score, t_agree = predict(trial)
        if t_agree <= agree:
            break
        prompts, mask, score, agree = trial, t_mask, t_score, t_agree
    return PromptResult(mask, score, agree, prompts)


PROMPT_RULES: dict[str, PromptRule] = {
    "clip_surgery": clip_surgery_rule,
    "clip_surgery_single": functools.partial(clip_surgery_rule, multimask=False),
    "box_points": box_points_rule,
    "box_points_clicks": functools.partial(box_points_rule, corrections=2),
    # box_points without negative points: what they buy (ablation row 10)
    "box_points_positive": functools.partial(box_points_rule, n_neg=0),
}


def prompt_mask(
    rule: str, relevance: np.ndarray, predictor: SamPredictor, image_size: ImageSize
) -> PromptResult:
    """One mask for one candidate: (G, G) map + predictor with the image set → (H, W) mask.

    `predictor` must already hold the image (`set_image`): encode each image once and call this
    for all its candidates and rules.
    """
    if rule not in PROMPT_RULES:
        raise ValueError(f"unknown prompting rule {rule!r}: choose one of {sorted(PROMPT_RULES)}")
    if not predictor.is_image_set:
        raise RuntimeError("call predictor.set_image(image) before prompting")
    if tuple(predictor.original_size) != tuple(image_size):
        raise ValueError(
            f"image_size {tuple(image_size)} differs from the predictor's image "
            f"{tuple(predictor.original_size)}: pass the original (H, W) of the image that is set"
        )
    return PROMPT_RULES[rule](relevance, predictor, image_size)
