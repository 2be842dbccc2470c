"""Which samples go into which batch: global batches of sample indices, seeded per epoch.

`Batches` is the loader's batch sampler. It yields lists of indices into the dataset (global
batches; under data parallelism `trainer.loop.distributed` hands each rank its slice of every
one), and is re-seeded in place each epoch (`set_seed`), so a loader with persistent workers
keeps its workers across epochs.

Orders:
- shuffled (`seed`): torch.randperm(n) under a generator seeded with `seed`, cut into batches:
  the very order of a DataLoader over `RandomSampler(generator=manual_seed(seed))`, so the
  batches are the ones a plain shuffled loader gives.
- grouped by image (`seed` and `groups`): the images in a seeded random order, each image's
  expressions together in a seeded random order, cut into batches. An image's features are then
  read once for all its expressions in a batch (RefCOCO: ≈ 7 per image). What it does to the
  randomness: the epoch order is still a seeded random draw, but no longer a uniform
  permutation of samples: a batch holds few images with several expressions each (correlated
  samples, noisier gradient steps), and two expressions of one image always land in the same
  or neighbouring batches. Off by default (`data.group_by_image`).
- in order (`seed` None): 0..n-1, for evaluation and Select.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class Batches(Sampler[list[int]]):
    """Batches of `batch_size` indices into n samples (module docstring); the last may be short.

    Args:
        n: samples.
        batch_size: samples per (global) batch.
        seed: shuffle seed (None: in order); change it per epoch with `set_seed`.
        groups: (n,) int group of each sample (its image) to keep together, or None.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int | None = None, groups: np.ndarray | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: must be ≥ 1")
        if groups is not None and len(groups) != n:
            raise ValueError(f"{len(groups)} groups for {n} samples")
        self.n, self.batch_size, self.seed, self.groups = n, batch_size, seed, groups

    def set_seed(self, seed: int | None) -> None:
        """The next epoch's shuffle seed (None: in order)."""
        self.seed = seed

    def order(self) -> np.ndarray:
        """(n,) the epoch's sample order."""
        if self.seed is None:
            return np.arange(self.n)
        generator = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(self.n, generator=generator).numpy()
        if self.groups is None:
            return perm
        n_groups = int(self.groups.max()) + 1 if self.n else 0
        group_rank = torch.randperm(n_groups, generator=generator).numpy()
        within = np.empty(self.n, np.int64)
        within[perm] = np.arange(self.n)  # each sample's place in a random permutation
        return np.lexsort((within, group_rank[self.groups]))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order().tolist()
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size
