"""D_ref composites: Mosaic (absolute position) and fusion (relative position) of D_sem objects.

A pure library (DESIGN §5): pseudo-labelled object-centric sources in, composite images with every
object's transformed pseudo-label and one unambiguous expression out. No label-store I/O.

Mosaic: a "{rows}x{cols}" grid ("1x2" = side by side, "2x1" = stacked, "2x2"); each source is
letterboxed into its tile (scaled keeping its aspect, centred, the rest filled with grey), so no
part of any object is cropped and each mask's area is its source area times the scale.
Fusion: the host is letterboxed into the whole canvas; the inset, scaled to fit `scale` × the
host's placed size, is pasted at a named placement inside the host. The inset covers the host:
its rectangle is subtracted from the host mask.

Every transform is one affine map per object (scale, then offset): images resize bilinearly,
masks with nearest neighbour at exactly the same target size, points through the same map. Points
are then re-labelled against the transformed (and, for a fusion host, occluded) mask, so
label 1 ⇔ the point's pixel is in the object's mask; a host point under the inset becomes 0.

Determinism: `plan_composites` draws every geometric choice from `cfg.seed`; `render_composite`
draws the remaining ones (which unambiguous expression) from the spec's own seed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.core.rle import decode_rle, encode_rle
from pipeline.data.imagenet import class_noun
from pipeline.labelling.composites.colour import colour_term
from pipeline.labelling.composites.plan import GRIDS, PLACEMENTS, CompositeConfig, CompositeSpec
from pipeline.labelling.composites.text import (
    ExpressionSpec,
    absolute_options,
    choose_expression,
    relative_options,
)

log = logging.getLogger(__name__)

Point = tuple[float, float, int]  # (x, y, label), x and y normalised to [0, 1]
Box = tuple[int, int, int, int]  # xywh, pixels


@dataclass(frozen=True)
class SourceObject:
    """One pseudo-labelled D_sem sample: an image and its single object."""

    sample_id: str
    image: np.ndarray  # (H, W, 3) uint8
    mask_rle: str  # COCO RLE counts at (H, W)
    class_name: str
    points: Sequence[Point]  # normalised by the source's W, H


@dataclass(frozen=True)
class CompositeObject:
    """One object of a composite with its transformed pseudo-label."""

    source_sample_id: str
    class_name: str
    mask_rle: str  # COCO RLE counts at `size`
    size: tuple[int, int]  # (H, W) of the composite, the RLE's size
    bbox: tuple[float, float, float, float]  # xywh of the mask, pixels
    points: tuple[Point, ...]  # normalised by the composite's W, H; label = mask at the point
    paste_box: Box  # where the source image was pasted, xywh
    referent: int = 0  # c: 1 for the object the expression denotes
    colour: str | None = None  # its colour word (cfg.colour_words), None: named by class alone


@dataclass(frozen=True)
class Composite:
    """A materialised composite sample."""

    image: np.ndarray  # (H, W, 3) uint8
    kind: str  # "mosaic" | "fusion"
    objects: list[CompositeObject]
    expression: str
    referent_index: int
    expression_spec: ExpressionSpec


def decode(counts: str, hw: tuple[int, int]) -> np.ndarray:
    """COCO RLE counts at (H, W) → (H, W) bool."""
    return decode_rle(counts, hw[0], hw[1])


def letterbox(src_hw: tuple[int, int], box: Box) -> Box:
    """The largest aspect-keeping rectangle of a (H, W) source centred in an xywh box."""
    bx, by, bw, bh = box
    scale = min(bw / src_hw[1], bh / src_hw[0])
    w = min(bw, max(1, round(src_hw[1] * scale)))
    h = min(bh, max(1, round(src_hw[0] * scale)))
    return bx + (bw - w) // 2, by + (bh - h) // 2, w, h


def tiles(grid: str, hw: tuple[int, int]) -> list[Box]:
    """The grid's tiles (xywh) row-major; edges rounded so the tiles cover the canvas exactly."""
    rows, cols = GRIDS[grid]
    ys = [round(r * hw[0] / rows) for r in range(rows + 1)]
    xs = [round(c * hw[1] / cols) for c in range(cols + 1)]
    return [
        (xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r])
        for r in range(rows)
        for c in range(cols)
    ]


def paste(src: SourceObject, box: Box, canvas: np.ndarray) -> np.ndarray:
    """Paste the source resized to `box` into `canvas` (in place); return its (H, W) mask there."""
    x, y, w, h = box
    src_hw = src.image.shape[:2]
    canvas[y : y + h, x : x + w] = np.asarray(
        Image.fromarray(src.image).resize((w, h), Image.Resampling.BILINEAR)
    )
    small = Image.fromarray(decode(src.mask_rle, src_hw).astype(np.uint8) * 255)
    mask = np.zeros(canvas.shape[:2], bool)
    mask[y : y + h, x : x + w] = np.asarray(small.resize((w, h), Image.Resampling.NEAREST)) > 0
    return mask


def transform_points(points: Sequence[Point], box: Box, mask: np.ndarray) -> tuple[Point, ...]:
    """Map source points into `box`, keep those inside the canvas, re-label them against `mask`.

    A point's label is mask[min(floor(y·H), H-1), min(floor(x·W), W-1)] read from its normalised
    coordinates after rounding them to float32 (the store's point type), so the rule holds
    exactly for the stored values, boundary pixels included.
    """
    x0, y0, w, h = box
    height, width = mask.shape
    out = []
    for px, py, _ in points:
        x = float(np.float32((x0 + px * w) / width))  # continuous: 0 = left edge of pixel 0
        y = float(np.float32((y0 + py * h) / height))
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            continue
        label = int(mask[min(int(y * height), height - 1), min(int(x * width), width - 1)])
        out.append((x, y, label))
    return tuple(out)


def source_colour(src: SourceObject, cfg: CompositeConfig) -> str | None:
    """The source's colour word when cfg.colour_words (read from its pixels), else None."""
    if not cfg.colour_words:
        return None
    mask = decode(src.mask_rle, src.image.shape[:2])
    return colour_term(src.image, mask, cfg.colour_min_share)


def _assemble(
    kind: str,
    canvas: np.ndarray,
    placed: list[tuple[SourceObject, np.ndarray, Box]],
    colours: list[str | None],
    referent: int,
    options: list[ExpressionSpec],
    margin: float,
    cfg: CompositeConfig,
    rng: np.random.Generator,
) -> Composite | None:
    """Encode the placed objects, pick an unambiguous expression, mark the referent."""
    hw = canvas.shape[:2]
    objects = []
    for (src, mask, box), colour in zip(placed, colours, strict=True):
        if mask.sum() < cfg.min_mask_pixels:
            log.debug(
                "%s: %s's mask is under %d px; skipped", kind, src.sample_id, cfg.min_mask_pixels
            )
            return None
        counts, bbox = encode_rle(mask)
        points = transform_points(src.points, box, mask)
        objects.append(
            CompositeObject(
                src.sample_id, src.class_name, counts, hw, bbox, points, box, colour=colour
            )
        )
    spec = choose_expression(options, objects, referent, margin, rng)
    if spec is None:
        log.debug("%s: no unambiguous expression for %s", kind, placed[referent][0].sample_id)
        return None
    objects[referent] = dataclasses.replace(objects[referent], referent=1)
    return Composite(canvas, kind, objects, spec.text, referent, spec)


def make_mosaic(
    objects: Sequence[SourceObject],
    grid: str,
    cfg: CompositeConfig,
    rng: np.random.Generator,
    referent: int | None = None,
) -> Composite | None:
    """Letterbox one source per tile of `grid`; the expression names the referent's tile.

    Returns None when an object's mask is too small or no expression is unambiguous.
    """
    rows, cols = GRIDS[grid]
    if len(objects) != rows * cols:
        raise ValueError(f"grid {grid} takes {rows * cols} objects, got {len(objects)}")
    if referent is None:
        referent = int(rng.integers(len(objects)))
    canvas = np.full((*cfg.out_size, 3), cfg.fill, np.uint8)
    placed = []
    for src, tile in zip(objects, tiles(grid, cfg.out_size), strict=True):
        box = letterbox(src.image.shape[:2], tile)
        placed.append((src, paste(src, box, canvas), box))
    row, col = divmod(referent, cols)
    colours = [source_colour(src, cfg) for src in objects]
    options = absolute_options(
        class_noun(objects[referent].class_name),
        row if rows > 1 else None,
        col if cols > 1 else None,
        colours[referent],
    )
    return _assemble(
        "mosaic", canvas, placed, colours, referent, options, cfg.position_margin, cfg, rng
    )


def inset_box(
    host_box: Box, inset_hw: tuple[int, int], scale: float, placement: str, margin: float
) -> Box:
    """The inset's xywh: fit in `scale` × the host's box, placed at `placement` with a margin."""
    hx, hy, hw, hh = host_box
    _, _, w, h = letterbox(inset_hw, (0, 0, max(1, round(scale * hw)), max(1, round(scale * hh))))
    mx, my = round(margin * hw), round(margin * hh)
    fx, fy = PLACEMENTS[placement]
    x = hx + mx + round(fx * max(0, hw - 2 * mx - w))
    y = hy + my + round(fy * max(0, hh - 2 * my - h))
    return x, y, w, h


def make_fusion(
    host: SourceObject,
    inset: SourceObject,
    cfg: CompositeConfig,
    rng: np.random.Generator,
    placement: str | None = None,
    scale: float | None = None,
    referent: int | None = None,
) -> Composite | None:
    """Paste `inset` over `host`; the expression relates the referent (0 host, 1 inset) to the
    other.

    Returns None when the host keeps less than cfg.min_visible of its mask, a mask is too small,
    or no relation holds clearly and unambiguously.
    """
    if placement is None:
        placement = cfg.fusion_placements[int(rng.integers(len(cfg.fusion_placements)))]
    if scale is None:
        scale = float(rng.uniform(*cfg.fusion_scale))
    if referent is None:
        referent = int(rng.integers(2))
    canvas = np.full((*cfg.out_size, 3), cfg.fill, np.uint8)
    host_box = letterbox(host.image.shape[:2], (0, 0, cfg.out_size[1], cfg.out_size[0]))
    host_mask = paste(host, host_box, canvas)
    box = inset_box(host_box, inset.image.shape[:2], scale, placement, cfg.fusion_margin)
    inset_mask = paste(inset, box, canvas)
    full = int(host_mask.sum())
    x, y, w, h = box
    host_mask[y : y + h, x : x + w] = False  # the inset covers these host pixels
    if full == 0 or host_mask.sum() < cfg.min_visible * full:
        log.debug(
            "fusion: %s keeps under %.0f%% of its mask", host.sample_id, 100 * cfg.min_visible
        )
        return None
    placed = [(host, host_mask, host_box), (inset, inset_mask, box)]
    subject, anchor = placed[referent][0], placed[1 - referent][0]
    colours = [source_colour(host, cfg), source_colour(inset, cfg)]
    options = relative_options(
        class_noun(subject.class_name),
        class_noun(anchor.class_name),
        colours[referent],
        colours[1 - referent],
    )
    return _assemble(
        "fusion", canvas, placed, colours, referent, options, cfg.relation_margin, cfg, rng
    )


def render_composite(
    spec: CompositeSpec, load_source: Callable[[str], SourceObject], cfg: CompositeConfig
) -> Composite | None:
    """Materialise a planned composite; None when its geometry gives no valid sample."""
    rng = np.random.default_rng(spec.seed)
    sources = [load_source(sid) for sid in spec.source_ids]
    if spec.kind == "mosaic":
        return make_mosaic(sources, spec.layout, cfg, rng, referent=spec.referent)
    host, inset = sources
    return make_fusion(
        host, inset, cfg, rng, placement=spec.layout, scale=spec.scale, referent=spec.referent
    )
