"""The training data every curriculum phase shares: the stores, their caches, and loaders.

`TrainingData.samples` picks a phase's samples (H_ref as the last Select round chose them, or
unlabelled), `TrainingData.loader` batches them: shuffled per epoch, DDP-aware, with the full
SAM embeddings only where SAM decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from pipeline.store.reader import LabelStore
from trainer.data.dataset import PromptDataset, collate
from trainer.data.feature_cache import ClipCache
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.data.samples import Sample, collect_samples


@dataclass
class TrainingData:
    """The stores and their cached features, shared by every phase."""

    stores: list[LabelStore]
    clip_caches: list[ClipCache]
    sam_embeddings: list[SamEmbeddings]
    train_splits: tuple[str, ...]
    grid_side: int = 0  # targets' masks pooled to the point maps' grid (point_mode "map")

    def samples(
        self,
        subsets: Sequence[str],
        selections: dict[int, dict[str, int]] | None,
        unselected: bool = False,
    ) -> list[Sample]:
        """Training samples of `subsets`; H_ref as selected (empty before any Select), or with
        `unselected` every H_ref pair with its candidates' c unknown."""
        subsets = tuple(subsets)
        if unselected:
            return collect_samples(self.stores, subsets, self.train_splits, None)
        if "H_ref" in subsets and selections is None:
            subsets = tuple(s for s in subsets if s != "H_ref")
        return collect_samples(self.stores, subsets, self.train_splits, selections)

    def loader(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        num_workers: int,
        shuffle_seed: int | None,
        target_masks: bool = True,
        embeddings: bool = True,
    ) -> DataLoader:
        """A loader of `samples`; shuffled by `shuffle_seed` (None: in order); DDP-aware.

        `embeddings`: whether batches carry the full SAM embeddings (SAM decodes: Select, mask
        losses); without them the generator reads its cached SAM stage only.
        """
        dataset = PromptDataset(
            samples, self.clip_caches, self.sam_embeddings, target_masks=target_masks,
            embeddings=embeddings, grid_side=self.grid_side,
        )  # fmt: skip
        if dist.is_available() and dist.is_initialized():
            sampler: Any = DistributedSampler(
                dataset, shuffle=shuffle_seed is not None, seed=shuffle_seed or 0
            )
        elif shuffle_seed is not None:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(shuffle_seed))
        else:
            sampler = SequentialSampler(dataset)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate,
        )
