"""The training data every curriculum phase shares: the stores, their caches, and loaders.

`TrainingData.samples` picks a phase's samples (H_ref as the last Select round chose them, or
unlabelled), `TrainingData.loader` batches them: shuffled per epoch, each data-parallel rank
taking its share of every batch (`share`), with the full SAM embeddings only where SAM decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

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
    # global batches of sample indices → the ones this rank reads (`trainer.loop.distributed`)
    share: Callable[[Sampler[list[int]]], Sampler[list[int]]] | None = None

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
        """A loader of `samples` in batches of `batch_size` (this rank's `share` of each);
        shuffled by `shuffle_seed` (None: in order).

        `embeddings`: whether batches carry the full SAM embeddings (SAM decodes: Select, mask
        losses); without them the generator reads its cached SAM stage only.
        """
        dataset = PromptDataset(
            samples, self.clip_caches, self.sam_embeddings, target_masks=target_masks,
            embeddings=embeddings, grid_side=self.grid_side,
        )  # fmt: skip
        if shuffle_seed is not None:
            sampler: Any = RandomSampler(
                dataset, generator=torch.Generator().manual_seed(shuffle_seed)
            )
        else:
            sampler = SequentialSampler(dataset)
        batches: Sampler[list[int]] = BatchSampler(sampler, batch_size, drop_last=False)
        return DataLoader(
            dataset,
            batch_sampler=self.share(batches) if self.share else batches,
            num_workers=num_workers,
            collate_fn=collate,
        )
