"""The label store's SAM image embeddings, read from the embedding cache, never recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import StoreError
from pipeline.models.frozen import FrozenSam
from pipeline.models.weights import check_weights
from pipeline.store.embeddings import store_embeddings
from pipeline.store.reader import LabelStore


class SamEmbeddings:
    """The label store's SAM image embeddings by image sha256, from the embedding cache."""

    def __init__(
        self, store: LabelStore, sam: FrozenSam | None = None, max_memory_bytes: int = 1 << 30
    ) -> None:
        if "encode" not in store.tables:
            raise StoreError(f"{store.root}: no encode table; build the encode stage first")
        cache, keys = store_embeddings(store.root, store.manifest.get("provenance", {}))
        self.where: dict[str, tuple[Any, int]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        budget = max_memory_bytes
        loaded: dict[Path, Any] = {}  # pack → its array (in memory while the budget lasts)
        for row in store.table("encode").to_pylist():
            entry = cache.entry(keys["sam"], row["image_sha256"])
            if entry.pack not in loaded:
                group = cache.group(entry)
                if sam is not None:
                    check_weights(dict(group.attrs)["sam"], sam, f"SAM {sam.variant}")
                array = group["sam_embedding"]  # (n_images, 256, 64, 64) f16
                nbytes = int(np.prod(array.shape)) * 2
                if nbytes <= budget:
                    array, budget = array[...], budget - nbytes
                loaded[entry.pack] = array
            self.where[row["image_sha256"]] = (loaded[entry.pack], entry.row)
            self.sizes[row["image_sha256"]] = (row["height"], row["width"])

    def __contains__(self, image_sha256: str) -> bool:
        return image_sha256 in self.where

    def __getitem__(self, image_sha256: str) -> torch.Tensor:
        """(256, 64, 64) float32 embedding of one image."""
        array, row = self.where[image_sha256]
        return torch.from_numpy(np.asarray(array[row])).float()
