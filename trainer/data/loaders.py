"""The training data every curriculum phase shares: the stores, their caches, and loaders.

`TrainingData.samples` picks a phase's samples (H_ref as the last Select round chose them, or
unlabelled), `TrainingData.loader` batches them: global batches from `Batches` (shuffled per
epoch, optionally grouped by image), each data-parallel rank taking its share of every batch
(`share`), with the full SAM embeddings only where SAM decodes and the targets read from the
stores' target caches (`trainer.data.target_cache`, built on first use).

A phase asks for a loader every epoch; the same samples and options give back the same loader,
re-seeded, so its worker processes persist across the epochs of a phase (`make_loader`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.store.reader import LabelStore
from trainer.data.batches import Batches
from trainer.data.dataset import PromptDataset, pass_batch
from trainer.data.feature_cache import ClipCache
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.data.sample_index import SampleIndex
from trainer.data.samples import LabelMinimums, collect_samples
from trainer.data.target_cache import TargetCache, build_target_cache


def make_loader(
    dataset: Dataset, batches: Sampler[list[int]], num_workers: int, pin_memory: bool
) -> DataLoader:
    """A loader of `dataset` over the batch sampler `batches` (lists of indices per batch).

    The dataset reads a whole batch at once (`PromptDataset.__getitems__`); with workers they
    persist across epochs (each `iter` reuses them) and, where pinned memory is asked for (a
    CUDA device), batches arrive in page-locked memory for asynchronous copies.
    """
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=pass_batch,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


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
    cache_dir: Path | None = None  # where target caches are built (None: targets from RLEs)
    pin_memory: bool = False  # batches in pinned memory (training on a CUDA device)
    group_by_image: bool = False  # shuffled batches keep an image's expressions together
    minimums: LabelMinimums = field(default_factory=LabelMinimums)  # lower labels: no target
    _targets: list[TargetCache] | None = field(default=None, repr=False)
    # (key, samples, loader, batches)
    _last: tuple[Any, ...] | None = field(default=None, repr=False)

    def samples(
        self,
        subsets: Sequence[str],
        selections: dict[int, dict[str, int]] | None,
        unselected: bool = False,
    ) -> SampleIndex:
        """Training samples of `subsets`; H_ref as selected (empty before any Select), or with
        `unselected` every H_ref pair with its candidates' c unknown."""
        subsets = tuple(subsets)
        if unselected:
            selections = None
        elif "H_ref" in subsets and selections is None:
            subsets = tuple(s for s in subsets if s != "H_ref")
        return collect_samples(
            self.stores, subsets, self.train_splits, selections, minimums=self.minimums
        )  # fmt: skip

    def target_caches(self) -> list[TargetCache] | None:
        """Every store's target cache (built once, on first use); None without a cache_dir."""
        if self.cache_dir is None:
            return None
        if self._targets is None:
            self._targets = [
                TargetCache(build_target_cache(s, self.cache_dir, self.grid_side))
                for s in self.stores
            ]
        return self._targets

    def loader(
        self,
        samples: SampleIndex,
        batch_size: int,
        num_workers: int,
        shuffle_seed: int | None,
        target_masks: bool = False,
        embeddings: bool = True,
        with_targets: bool = True,
    ) -> DataLoader:
        """A loader of `samples` in batches of `batch_size` (this rank's `share` of each);
        shuffled by `shuffle_seed` (None: in order).

        `embeddings`: whether batches carry the full SAM embeddings (SAM decodes: Select, mask
        losses); without them the generator reads its cached SAM stage only. `target_masks`:
        whether the targets carry their low-res masks (mask losses). The loader of the previous
        call is returned, re-seeded, when samples and options are the same.
        """
        key = (id(samples), batch_size, num_workers, target_masks, embeddings, with_targets)
        if self._last is not None and self._last[0] == key:
            self._last[3].set_seed(shuffle_seed)
            return self._last[2]
        self._last = None  # its workers stop before new ones start
        targets = (
            self.target_caches() if with_targets and (target_masks or self.grid_side) else None
        )
        dataset = PromptDataset(
            samples, self.clip_caches, self.sam_embeddings, with_targets=with_targets,
            target_masks=target_masks, embeddings=embeddings, grid_side=self.grid_side,
            targets=targets,
        )  # fmt: skip
        groups = samples.image_groups() if self.group_by_image else None
        batches = Batches(len(samples), batch_size, shuffle_seed, groups)
        loader = make_loader(
            dataset, self.share(batches) if self.share else batches, num_workers, self.pin_memory
        )
        self._last = (key, samples, loader, batches)  # samples held: their id stays unique
        return loader
