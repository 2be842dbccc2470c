"""Relevance map → SAM prompts → one mask per candidate (DESIGN §4).

Maps follow `pipeline.labelling.grid`'s convention. Rules min-max normalise a map to [0, 1]
first; a constant map carries no location and gives an empty mask (score 0) with a warning.

Rules (`PROMPT_RULES`, variants are data: a name → a `PromptRule`):

- "clip_surgery": CLIP Surgery's SAM demo, faithfully (github.com/xmed-lab/CLIP_Surgery,
  clip/clip.py `similarity_map_to_points(sm, shape, t=0.8, down_sample=2)` and demo.py): bilinear
  downsampling of the map to (G//2, G//2) (for even G the mean of 2×2 cells), min-max
  normalisation, num = min(#cells ≥ 0.8, cells // 2); positives = the num highest cells,
  negatives = the num lowest, each at its cell centre truncated to int pixels; SAM with
  multimask_output=True; keep the mask of highest predicted IoU. (Ties are broken by a stable
  sort here, so the choice among equal cells is deterministic; the reference's is unspecified.)
- "box_points" (ours): the map, upsampled bilinearly, is thresholded at 0.5 and its connected
  component of largest relevance mass is the object region; prompts = the region's bounding box
  + 3 positives (the region's deepest point, then farthest-point spread over its confident core,
  map ≥ 0.8, ≥ half a cell inside the edge) + ≤ 2 negatives (box points with map ≤ 0.1 farthest
  from the region: holes and empty corners of the box). SAM multimask; the output maximising
  agreement + predicted IoU is kept. Why: SAM is far better at "segment the object in this box"
  than at reading a cloud of cell-centre points (the box alone is ~the GT-box reference), the
  spread positives say which object of the box, the negatives cut the background the box
  cannot, and the map itself picks among SAM's nested candidates.
- "box_points_clicks": the same, then ≤ 2 corrective clicks (`_corrective_click`) placed where
  the mask and the map disagree most, each kept only if agreement rises. Better on faithful
  maps (gt-mask), worse where the map is only a coarse stand-in for the shape (gt-box).
  Numbers for all rules: bench/prompting_rules.py.

Where the work happens. Prompts are built on SAM's low-res frame (`grid.Frame`: long side 256),
never on the full-size image: the map is upsampled to the frame, distances are measured there in
image pixels, and a frame point is an image point by its scale; only the box edges are placed to
the image pixel, where the map (linear between two frame samples) crosses the threshold. All the
candidates of one image go through SAM's decoder together (`decoding.decode`), their outputs are
compared with the maps on the frame (agreement: the soft IoU of `grid.agreement`, of the mask
sampled at frame pixels), and only the chosen mask of each is upsampled to the original size.
`prompt_masks` is that path; `prompt_mask` is the same for one map.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamPredictor

from pipeline.labelling.decoding import Prompts, decode, frame_masks, full_masks
from pipeline.labelling.grid import (
    Frame,
    ImageSize,
    area_weights,
    cell_side,
    normalize_map,
    soft_iou,
    upsample_map,
)
from pipeline.labelling.map_prompts import (
    box_points_prompts,
    clip_surgery_prompts,
    corrective_click,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PromptResult:
    """One candidate's mask and how it was obtained."""

    mask: np.ndarray  # (H, W) bool at the original size
    score: float  # SAM's predicted IoU of the chosen mask
    agreement: float  # soft IoU of the mask (on the frame) with the map, in [0, 1]
    prompts: Prompts


@dataclass(frozen=True)
class PromptRule:
    """A prompting rule as data: its prompts, SAM's outputs, and which output is kept."""

    build: Callable[[np.ndarray, Frame], Prompts]  # normalised (G, G) map, frame → prompts
    multimask: bool = True  # SAM's three nested outputs, else its single one
    # The kept output maximises w_agreement · agreement + w_score · SAM's predicted IoU: the map
    # says which of the nested candidates (part / object / group) it means, SAM's score breaks
    # near-ties.
    w_agreement: float = 1.0
    w_score: float = 1.0
    corrections: int = 0  # corrective clicks (`corrective_click`), each kept if agreement rises
    click: tuple[float, float, float] = (0.8, 0.1, 0.5)  # its pos_t, neg_t, margin (in cells)


PROMPT_RULES: dict[str, PromptRule] = {
    "clip_surgery": PromptRule(clip_surgery_prompts, w_agreement=0.0),  # highest predicted IoU
    "clip_surgery_single": PromptRule(clip_surgery_prompts, multimask=False, w_agreement=0.0),
    "box_points": PromptRule(box_points_prompts),
    "box_points_clicks": PromptRule(box_points_prompts, corrections=2),
    # box_points without negative points: what they buy (ablation row 10)
    "box_points_positive": PromptRule(functools.partial(box_points_prompts, n_neg=0)),
}


@dataclass(frozen=True, eq=False)
class _Output:
    """SAM's kept output for one candidate's prompts."""

    logits: torch.Tensor  # (256, 256) low-res logits, on the model's device
    frame_mask: np.ndarray  # (h, w) bool: the mask at the frame's pixel centres
    score: float  # SAM's predicted IoU
    agreement: float  # soft IoU of frame_mask with the map


@dataclass(frozen=True, eq=False)
class _Candidate:
    """One non-constant map on its way through a rule."""

    index: int  # position in `prompt_masks`' input
    relevance: np.ndarray  # (G, G) normalised map
    prompts: Prompts
    output: _Output | None = None
    open: bool = True  # a corrective click may still improve it


def _cell_fractions(masks: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) bool frame masks → (N, C, G, G) area fraction of each map cell they cover
    (`grid.mask_to_grid` on the masks' device, in float32)."""
    (h, w), device = masks.shape[-2:], masks.device
    ah = torch.as_tensor(area_weights(h, grid[0]), dtype=torch.float32, device=device)  # (G, h)
    aw = torch.as_tensor(area_weights(w, grid[1]), dtype=torch.float32, device=device)  # (G, w)
    return (ah @ masks.float() @ aw.T).cpu().numpy().astype(np.float64)


def _decide(
    spec: PromptRule, cands: list[_Candidate], predictor: SamPredictor, frame: Frame
) -> list[_Output]:
    """SAM's outputs for every candidate's prompts, one batch; the output the rule keeps."""
    if not cands:
        return []
    logits, scores = decode(predictor, [c.prompts for c in cands], spec.multimask)  # (N, C, ..)
    masks = frame_masks(predictor, logits, frame)  # (N, C, h, w) bool, on the device
    agree = np.empty(scores.shape)  # (N, C)
    for shape in {c.relevance.shape for c in cands}:  # one grid side in practice
        rows = [i for i, c in enumerate(cands) if c.relevance.shape == shape]
        maps = np.stack([cands[i].relevance for i in rows])[:, None]  # (n, 1, G, G)
        agree[rows] = soft_iou(_cell_fractions(masks[rows], shape), maps)
    iou = scores.cpu().numpy()  # (N, C) float32
    best = np.argmax(spec.w_agreement * agree + spec.w_score * iou, axis=1)  # (N,)
    masks = (
        masks[
            torch.arange(len(cands), device=masks.device),
            torch.as_tensor(best, device=masks.device),
        ]
        .cpu()
        .numpy()
    )  # (N, h, w)
    return [
        _Output(logits[i, b], masks[i], float(iou[i, b]), float(agree[i, b]))
        for i, b in enumerate(best.tolist())
    ]


def _correct(
    spec: PromptRule, cands: list[_Candidate], predictor: SamPredictor, frame: Frame
) -> list[_Candidate]:
    """One corrective-click round for every open candidate, batched; kept where agreement rises."""
    pos_t, neg_t, margin = spec.click
    trials = []
    for c in cands:
        if not c.open:
            continue
        up = upsample_map(c.relevance, frame.shape)  # (h, w)
        min_depth = margin * cell_side(c.relevance, frame.image_size)
        click = corrective_click(c.output.frame_mask, up, pos_t, neg_t, min_depth, frame)
        if click is None:
            trials.append(dataclasses.replace(c, open=False))
            continue
        p = c.prompts
        points = np.concatenate([p.points, click[0][None]])  # (P+1, 2)
        trials.append(
            dataclasses.replace(c, prompts=Prompts(points, np.r_[p.labels, click[1]], p.box))
        )
    tried = [t for t in trials if t.open]
    better = {
        t.index: (t, o) for t, o in zip(tried, _decide(spec, tried, predictor, frame), strict=True)
    }
    out = []
    for c in cands:
        if c.index in better and better[c.index][1].agreement > c.output.agreement:
            t, o = better[c.index]
            out.append(dataclasses.replace(t, output=o))
        else:
            out.append(dataclasses.replace(c, open=False) if c.open else c)
    return out


def _check(rule: str, predictor: SamPredictor, image_size: ImageSize) -> PromptRule:
    if rule not in PROMPT_RULES:
        raise ValueError(f"unknown prompting rule {rule!r}: choose one of {sorted(PROMPT_RULES)}")
    if not predictor.is_image_set:
        raise RuntimeError("call predictor.set_image(image) (or cached_predictor) before prompting")
    if tuple(predictor.original_size) != tuple(image_size):
        raise ValueError(
            f"image_size {tuple(image_size)} differs from the predictor's image "
            f"{tuple(predictor.original_size)}: pass the original (H, W) of the image that is set"
        )
    return PROMPT_RULES[rule]


@torch.no_grad()
def prompt_masks(
    rule: str, relevance: Sequence[np.ndarray], predictor: SamPredictor, image_size: ImageSize
) -> list[PromptResult]:
    """One mask per map, for all the maps of one image: (G, G) maps → (H, W) masks, in order.

    `predictor` must already hold the image (`set_image`, or `cached_predictor` from the encode
    stage's embedding). SAM's decoder runs once per prompt shape for all the maps (and once more
    per corrective-click round); only the kept masks are upsampled to the original size.
    """
    spec = _check(rule, predictor, image_size)
    frame = Frame.of(image_size)
    results: list[PromptResult | None] = [None] * len(relevance)
    cands = []
    for i, grid_map in enumerate(relevance):
        r = normalize_map(grid_map)
        if r is None:
            log.warning("constant relevance map: no location to prompt, returning an empty mask")
            empty = Prompts(np.zeros((0, 2), np.float32), np.zeros((0,), np.int64))
            results[i] = PromptResult(np.zeros(image_size, dtype=bool), 0.0, 0.0, empty)
        else:
            cands.append(_Candidate(i, r, spec.build(r, frame)))
    outputs = _decide(spec, cands, predictor, frame)
    cands = [dataclasses.replace(c, output=o) for c, o in zip(cands, outputs, strict=True)]
    for _ in range(spec.corrections):
        cands = _correct(spec, cands, predictor, frame)
    if cands:
        masks = full_masks(predictor, torch.stack([c.output.logits for c in cands]))  # (N, H, W)
        for c, mask in zip(cands, masks, strict=True):
            results[c.index] = PromptResult(mask, c.output.score, c.output.agreement, c.prompts)
    return results  # type: ignore[return-value]


def prompt_mask(
    rule: str, relevance: np.ndarray, predictor: SamPredictor, image_size: ImageSize
) -> PromptResult:
    """One mask for one candidate: `prompt_masks` for a single (G, G) map."""
    return prompt_masks(rule, [relevance], predictor, image_size)[0]
