"""D_ref composite plans: which D_sem sources go into which Mosaic or fusion, and how.

`plan_composites` draws every geometric choice from `CompositeConfig.seed` (a `CompositeSpec` per
composite, cheap to ship to a shard worker); `pipeline.labelling.composites.render` materialises
a spec. Grids and placements are data (`GRIDS`, `PLACEMENTS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GRIDS: dict[str, tuple[int, int]] = {"1x2": (1, 2), "2x1": (2, 1), "2x2": (2, 2)}
# Placement → where the inset sits in the host's free space, as fractions (0 = left/top edge).
PLACEMENTS: dict[str, tuple[float, float]] = {
    "top_left": (0.0, 0.0),
    "top": (0.5, 0.0),
    "top_right": (1.0, 0.0),
    "left": (0.0, 0.5),
    "center": (0.5, 0.5),
    "right": (1.0, 0.5),
    "bottom_left": (0.0, 1.0),
    "bottom": (0.5, 1.0),
    "bottom_right": (1.0, 1.0),
}


@dataclass(frozen=True)
class CompositeConfig:
    """params.yaml [augment] geometry and counts."""

    out_size: tuple[int, int] | int = (448, 448)  # composite (H, W); an int means a square
    grids: tuple[str, ...] = tuple(GRIDS)  # Mosaic layouts, GRIDS keys
    fusion_scale: tuple[float, float] = (0.3, 0.5)  # inset size / host size, drawn uniformly
    fusion_placements: tuple[str, ...] = tuple(PLACEMENTS)  # PLACEMENTS keys
    fusion_margin: float = 0.04  # inset gap to the host's edge, × host size
    min_visible: float = 0.3  # drop a fusion whose host keeps less of its mask than this
    min_mask_pixels: int = 16  # drop a composite where any object's mask is smaller
    position_margin: float = 0.05  # absolute words: centre clear of the middle by this
    relation_margin: float = 0.1  # relative words: centres apart by this (normalised)
    fill: int = 114  # letterbox grey
    seed: int = 0  # seeds the plan; each composite gets its own seed from it
    n_mosaic: int = 1000  # Mosaic composites to plan
    n_fusion: int = 1000  # fusion composites to plan
    colour_words: bool = False  # name each object's colour read from its pixels (see colour.py)
    colour_min_share: float = 0.6  # ... when this share of its mask's pixels agree on one term

    def __post_init__(self) -> None:
        if isinstance(self.out_size, int):
            object.__setattr__(self, "out_size", (self.out_size, self.out_size))
        if len(self.out_size) != 2 or min(self.out_size) < 16:
            raise ValueError(f"out_size {self.out_size!r}: give (H, W) of at least 16 pixels")
        bad = [g for g in self.grids if g not in GRIDS] + [
            p for p in self.fusion_placements if p not in PLACEMENTS
        ]
        if bad:
            raise ValueError(f"unknown grid/placement {bad}: use {list(GRIDS)}, {list(PLACEMENTS)}")
        low, high = self.fusion_scale
        if not 0 < low <= high < 1:
            raise ValueError(f"fusion_scale {self.fusion_scale!r}: need 0 < low <= high < 1")
        if not 0.0 < self.colour_min_share <= 1.0:
            raise ValueError(f"colour_min_share {self.colour_min_share}: give a share in (0, 1]")
        if self.n_mosaic < 0 or self.n_fusion < 0:
            raise ValueError("n_mosaic and n_fusion must be non-negative")


@dataclass(frozen=True)
class CompositeSpec:
    """A planned composite: everything but the pixels, cheap to ship to a shard worker."""

    composite_id: str  # "{kind}/{index:06d}"
    kind: str
    source_ids: tuple[str, ...]  # Mosaic: tiles row-major; fusion: (host, inset)
    layout: str  # Mosaic: a GRIDS key; fusion: a PLACEMENTS key
    scale: float  # fusion inset scale (1.0 for Mosaic)
    referent: int  # index into source_ids
    seed: int  # seeds the render's own draws


def plan_composites(source_ids: Sequence[str], cfg: CompositeConfig) -> list[CompositeSpec]:
    """cfg.n_mosaic Mosaic then cfg.n_fusion fusion specs, drawn from cfg.seed.

    Sources are sorted first, so the plan does not depend on their order; Mosaic and fusion draw
    from separate streams, so changing one count leaves the other kind's specs unchanged.
    """
    ids = sorted(source_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("source ids must be unique")
    grids = [g for g in cfg.grids if GRIDS[g][0] * GRIDS[g][1] <= len(ids)]
    if (cfg.n_mosaic and not grids) or (cfg.n_fusion and len(ids) < 2):
        raise ValueError(
            f"{len(ids)} source(s) are too few for grids {list(cfg.grids)} / fusion; "
            "add D_sem samples or set n_mosaic / n_fusion to 0"
        )
    specs = []
    for kind_index, kind, count in ((0, "mosaic", cfg.n_mosaic), (1, "fusion", cfg.n_fusion)):
        rng = np.random.default_rng([cfg.seed, kind_index])
        for index in range(count):
            if kind == "mosaic":
                layout = grids[int(rng.integers(len(grids)))]
                k, scale = GRIDS[layout][0] * GRIDS[layout][1], 1.0
            else:
                layout = cfg.fusion_placements[int(rng.integers(len(cfg.fusion_placements)))]
                k, scale = 2, float(rng.uniform(*cfg.fusion_scale))
            chosen = rng.choice(len(ids), size=k, replace=False)
            specs.append(
                CompositeSpec(
                    composite_id=f"{kind}/{index:06d}",
                    kind=kind,
                    source_ids=tuple(ids[i] for i in chosen),
                    layout=layout,
                    scale=scale,
                    referent=int(rng.integers(k)),
                    seed=int(rng.integers(2**63)),
                )
            )
    return specs
