"""The adapter registry: a dataset's name → its spec (data_manifests/NAME.yaml) → its adapter.

`open_dataset(name, data_root)` reads the spec and returns the adapter for its kind; variants
are data (the spec), adapters are code (one per kind).
"""

from __future__ import annotations

import functools
from pathlib import Path

from pipeline.data.composite import CompositeDataset
from pipeline.data.dataset import Dataset
from pipeline.data.imagenet import ImageNetDataset
from pipeline.data.refer import ReferDataset
from pipeline.data.specs import load_spec

# spec kind → adapter class
ADAPTERS: dict[str, type] = {
    "refer": ReferDataset,
    "imagenet": ImageNetDataset,
    "composite": CompositeDataset,
}


def open_dataset(name: str, data_root: Path, specs_dir: Path | None = None) -> Dataset:
    """Open dataset `name` (data_manifests/NAME.yaml) under `data_root` with its kind's adapter.

    Raises ConfigError for an unknown name and DatasetError when its files are missing.
    """
    spec = load_spec(name, specs_dir)
    return ADAPTERS[spec.kind](spec, Path(data_root))


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, data_root: str) -> Dataset:
    """`open_dataset`, once per process: stages that read annotations per shard share one parse."""
    return open_dataset(name, Path(data_root))
