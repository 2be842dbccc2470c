"""Where and how the frozen models run: device choice, autocast, CPU thread determinism."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pipeline.core.errors import ConfigError
from pipeline.models.options import DEVICES


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
