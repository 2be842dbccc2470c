"""Samples as tensors: cached features and the E pseudo-label targets, batched.

`PromptDataset` yields, per sample (shapes without the batch dimension):

    stages         N × (G*G, C_n)   cached CLIP stage features of its image
    words          (T, C_t)         cached word features of its expression, padding trimmed
    sam_embedding  (256, 64, 64)    cached SAM image embedding (only where SAM decodes: eval,
                                    Select, mask losses)
    sam_tokens     (S*S, 256)       the embedding pooled to the generator's SAM stage, cached
    size           (2,)             original (H, W)
    target         masks (E, 256, 256) soft low-res targets in SAM's frame (`lowres_targets`),
                   points (E, M_t, 2) normalised (x, y), point_labels (E, M_t), referent (E,)
    sample_id, key (store index, sample_id)

and `collate` batches them: stages (B, G*G, C_n), words padded to the longest T with text_pad
(B, T) True = padding, sam_embedding (B, 256, 64, 64) and sam_tokens (B, S*S, 256) where present,
size (B, 2), targets a list of B dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.core.rle import decode_rle
from pipeline.labelling.grid import mask_to_grid
from trainer.data.feature_cache import ClipCache
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.data.samples import Sample
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
    """The criterion's target of one sample (module docstring); E = candidates with masks.

    With `masks=False` the low-res masks are left out (a loss that does not read them); with
    `grid_side` the masks pooled to that grid are added as "grid" (E, S, S) (point maps).
    """
    cands = sample.candidates
    if not cands:
        return {
            "masks": torch.zeros(0, long_side // 4, long_side // 4),
            "points": torch.zeros(0, 1, 2),
            "point_labels": torch.zeros(0, 1),
            "referent": torch.zeros(0, dtype=torch.int64),
            "grid": torch.zeros(0, grid_side, grid_side),
        }
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


class PromptDataset(Dataset):
    """Samples with their cached features and targets (module docstring).

    Args:
        samples: from `collect_samples`.
        clip_caches: per store, its `ClipCache`.
        sam_embeddings: per store, its `SamEmbeddings`.
        with_targets: build the targets (training); eval needs none.
        target_masks: include the targets' low-res masks (losses that read them).
        embeddings: include the full SAM embeddings (whenever SAM decodes the points).
        grid_side: add the targets' masks pooled to this grid (point_mode "map"); 0: none.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        clip_caches: Sequence[ClipCache],
        sam_embeddings: Sequence[SamEmbeddings],
        with_targets: bool = True,
        target_masks: bool = True,
        embeddings: bool = True,
        grid_side: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.target_masks, self.embeddings, self.grid_side = target_masks, embeddings, grid_side
        self.clip_caches, self.sam_embeddings = list(clip_caches), list(sam_embeddings)
        self.with_targets = with_targets

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        cache = self.clip_caches[s.store]
        item = {
            "stages": cache.image_stages(s.image_sha256),
            "words": cache.sample_words(s.sample_id),
            "size": torch.tensor([s.height, s.width]),
            "sample_id": s.sample_id,
            "key": s.key,
        }
        tokens = cache.image_sam_tokens(s.image_sha256)
        if tokens is not None:
            item["sam_tokens"] = tokens
        relevance = cache.sample_relevance(s.sample_id)
        if relevance is not None:
            item["relevance"] = relevance
        if self.embeddings or tokens is None:
            item["sam_embedding"] = self.sam_embeddings[s.store][s.image_sha256]
        if self.with_targets:
            item["target"] = build_target(s, masks=self.target_masks, grid_side=self.grid_side)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch `PromptDataset` items: pad words to the longest T (module docstring)."""
    t = max(it["words"].shape[0] for it in items)
    width = items[0]["words"].shape[1]
    words = torch.zeros(len(items), t, width)  # (B, T, C_t)
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
    for name in ("sam_embedding", "sam_tokens", "relevance"):  # (B, 256, 64, 64), (B, S*S, 256), (B, R, R)
        if name in items[0]:
            batch[name] = torch.stack([it[name] for it in items])
    if "target" in items[0]:
        batch["targets"] = [it["target"] for it in items]
    return batch
