"""Where and how the frozen models run: device choice, autocast, CPU thread determinism, and
glibc's malloc kept from returning the models' freed memory to the OS."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
from collections.abc import Iterator

import torch

from pipeline.core.errors import ConfigError
from pipeline.models.options import DEVICES

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
KEEP_BYTES = 1 << 30  # blocks up to this size come from the heap; free memory up to it stays
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def resolve_device(device: str | None) -> torch.device:
    """ "auto" (or None) → cuda when available, else cpu; "cuda" without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda (or encode.device): no CUDA device is visible")
    return torch.device(device)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 (else fp16) autocast on CUDA; a no-op elsewhere (CPU stays float32: exact bytes)."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@contextlib.contextmanager
def reproducible_threads(minimum: int = 2) -> Iterator[None]:
    """Run CPU models on at least `minimum` intra-op threads: equal bytes from every executor.

    PyTorch's single-threaded CPU kernels round differently from its multi-threaded ones, which
    agree with each other for any thread count ≥ 2 (checked 2-16). Dask workers start with one
    thread (OMP_NUM_THREADS=1), an in-process build with one per core; without this their SAM
    embeddings would differ in the last bit.
    """
    before = torch.get_num_threads()
    if before < minimum:
        torch.set_num_threads(minimum)
    try:
        yield
    finally:
        if before < minimum:
            torch.set_num_threads(before)


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed CPU tensors' memory in the process for reuse (glibc); whether it was applied.

    glibc's malloc serves every block over its mmap threshold (at most 32 MiB by default) with a
    fresh mmap and unmaps it on free, and trims the heap's free top above 128 KiB. CPU tensors
    of SAM at 1024 px are such blocks, so each encode page-faults all of its memory in again,
    zero-filled by the kernel: on the 2-core dev machine one vit_t image encode took 2.2 s, 1.75
    s of it system time (540,000 minor faults). With blocks up to KEEP_BYTES on the heap and no
    trim below it, the same encode takes 0.95 s with no faults; bench/malloc_speed.py measures
    whole builds and training runs both ways. The price is that a process keeps its peak heap
    (plus at most KEEP_BYTES of free top) until it exits: an 8-scene build's peak RSS went from
    1376 to 1747 MB. Values are unchanged (PyTorch aligns every CPU block to 64 bytes either
    way; the bench checks the bytes).

    A no-op off Linux / glibc, with PPT_KEEP_FREED_MEMORY=0, and where the user set any of
    MALLOC_ENV (theirs win). Called when a frozen model is built (pipeline.models.frozen).
    """
    if os.environ.get("PPT_KEEP_FREED_MEMORY") == "0" or sys.platform != "linux":
        return False
    if any(name in os.environ for name in MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library symbol to call
        return False
    applied = all(mallopt(key, KEEP_BYTES) == 1 for key in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
    log.debug("malloc keeps freed blocks up to %d bytes: %s", KEEP_BYTES, applied)
    return applied
