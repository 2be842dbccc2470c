"""Cached frozen features: CLIP stages per image and words per expression, SAM embeddings.

Training never runs a frozen encoder per epoch (DESIGN §6). CLIP features are computed once per
label store into a Zarr cache under `cache_dir/<key>/`, the key hashing everything they depend
on: the store's manifest, the CLIP architecture and weights id, the stage indices and the input
side. Layout:

    <key>/features.zarr    stages   (n_images, N, G*G, C) f16   CLIP block outputs, patch tokens
                           words    (n_samples, T, C_t) f16     projected word features
                           word_len (n_samples,) int32          tokens before padding
    <key>/images.parquet   image_sha256, row
    <key>/samples.parquet  sample_id, row
    <key>/done.json        the key's inputs; written last: a cache without it is rebuilt

The cache is built in a temporary directory and renamed, so a killed run leaves nothing half
read. SAM embeddings are never recomputed: `SamEmbeddings` reads the encode stage's arrays of the
label store. Both readers load everything into memory when it is small (`max_memory_bytes`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from rich.progress import track

from pipeline.store import schemas
from pipeline.store import shards
from pipeline.models.clip_surgery import preprocess_image
from pipeline.core.errors import StoreError
from pipeline.models.frozen import FrozenClip, FrozenSam
from pipeline.models.weights import check_weights
from pipeline.store.reader import MANIFEST, LabelStore
from trainer.network.clip_stages import image_stages, resolve_stage_indices, word_features

log = logging.getLogger(__name__)

IMAGES_SCHEMA = pa.schema([("image_sha256", pa.string()), ("row", pa.int32())])
SAMPLES_SCHEMA = pa.schema([("sample_id", pa.string()), ("row", pa.int32())])
DEFAULT_MAX_MEMORY = 4 << 30  # bytes: smaller caches are read into memory once


def manifest_hash(store: LabelStore) -> str:
    """sha256 of the store's manifest.json: names every shard's content, so the whole store."""
    return hashlib.sha256((store.root / MANIFEST).read_bytes()).hexdigest()


def cache_key(
    store: LabelStore, clip: FrozenClip, stage_indices: Sequence[int], input_size: int
) -> dict[str, Any]:
    """Everything the cached CLIP features depend on."""
    blocks = len(clip.model.visual.transformer.resblocks)
    return {
        "manifest_sha256": manifest_hash(store),
        "clip_model": clip.name,
        "clip_weights": clip.weights_id,
        "stage_indices": list(resolve_stage_indices(stage_indices, blocks)),
        "input_size": int(input_size),
    }


def _key_dir(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / digest


def _load_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: image missing; pass the dataset's --data-root for this store")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


def build_clip_cache(
    store: LabelStore,
    data_root: Path,
    clip: FrozenClip,
    stage_indices: Sequence[int],
    input_size: int,
    cache_dir: Path,
    batch_size: int = 16,
) -> Path:
    """Compute the CLIP features of every image and expression of `store` once; returns the dir.

    A complete cache with the same key is reused as is (seconds).
    """
    key = cache_key(store, clip, stage_indices, input_size)
    out = _key_dir(cache_dir, key)
    if (out / "done.json").exists():
        return out
    samples = store.samples().select(["sample_id", "image_sha256", "image_path", "expression"])
    rows = samples.to_pylist()
    images: dict[str, str] = {}
    for r in rows:
        images.setdefault(r["image_sha256"], r["image_path"])
    order = list(images)
    tokens = clip.tokenizer([r["expression"] for r in rows])  # (n_samples, context)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    import zarr

    group = zarr.open_group(str(tmp / "features.zarr"), mode="w")
    stage_idx = key["stage_indices"]
    stages_arr = None
    for start in track(
        range(0, len(order), batch_size), description=f"CLIP features of {store.root.name}"
    ):
        chunk = order[start : start + batch_size]
        pixels = torch.stack(
            [
                preprocess_image(
                    _load_rgb(Path(data_root) / images[h]), input_size, clip.mean, clip.std
                )
                for h in chunk
            ]
        )  # (b, 3, S, S)
        feats = image_stages(clip.model.visual, pixels.to(clip.device), stage_idx)
        stacked = torch.stack(feats, dim=1).half().cpu().numpy()  # (b, N, G*G, C)
        if stages_arr is None:
            stages_arr = group.create_array(
                "stages",
                shape=(len(order), *stacked.shape[1:]),
                dtype="float16",
                chunks=(1, *stacked.shape[1:]),
            )
        stages_arr[start : start + len(chunk)] = stacked
    words, pad = _all_words(clip, tokens, batch_size)  # (n_samples, T, C_t), (n_samples, T)
    words_arr = group.create_array(
        "words", shape=words.shape, dtype="float16", chunks=(1, *words.shape[1:])
    )
    words_arr[...] = words.half().numpy()
    len_arr = group.create_array("word_len", shape=(len(rows),), dtype="int32")
    len_arr[...] = (~pad).sum(-1).int().numpy()
    pq.write_table(
        pa.table({"image_sha256": order, "row": list(range(len(order)))}, schema=IMAGES_SCHEMA),
        tmp / "images.parquet",
    )
    pq.write_table(
        pa.table(
            {"sample_id": [r["sample_id"] for r in rows], "row": list(range(len(rows)))},
            schema=SAMPLES_SCHEMA,
        ),
        tmp / "samples.parquet",
    )
    (tmp / "done.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("cached CLIP features of %d images, %d expressions in %s", len(order), len(rows), out)
    return out


@torch.no_grad()
def _all_words(
    clip: FrozenClip, tokens: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Word features of every expression, padded to the longest: (n, T, C_t), (n, T) on CPU."""
    words, pads = [], []
    for start in range(0, len(tokens), batch_size):
        w, p = word_features(clip.model, tokens[start : start + batch_size].to(clip.device))
        words.append(w.cpu())
        pads.append(p.cpu())
    t = max((w.shape[1] for w in words), default=1)
    width = words[0].shape[-1] if words else 1
    out = torch.zeros(len(tokens), t, width)
    pad = torch.ones(len(tokens), t, dtype=torch.bool)
    row = 0
    for w, p in zip(words, pads, strict=True):
        out[row : row + len(w), : w.shape[1]] = w
        pad[row : row + len(w), : p.shape[1]] = p
        row += len(w)
    return out, pad


def _maybe_load(array: Any, max_bytes: int) -> Any:
    """The array itself (lazy Zarr) or, when small, its numpy copy."""
    nbytes = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize
    return array[...] if nbytes <= max_bytes else array


class ClipCache:
    """Read access to one store's cached CLIP features (see `build_clip_cache`)."""

    def __init__(self, path: Path, max_memory_bytes: int = DEFAULT_MAX_MEMORY) -> None:
        import zarr

        self.path = Path(path)
        if not (self.path / "done.json").exists():
            raise StoreError(f"{self.path}: incomplete feature cache; re-run training to rebuild")
        self.key = json.loads((self.path / "done.json").read_text())
        group = zarr.open_group(str(self.path / "features.zarr"), mode="r")
        self.stages = _maybe_load(group["stages"], max_memory_bytes)
        self.words = _maybe_load(group["words"], max_memory_bytes)
        self.word_len = group["word_len"][...]
        images = pq.read_table(self.path / "images.parquet").to_pydict()
        samples = pq.read_table(self.path / "samples.parquet").to_pydict()
        self.image_row = dict(zip(images["image_sha256"], images["row"], strict=True))
        self.sample_row = dict(zip(samples["sample_id"], samples["row"], strict=True))

    def image_stages(self, image_sha256: str) -> list[torch.Tensor]:
        """N × (G*G, C) float32 stage features of one image."""
        x = torch.from_numpy(np.asarray(self.stages[self.image_row[image_sha256]])).float()
        return list(x.unbind(0))

    def sample_words(self, sample_id: str) -> torch.Tensor:
        """(T, C_t) float32 word features of one expression, padding trimmed."""
        row = self.sample_row[sample_id]
        return torch.from_numpy(np.asarray(self.words[row, : int(self.word_len[row])])).float()


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
