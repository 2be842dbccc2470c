"""The label store's SAM image embeddings, read from the encode stage's arrays, never recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import StoreError
from pipeline.models.frozen import FrozenSam
from pipeline.models.weights import check_weights
from pipeline.store import schemas, shards
from pipeline.store.reader import LabelStore


class SamEmbeddings:
    """The label store's cached SAM image embeddings by image sha256 (encode stage arrays)."""

    def __init__(
        self, store: LabelStore, sam: FrozenSam | None = None, max_memory_bytes: int = 1 << 30
    ) -> None:
        if "encode" not in store.tables:
            raise StoreError(f"{store.root}: no encode table; build the encode stage first")
        self.where: dict[str, tuple[Any, int]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        budget = max_memory_bytes
        for entry in store.manifest["shards"]:
            path = Path(entry["path"])
            if path.parent.name != "encode" or path.suffix != ".parquet":
                continue
            table = shards.read_parquet(store.root / path, schemas.ENCODE).to_pylist()
            if not table:
                continue
            group = store.arrays("encode", path.stem)
            if sam is not None:
                check_weights(dict(group.attrs)["sam"], sam, f"SAM {sam.variant}")
            array = group["sam_embedding"]  # (n_images, 256, 64, 64) f16
            nbytes = int(np.prod(array.shape)) * 2
            if nbytes <= budget:
                array, budget = array[...], budget - nbytes
            for row in table:
                self.where[row["image_sha256"]] = (array, row["array_row"])
                self.sizes[row["image_sha256"]] = (row["height"], row["width"])

    def __contains__(self, image_sha256: str) -> bool:
        return image_sha256 in self.where

    def __getitem__(self, image_sha256: str) -> torch.Tensor:
        """(256, 64, 64) float32 embedding of one image."""
        array, row = self.where[image_sha256]
        return torch.from_numpy(np.asarray(array[row])).float()
