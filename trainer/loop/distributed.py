"""Data-parallel training (DESIGN §8): torchrun's process group, each rank's share of a batch.

`torchrun --nproc_per_node N -m cli.main train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; `process_group` joins them (gloo on CPU, nccl on CUDA) and a
plain run, without those variables, has no group and trains exactly as one process always did.

Every rank builds the same loader over the same samples in the same shuffled order, batched to
the global batch size; `RankBatches` hands each rank its contiguous slice of every global batch,
so N ranks step through the very batches one process would, each reading only its share of
the samples. With the loss normalised by the global counts (`trainer.loss.criterion`) and the
gradients averaged by DistributedDataParallel, one step of N ranks is one step of one process
on the global batch, up to float rounding: the same weights after the same epochs.

A global batch smaller than the world (the last one, N mod B < world) leaves some ranks without
a sample: they repeat the batch's first sample, which then counts twice in that one step (as
torch's DistributedSampler pads). Every other batch is split exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_distributed() -> bool:
    """Whether a process group is up (a torchrun rank, or a test's group)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this rank, world size); (0, 1) without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 (or no process group): the one rank that writes files, logs and draws bars."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if is_distributed():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] without a process group)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (the same keys on every rank; as is without a group).

    A rank's loss terms are its share of the global batch's loss times the world size (see the
    module docstring), so their mean over the ranks is the global batch's loss.
    """
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def rank_slice(size: int, rank: int, world: int) -> slice:
    """This rank's contiguous part of `size` items: sizes differ by at most one, lower ranks
    first (np.array_split's split)."""
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class RankBatches(Sampler[list[int]]):
    """A batch sampler's global batches of sample indices → this rank's slice of each.

    Every rank yields as many batches as `batches` does, so the ranks stay in step; a rank whose
    slice of a batch is empty gets the batch's first index (module docstring).
    """

    def __init__(self, batches: Sampler[list[int]], rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            share = list(batch[rank_slice(len(batch), self.rank, self.world)])
            yield share or list(batch[:1])

    def __len__(self) -> int:
        if not isinstance(self.batches, Sized):
            raise TypeError("the wrapped batch sampler has no length")
        return len(self.batches)


def rank_share(batches: Sampler[list[int]]) -> Sampler[list[int]]:
    """`batches` as this rank reads them: its slice of each (as is without a process group)."""
    rank, world = rank_and_world()
    return batches if world == 1 else RankBatches(batches, rank, world)


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) set RANK, WORLD_SIZE and LOCAL_RANK."""
    return all(v in os.environ for v in TORCHRUN_VARS)


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the block; yields the device this rank trains on.

    Without torchrun's variables nothing happens and `device` is yielded as is. Under torchrun:
    nccl and cuda:LOCAL_RANK on a CUDA device, gloo on CPU; ranks other than 0 log warnings only.
    """
    if not launched_by_torchrun() or is_distributed():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = rank_and_world()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("data-parallel training on %d ranks (%s)", world, dist.get_backend())
    try:
        yield device
    finally:
        dist.destroy_process_group()
