"""Cached frozen features: CLIP stages per image and words per expression, SAM embeddings.

Training never runs a frozen encoder per epoch (DESIGN §6). CLIP features are computed once per
label store into a Zarr cache under `cache_dir/<key>/`, the key hashing everything they depend
on: the store's manifest, the CLIP architecture and weights id, the stage indices and the input
side. Layout:

    <key>/features.zarr    stages   (n_images, N, G*G, C) f16   CLIP block outputs, patch tokens
                           words    (n_samples, T, C_t) f16     projected word features
                           word_len (n_samples,) int32          tokens before padding
                           sam_tokens (n_images, S*S, 256) f16  SAM embedding pooled (sam_stage)
                           relevance (n_samples, R, R) f16      whole-expression relevance
                                     (n_samples, 1+P, R, R)   and the first P phrases' maps
    <key>/images.parquet   image_sha256, row
    <key>/samples.parquet  sample_id, row
    <key>/done.json        the key's inputs; written last: a cache without it is rebuilt

Arrays are sharded as the label store's are (`pipeline.store.shards.create_row_array`): one
inner chunk per row, so the trainer reads one image's or sample's row, and a shard file of up to
256 MiB of rows, so the cache is a few files per array, not one per row. `CACHE_FORMAT` is in the
key: a cache of an older layout is rebuilt, never read. The cache is built in a temporary
directory of its own and renamed, so a killed run leaves nothing half read, and runs that
build the same cache at once (ablation rows side by side, DDP ranks) do not write into each
other's files: the first rename wins. SAM embeddings are never
recomputed: `SamEmbeddings` (trainer.data.sam_embeddings) reads them from the label store's
embedding cache. Readers load everything into memory when it is small (`max_memory_bytes`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from rich.progress import track

from pipeline.core.errors import StoreError
from pipeline.models.clip_surgery import preprocess_image
from pipeline.models.frozen import FrozenClip
from pipeline.store import shards
from pipeline.store.reader import MANIFEST, LabelStore
from trainer.data.ragged import RaggedRows
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.network.clip_stages import image_stages, resolve_stage_indices, word_features
from trainer.network.layers import sam_stage_tokens

log = logging.getLogger(__name__)

IMAGES_SCHEMA = pa.schema([("image_sha256", pa.string()), ("row", pa.int32())])
SAMPLES_SCHEMA = pa.schema([("sample_id", pa.string()), ("row", pa.int32())])
DEFAULT_MAX_MEMORY = 4 << 30  # bytes: smaller caches are read into memory once
CACHE_FORMAT = 2  # 2: sharded Zarr arrays (1: a chunk file per row); part of every cache key


@dataclass(frozen=True)
class CacheSpec:
    """What to cache for one model: CLIP stages and input side, and the optional extras."""

    stage_indices: tuple[int, ...]
    input_size: int
    batch_size: int = 16
    sam_stage: int = 0  # > 0: SAM's embedding pooled to sam_stage × sam_stage tokens per image
    text_layers: int | None = None  # word features from this many text blocks (None: all)
    relevance: bool = False  # each expression's whole-expression relevance map, from the store
    phrase_maps: int = 0  # > 0: and its first phrase_maps candidates' maps (channels 1..P)


def manifest_hash(store: LabelStore) -> str:
    """sha256 of the store's manifest.json: names every shard's content, so the whole store."""
    return hashlib.sha256((store.root / MANIFEST).read_bytes()).hexdigest()


def cache_key(store: LabelStore, clip: FrozenClip, spec: CacheSpec) -> dict[str, Any]:
    """Everything the cached features depend on."""
    blocks = len(clip.model.visual.transformer.resblocks)
    key = {
        "format": CACHE_FORMAT,
        "manifest_sha256": manifest_hash(store),
        "clip_model": clip.name,
        "clip_weights": clip.weights_id,
        "stage_indices": list(resolve_stage_indices(spec.stage_indices, blocks)),
        "input_size": int(spec.input_size),
    }
    if spec.sam_stage:
        key["sam_stage"] = int(spec.sam_stage)
    if spec.text_layers is not None:
        key["text_layers"] = int(spec.text_layers)
    if spec.relevance:
        key["relevance"] = True
    if spec.phrase_maps:
        key["phrase_maps"] = int(spec.phrase_maps)
    return key


def _key_dir(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / digest


def _load_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: image missing; pass the dataset's --data-root for this store")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


def build_clip_cache(
    store: LabelStore, data_root: Path, clip: FrozenClip, spec: CacheSpec, cache_dir: Path
) -> Path:
    """Compute the CLIP features of every image and expression of `store` once; returns the dir.

    With `spec.sam_stage` > 0 the SAM image embeddings of the store are pooled once to the point
    generator's SAM stage and cached too, so that training without mask losses never reads a full
    256 × 64 × 64 embedding. With `spec.relevance` each expression's relevance map (the store's
    `sentence_relevance`) is cached by sample, for generators that read it; a store without them
    is refused. A complete cache with the same key is reused as is (seconds).
    """
    key = cache_key(store, clip, spec)
    batch_size = spec.batch_size
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
    tmp = shards.private_dir(out)
    import zarr

    group = zarr.open_group(str(tmp / "features.zarr"), mode="w")
    stage_idx = key["stage_indices"]
    stages = None
    for start in track(
        range(0, len(order), batch_size), description=f"CLIP features of {store.root.name}"
    ):
        chunk = order[start : start + batch_size]
        pixels = torch.stack(
            [
                preprocess_image(
                    _load_rgb(Path(data_root) / images[h]), spec.input_size, clip.mean, clip.std
                )
                for h in chunk
            ]
        )  # (b, 3, S, S)
        feats = image_stages(clip.model.visual, pixels.to(clip.device), stage_idx)
        stacked = torch.stack(feats, dim=1).half().cpu().numpy()  # (b, N, G*G, C)
        if stages is None:
            shape = (len(order), *stacked.shape[1:])
            stages = shards.RowAppender(
                shards.create_row_array(group, "stages", shape=shape, dtype="float16")
            )
        stages.append(stacked)
    if stages is not None:
        stages.close()
    words, pad = _all_words(clip, tokens, batch_size, spec.text_layers)  # (n, T, C_t), (n, T)
    shards.create_row_array(group, "words", data=words.half().numpy())
    shards.create_row_array(group, "word_len", data=(~pad).sum(-1).int().numpy())
    if spec.relevance:
        maps = _sentence_maps(store, [r["sample_id"] for r in rows])  # (n_samples, R, R)
        if spec.phrase_maps:  # (n_samples, 1 + P, R, R): the sentence's, then its phrases'
            phrases = store.phrase_relevance([r["sample_id"] for r in rows], spec.phrase_maps)
            maps = np.concatenate([maps[:, None], phrases], axis=1)
        shards.create_row_array(group, "relevance", data=maps)
    if spec.sam_stage:
        tokens_arr = _sam_tokens(store, order, spec.sam_stage)  # (n_images, S*S, 256)
        shards.create_row_array(group, "sam_tokens", data=tokens_arr)
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
    shards.publish_dir(tmp, out)
    log.info("cached CLIP features of %d images, %d expressions in %s", len(order), len(rows), out)
    return out


def _sentence_maps(store: LabelStore, sample_ids: list[str]) -> np.ndarray:
    """(n, R, R) f16 whole-expression relevance of `sample_ids`, from the store's arrays."""
    maps = store.sentence_relevance()
    missing = [s for s in sample_ids if s not in maps]
    if missing:
        raise StoreError(
            f"{store.root}: no whole-expression relevance for {len(missing)} of "
            f"{len(sample_ids)} samples (e.g. {missing[0]}); the model reads it "
            "(model.relevance_input): rebuild the store's attention stage with this ppt-labels"
        )
    return np.stack([np.asarray(maps[s], dtype=np.float16) for s in sample_ids])


@torch.no_grad()
def _sam_tokens(store: LabelStore, order: list[str], side: int) -> np.ndarray:
    """(n_images, side², 256) f16 SAM stage tokens of `order`'s images (`sam_stage_tokens`)."""
    embeddings = SamEmbeddings(store)
    out = []
    for digest in order:
        emb = embeddings[digest][None]  # (1, 256, 64, 64)
        size = torch.tensor([embeddings.sizes[digest]])
        out.append(sam_stage_tokens(emb, size, side)[0].half().numpy())
    return np.stack(out) if out else np.zeros((0, side * side, 256), np.float16)


@torch.no_grad()
def _all_words(
    clip: FrozenClip, tokens: torch.Tensor, batch_size: int, layers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Word features of every expression, padded to the longest: (n, T, C_t), (n, T) on CPU."""
    words, pads = [], []
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size].to(clip.device)
        w, p = word_features(clip.model, batch, layers)
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
        self.word_len = group["word_len"][...]
        # only the real tokens in memory: the array is padded to the store's longest sentence
        self.words = RaggedRows.from_padded(group["words"], self.word_len)
        self.sam_tokens = (
            _maybe_load(group["sam_tokens"], max_memory_bytes) if "sam_tokens" in group else None
        )
        self.relevance = (
            _maybe_load(group["relevance"], max_memory_bytes) if "relevance" in group else None
        )
        images = pq.read_table(self.path / "images.parquet").to_pydict()
        samples = pq.read_table(self.path / "samples.parquet").to_pydict()
        self.image_row = dict(zip(images["image_sha256"], images["row"], strict=True))
        self.sample_row = dict(zip(samples["sample_id"], samples["row"], strict=True))

    def image_stages(self, image_sha256: str) -> list[torch.Tensor]:
        """N × (G*G, C) float32 stage features of one image."""
        x = torch.from_numpy(np.asarray(self.stages[self.image_row[image_sha256]])).float()
        return list(x.unbind(0))

    def image_sam_tokens(self, image_sha256: str) -> torch.Tensor | None:
        """(S*S, 256) float32 pooled SAM tokens of one image, None when not cached."""
        if self.sam_tokens is None:
            return None
        return torch.from_numpy(np.asarray(self.sam_tokens[self.image_row[image_sha256]])).float()

    def sample_relevance(self, sample_id: str) -> torch.Tensor | None:
        """(R, R) (or (1+P, R, R)) float32 relevance of one expression, None when not cached."""
        if self.relevance is None:
            return None
        return torch.from_numpy(np.asarray(self.relevance[self.sample_row[sample_id]])).float()

    def sample_words(self, sample_id: str) -> torch.Tensor:
        """(T, C_t) float32 word features of one expression, padding trimmed."""
        return torch.from_numpy(self.words[self.sample_row[sample_id]]).float()
