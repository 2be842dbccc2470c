"""Samples as tensors: cached features and the E pseudo-label targets, batched.

`PromptDataset` yields, per sample (shapes without the batch dimension):

    stages         N × (G*G, C_n)   cached CLIP stage features of its image
    words          (T, C_t)         cached word features of its expression, padding trimmed
    sam_embedding  (256, 64, 64)    cached SAM image embedding
    size           (2,)             original (H, W)
    target         masks (E, 256, 256) soft low-res targets in SAM's frame (`lowres_targets`),
                   points (E, M_t, 2) normalised (x, y), point_labels (E, M_t), referent (E,)
    sample_id, key (store index, sample_id)

and `collate` batches them: stages (B, G*G, C_n), words padded to the longest T with text_pad
(B, T) True = padding, sam_embedding (B, 256, 64, 64), size (B, 2), targets a list of B dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from pipeline.core.rle import decode_rle
from trainer.data.feature_cache import ClipCache, SamEmbeddings
from trainer.data.samples import Sample
from trainer.network.soft_sam import lowres_targets


def build_target(
    sample: Sample, long_side: int = 1024, masks: bool = True
) -> dict[str, torch.Tensor]:
    """The criterion's target of one sample (module docstring); E = candidates with masks.

    With `masks=False` the low-res masks are left out (a loss that does not read them).
    """
    cands = sample.candidates
    if not cands:
        return {
            "masks": torch.zeros(0, long_side // 4, long_side // 4),
            "points": torch.zeros(0, 1, 2),
            "point_labels": torch.zeros(0, 1),
            "referent": torch.zeros(0, dtype=torch.int64),
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
    return target


class PromptDataset(Dataset):
    """Samples with their cached features and targets (module docstring).

    Args:
        samples: from `collect_samples`.
        clip_caches: per store, its `ClipCache`.
        sam_embeddings: per store, its `SamEmbeddings`.
        with_targets: build the targets (training); eval needs none.
        target_masks: include the targets' low-res masks (losses that read them).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        clip_caches: Sequence[ClipCache],
        sam_embeddings: Sequence[SamEmbeddings],
        with_targets: bool = True,
        target_masks: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.target_masks = target_masks
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
            "sam_embedding": self.sam_embeddings[s.store][s.image_sha256],
            "size": torch.tensor([s.height, s.width]),
            "sample_id": s.sample_id,
            "key": s.key,
        }
        if self.with_targets:
            item["target"] = build_target(s, masks=self.target_masks)
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
        "sam_embedding": torch.stack([it["sam_embedding"] for it in items]),  # (B, 256, 64, 64)
        "size": torch.stack([it["size"] for it in items]),  # (B, 2)
        "sample_id": [it["sample_id"] for it in items],
        "key": [it["key"] for it in items],
    }
    if "target" in items[0]:
        batch["targets"] = [it["target"] for it in items]
    return batch
