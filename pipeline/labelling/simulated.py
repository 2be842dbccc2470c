"""`simulated` relevance: a CLIP-like map made from a phrase's ground truth, with CLIP's failures.

Real CLIP weights cannot be had on the development machines, so the synthetic world carries a
stand-in that fails the way the paper says CLIP does (PPT, Figure 1): its response is *noisy*
(it lights other objects and the sentence's other nouns) and *salient* (it lights a part: the
t-shirt, not the man). Every map is seeded, every corruption is a knob (`SimulatedConfig`,
params.yaml `attention.simulated`), and maps are stamped `simulated` wherever they are stored: they
never pass for CLIP. For one phrase, over the image's annotated objects:

1. weight: 1 for the objects the phrase denotes; for the others the largest that applies of
   `class_spill` (shares the phrase's class word), `colour_spill` (shows the phrase's colour
   word, on itself or on its part) and, for a whole-expression map, `mention_spill` (an object
   the sentence mentions: its landmark); then scaled by (area / the largest responding area)
   ** `saliency`: a small referent beside a big look-alike loses to it;
2. salient part: an object smaller than `part_focus_max_area` of the image responds, with
   probability `part_focus`, on its inner part (if it has one) or on a sub-blob (a Gaussian
   `sub_blob_sigma` × its size around a point inside it) instead of its whole area. A large,
   centred object (an object-centric photo) responds as a whole: the paper's premise that CLIP's
   response there is comprehensive. The choice is drawn once per (image, object), so an object
   fails the same way for every phrase, as a model would;
3. background: Poisson(`n_blobs`) Gaussian blobs of amplitude up to `blob_amplitude`;
4. CLIP's coarse grid: the response is area-pooled to `grid` × `grid` (14: ViT-B/16 at 224),
   blurred (`blur` cells), and each cell multiplied by log-normal noise (`noise`).

Calibration, once (bench/calibrate_simulated.py on the world of configs/world-params.yaml, seed
0, its val split of 20 images / 194 sentences; whole-expression relevance → SAM with box_points):
a one-parameter family `severity` moves the two failures together (spill and saliency; part
focus) over a fixed mild measurement noise. Severity 0 gives 55.3 mIoU, 0.5 40.1, 0.8 29.6, 0.85
27.4, 0.9 25.5, 1.0 25.2. The defaults are severity 0.85, the paper's CLIP + SAM (26.5 on
RefCOCO val) in the middle of the 20-35 band. (A first family that also scaled the noise reached
the band too, but wrecked the object-centric maps, D_sem at 32 mIoU: not the CLIP the paper
describes, whose response to a photo of one object is comprehensive.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.data.dataset import ObjectTruth
from pipeline.labelling.grid import mask_to_grid


@dataclass(frozen=True)
class SimulatedConfig:
    """params.yaml [attention] simulated: the corruptions of the simulated CLIP map."""

    # Defaults: bench/calibrate_simulated.py's severity 0.85 (see the module docstring).
    grid: int = 14  # CLIP's patch grid (ViT-B/16 at 224)
    blur: float = 0.8  # Gaussian blur of the grid map, in cells
    part_focus: float = 0.91  # chance a small object responds on its part / a sub-blob only
    part_focus_max_area: float = 0.128  # objects over this share of the image respond whole
    sub_blob_sigma: float = 0.3  # sub-blob std, a fraction of the object's box size
    class_spill: float = 0.925  # response on objects sharing the phrase's class word
    colour_spill: float = 0.868  # ... showing the phrase's colour word (theirs or their part's)
    mention_spill: float = 0.955  # whole-expression maps: on every object the sentence mentions
    saliency: float = 0.85  # responses scale with (area / largest responding area) ** saliency
    n_blobs: float = 1.0  # mean number of background blobs per map
    blob_amplitude: float = 0.5  # their peak, at most
    blob_sigma: float = 0.07  # their std, a fraction of the image's side
    noise: float = 0.2  # std of the log-normal noise on every cell
    seed: int = 0  # with the image, object and sample ids, seeds every draw

    def __post_init__(self) -> None:
        if self.grid < 2:
            raise ValueError("grid must be at least 2")
        for name in ("part_focus", "part_focus_max_area", "class_spill", "colour_spill",
                     "mention_spill"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if min(self.blur, self.n_blobs, self.blob_amplitude, self.noise) < 0:
            raise ValueError("blur, n_blobs, blob_amplitude and noise must be >= 0")


@dataclass(frozen=True)
class PhraseQuery:
    """What a phrase says, for the simulation: its denotation and its words."""

    denotes: tuple[int, ...]  # ann ids the phrase denotes (ground truth)
    shape: str | None  # its class word, if any of the objects' classes occurs in it
    colour: str | None  # its colour word, if any
    mentions: tuple[int, ...] = ()  # whole-expression maps: ann ids the sentence mentions


def rng_for(seed: int, *keys: Any) -> np.random.Generator:
    """A generator seeded by a stable hash of `keys` (not Python's salted `hash`)."""
    text = "\0".join(str(k) for k in (seed, *keys))
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    )


def query_words(text: str, objects: tuple[ObjectTruth, ...]) -> tuple[str | None, str | None]:
    """The class and colour words of a phrase, among the words the image's objects carry."""
    words = set(text.lower().replace(",", " ").split())
    shapes = {o.shape for o in objects}
    colours = {c for o in objects for c in o.colours}
    shape = next((w for w in sorted(shapes) if w in words), None)
    colour = next((w for w in sorted(colours) if w in words), None)
    return shape, colour


def _gaussian(shape: tuple[int, int], cy: float, cx: float, sy: float, sx: float) -> np.ndarray:
    yy = (np.arange(shape[0], dtype=np.float32)[:, None] + 0.5 - cy) / max(sy, 1e-3)
    xx = (np.arange(shape[1], dtype=np.float32)[None, :] + 0.5 - cx) / max(sx, 1e-3)
    return np.exp(-0.5 * (yy**2 + xx**2))


def _salient_region(obj: ObjectTruth, cfg: SimulatedConfig, rng: np.random.Generator) -> np.ndarray:
    """Where a small object responds when CLIP focuses on a salient part of it."""
    if obj.part_mask is not None and obj.part_mask.any():
        return obj.part_mask.astype(np.float32)
    ys, xs = np.nonzero(obj.mask)
    k = int(rng.integers(len(ys)))
    size_y, size_x = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    blob = _gaussian(obj.mask.shape, ys[k] + 0.5, xs[k] + 0.5, cfg.sub_blob_sigma * size_y,
                     cfg.sub_blob_sigma * size_x)  # fmt: skip
    return blob * obj.mask


def _weight(obj: ObjectTruth, query: PhraseQuery, cfg: SimulatedConfig) -> float:
    if obj.ann_id in query.denotes:
        return 1.0
    spills = [0.0]
    if query.shape is not None and obj.shape == query.shape:
        spills.append(cfg.class_spill)
    if query.colour is not None and query.colour in obj.colours:
        spills.append(cfg.colour_spill)
    if obj.ann_id in query.mentions:
        spills.append(cfg.mention_spill)
    return max(spills)


def simulated_map(
    objects: tuple[ObjectTruth, ...],
    query: PhraseQuery,
    cfg: SimulatedConfig,
    image_key: str,
    map_key: str,
) -> np.ndarray:
    """The simulated relevance map (G, G) float32 of one phrase on one image (module docstring).

    `image_key` seeds the per-object salient-part draws (equal for every phrase of the image),
    `map_key` the background blobs and cell noise of this one map.
    """
    if not objects:
        raise ValueError("simulated relevance needs the image's annotated objects")
    size = objects[0].mask.shape  # (H, W)
    response = np.zeros(size, dtype=np.float32)
    weights = {o.ann_id: _weight(o, query, cfg) for o in objects if o.mask.any()}
    largest = max((o.mask.sum() for o in objects if weights.get(o.ann_id, 0) > 0), default=1)
    for obj in objects:
        w = weights.get(obj.ann_id, 0.0)
        if w <= 0:
            continue
        w *= float(obj.mask.sum() / largest) ** cfg.saliency  # big objects draw CLIP's eye
        drawn = rng_for(cfg.seed, image_key, obj.ann_id)
        focus = drawn.random() < cfg.part_focus and obj.mask.mean() < cfg.part_focus_max_area
        region = _salient_region(obj, cfg, drawn) if focus else obj.mask.astype(np.float32)
        response = np.maximum(response, w * region)
    rng = rng_for(cfg.seed, map_key)
    side = float(min(size))
    for _ in range(int(rng.poisson(cfg.n_blobs))):
        cy, cx = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        amplitude = cfg.blob_amplitude * rng.uniform(0.5, 1.0)
        response += amplitude * _gaussian(
            size, cy, cx, cfg.blob_sigma * side, cfg.blob_sigma * side
        )
    grid = mask_to_grid(response, cfg.grid)  # (G, G) area average: CLIP's coarse patches
    if cfg.blur > 0:
        grid = ndimage.gaussian_filter(grid, cfg.blur, mode="nearest")
    grid = grid * np.exp(cfg.noise * rng.standard_normal(grid.shape))
    return grid.astype(np.float32)
