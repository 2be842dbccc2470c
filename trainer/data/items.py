"""One sample at a time: a `Sample` object's target computed from its RLEs, and the batching
of single items (`PromptDataset.__getitem__`). The loader reads whole batches from columns
instead (`trainer.data.dataset`); these give the same numbers for one sample (float32 targets).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from pipeline.core.rle import decode_rle
from pipeline.labelling.grid import mask_to_grid
from trainer.data.sample_index import Sample
from trainer.network.soft_sam import lowres_targets


@functools.lru_cache(maxsize=1 << 17)
def grid_target(mask_rle: str, height: int, width: int, side: int) -> torch.Tensor:
    """A pseudo-label pooled to the point generator's side × side grid (area fraction per cell,
    cells over the original image as the stages' grids are), once per process."""
    mask = decode_rle(mask_rle, height, width)
    return torch.from_numpy(mask_to_grid(mask, side).astype(np.float32))  # (S, S)


def build_target(
    sample: Sample, long_side: int = 1024, masks: bool = True, grid_side: int = 0
) -> dict[str, torch.Tensor]:
    """The criterion's target of one `Sample` object, computed from its RLEs (float32); E =
    candidates with masks. The loader reads the same targets from columns (`PromptDataset`).

    With `masks=False` the low-res masks are left out (a loss that does not read them); with
    `grid_side` the masks pooled to that grid are added as "grid" (E, S, S) (point maps).
    """
    cands = sample.candidates
    if not cands:
        return empty_target(long_side // 4, grid_side)
    m = min(len(c.points) for c in cands)
    if m == 0:  # no points stored: the mask still trains, one dummy point at its centre
        points = torch.full((len(cands), 1, 2), 0.5)
        labels = torch.ones(len(cands), 1)
    else:
        raw = torch.tensor([c.points[:m] for c in cands], dtype=torch.float32)  # (E, M_t, 3)
        points, labels = raw[..., :2], raw[..., 2]
    target = {
        "points": points,  # (E, M_t, 2)
        "point_labels": labels,  # (E, M_t)
        "referent": torch.tensor([c.referent for c in cands], dtype=torch.int64),  # (E,)
    }
    if masks:
        full = torch.stack(
            [torch.from_numpy(decode_rle(c.mask_rle, sample.height, sample.width)) for c in cands]
        )  # (E, H, W) bool
        target["masks"] = lowres_targets(full, long_side, long_side // 4)  # (E, 256, 256)
    if grid_side:
        target["grid"] = torch.stack(
            [grid_target(c.mask_rle, sample.height, sample.width, grid_side) for c in cands]
        )  # (E, S, S)
    return target


def empty_target(lowres: int, grid_side: int) -> dict[str, torch.Tensor]:
    """The target of a sample without candidates (E = 0)."""
    return {
        "masks": torch.zeros(0, lowres, lowres),
        "points": torch.zeros(0, 1, 2),
        "point_labels": torch.zeros(0, 1),
        "referent": torch.zeros(0, dtype=torch.int64),
        "grid": torch.zeros(0, grid_side, grid_side),
    }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch `PromptDataset` items (`__getitem__`): words padded to the longest T."""
    t = max(it["words"].shape[0] for it in items)
    width = items[0]["words"].shape[1]
    words = torch.zeros(len(items), t, width, dtype=items[0]["words"].dtype)  # (B, T, C_t)
    pad = torch.ones(len(items), t, dtype=torch.bool)  # (B, T)
    for b, it in enumerate(items):
        n = it["words"].shape[0]
        words[b, :n], pad[b, :n] = it["words"], False
    batch = {
        "stages": [torch.stack(s) for s in zip(*(it["stages"] for it in items), strict=True)],
        "words": words,
        "text_pad": pad,
        "size": torch.stack([it["size"] for it in items]),  # (B, 2)
        "sample_id": [it["sample_id"] for it in items],
        "key": [it["key"] for it in items],
    }
    for name in (
        "sam_embedding",
        "sam_tokens",
        "relevance",
    ):  # (B, 256, 64, 64), (B, S*S, 256), (B, R, R)
        if name in items[0]:
            batch[name] = torch.stack([it[name] for it in items])
    if "target" in items[0]:
        batch["targets"] = [it["target"] for it in items]
    return batch
