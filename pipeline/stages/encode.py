"""Encode: every distinct image through the frozen image encoders, once across all stores.

SAM's image embedding (256, 64, 64) is what the masks stage (and the trainer) prompt; CLIP
Surgery's dense features (G, G, D) are what the "clip" relevance source scores phrases against.
Both live in the embedding cache (`pipeline.store.embeddings`), keyed by image sha256 and encoder
key, as float16: a shard encodes only the images no store has encoded with the same encoder
(RefCOCO+ after RefCOCO encodes nothing), batched, and writes them as one pack into its store's
partition. The stage's table lists the store's distinct images (`image_sha256`, sizes); its
record names the cache (relative to the store) and the encoder keys.

The config is `pipeline.models.encoders.EncoderConfig` (params.yaml [encode], overridden by the
command's `ModelOptions`) plus `cache`. The weights' identity is part of the stage config (so new
weights re-encode, under a new encoder key) and lands in the store manifest's "models". Later
stages (attention, masks) rebuild the same models from this stage's recorded config.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core import config as config_io
from pipeline.core.errors import ConfigError, StoreError
from pipeline.models.encoders import (
    EncoderConfig,
    clip_dense,
    clip_for,
    encoder_config,
    identity,
    sam_embeddings,
    sam_for,
    vv_blocks,
)
from pipeline.models.runtime import reproducible_threads, resolve_device
from pipeline.stages.spec import ShardOutput, ShardTask, StageContext, StageSpec
from pipeline.store import schemas, shards
from pipeline.store.embeddings import EmbeddingCache, cache_at, encoder_key
from pipeline.store.verify import HashCache

log = logging.getLogger(__name__)

DEFAULT_CACHE = "_embeddings"  # beside the store: stores in one directory share one cache


def apply_options(section: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Command-line model flags override params; --relevance clip turns CLIP features on."""
    return {**section, **ctx.models.encode_overrides()}


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate [encode]; adds the weights' identity so that new weights re-encode."""
    section = dict(section)
    cache = section.pop("cache", None)
    if cache is not None and (not isinstance(cache, str) or not cache.strip()):
        raise ConfigError(f"encode.cache: {cache!r} is not a directory path (or null)")
    cfg = config_io.from_section(EncoderConfig, section, "encode")
    return {**config_io.to_dict(cfg), "cache": cache, "weights": identity(cfg)}


def cache_root(ctx: StageContext, config: dict[str, Any]) -> Path:
    """encode.cache (relative: from the working directory), or `_embeddings` beside the store."""
    if config["cache"] is None:
        return ctx.store.parent / DEFAULT_CACHE
    return Path(config["cache"])


def encoder_keys(config: dict[str, Any]) -> dict[str, str]:
    """{"sam": key, "clip"?: key}: what makes each encoder's outputs, digested."""
    weights = config["weights"]
    sam = {"variant": config["sam_variant"], "weights": weights["sam"]}
    keys = {"sam": encoder_key("sam", sam)}
    if "clip" in weights:
        keys["clip"] = encoder_key(
            "clip",
            {
                "model": config["clip_model"],
                "weights": weights["clip"],
                "input_size": config["clip_input_size"],
                "vv_blocks": config["clip_vv_blocks"],
            },
        )
    return keys


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


def _encode_pack(kind: str, todo: list[str], paths: dict[str, Path], cfg: EncoderConfig) -> tuple:
    """(index columns, (n, ...) f16 rows, Zarr attrs) of `kind`'s encoder over images `todo`."""
    columns: dict[str, list[int | str]] = {
        name: [] for name in ("image_sha256", "height", "width", "input_height", "input_width")
    }
    parts = []
    if kind == "sam":
        model = sam_for(cfg)
        attrs = {"sam": {"variant": model.variant, "weights": model.weights_id}}
    else:
        model = clip_for(cfg)
        attrs = {
            "clip": {
                "model": model.name,
                "weights": model.weights_id,
                "input_size": cfg.clip_input_size,
                "vv_blocks": vv_blocks(model, cfg),
            }
        }
    for chunk in _batches(todo, cfg.batch_size):
        pixels = [_load_rgb(paths[h]) for h in chunk]
        with reproducible_threads():
            if kind == "sam":
                emb, sizes = sam_embeddings(model, pixels)
            else:
                emb, sizes = clip_dense(model, pixels, cfg), [(0, 0)] * len(pixels)
        parts.append(emb)
        for digest, image, (ih, iw) in zip(chunk, pixels, sizes, strict=True):
            for name, value in zip(columns, (digest, *image.shape[:2], ih, iw), strict=True):
                columns[name].append(value)
    return columns, np.concatenate(parts), attrs


def _drop_damaged(cache: EmbeddingCache, key: str, images: list[str], partition: str) -> None:
    """Delete this store's damaged packs among `images`' (their images are then encoded again);
    a damaged pack of another store's partition is refused: its own encode re-creates it.
    Pack files are hashed by stat key (`HashCache`), so an unchanged cache costs a stat a file."""
    hashes = HashCache(cache.root)
    damaged = cache.damaged(key, images, hashes.sha256)
    hashes.save()
    for pack in damaged:
        owner = pack.parent.parent.name
        if owner != partition:
            raise StoreError(
                f"{pack}: a damaged pack of store {owner!r}'s partition of the embedding cache: "
                f"re-encode it with `ppt-labels stage encode --force` on that store"
            )
        log.warning("%s: damaged; encoding its images again", pack)
        cache.drop(key, pack)


def run_shard(task: ShardTask) -> ShardOutput:
    """Encode the shard's images the cache lacks (one pack per encoder); one row per image."""
    cfg = encoder_config(task.config)
    samples = shards.read_parquet(task.inputs["ingest"]).to_pylist()
    paths: dict[str, Path] = {}
    for s in samples:  # first path of each content hash, in shard order
        paths.setdefault(s["image_sha256"], task.context.data_root / s["image_path"])
    order = list(paths)
    cache = cache_at(cache_root(task.context, task.config))
    keys = encoder_keys(task.config)
    (cache.root / task.context.store.name).mkdir(parents=True, exist_ok=True)  # the DVC output
    for kind, key in keys.items():
        _drop_damaged(cache, key, order, task.context.store.name)
        todo = cache.missing(key, order)
        if todo:
            columns, data, attrs = _encode_pack(kind, todo, paths, cfg)
            cache.write_pack(task.context.store.name, key, columns, data, attrs)
    index = cache.index(keys["sam"])
    rows = {name: [] for name in schemas.ENCODE.names}
    for digest in order:
        entry = index[digest]
        values = (digest, entry.height, entry.width, entry.input_height, entry.input_width)
        for name, value in zip(schemas.ENCODE.names, values, strict=True):
            rows[name].append(value)
    return ShardOutput(pa.table(rows, schema=schemas.ENCODE))


def check_cache(ctx: StageContext, config: dict[str, Any]) -> list[str]:
    """The store's images the cache lacks or holds in damaged packs (a re-run re-encodes them).
    Pack files are hashed by stat key: an unchanged cache costs a stat a file."""
    cache = cache_at(cache_root(ctx, config))
    images: list[str] = []
    for path in sorted((ctx.store / "encode").glob(shards.SHARD_GLOB)):
        images += shards.read_parquet(path).column("image_sha256").to_pylist()
    hashes = HashCache(cache.root)
    problems = [p for key in encoder_keys(config).values()
                for p in cache.verify(key, images, hashes.sha256)]  # fmt: skip
    hashes.save()
    return problems


def provenance(ctx: StageContext, config: dict[str, Any]) -> dict[str, Any]:
    """The models, for the store manifest, and where the store's embeddings are."""
    weights = config["weights"]
    models = {"sam": {"variant": config["sam_variant"], "weights": weights["sam"]}}
    if "clip" in weights:
        models["clip"] = {"model": config["clip_model"], "weights": weights["clip"]}
    root = cache_root(ctx, config)
    embeddings = {
        "cache": os.path.relpath(root.resolve(), ctx.store.resolve()),  # moves with the store
        **encoder_keys(config),
    }
    return {
        "models": models,
        "encode_device": str(resolve_device(config["device"])),
        "embeddings": embeddings,
    }


SPEC = StageSpec(
    name="encode",
    inputs=("ingest",),
    schema=schemas.ENCODE,
    run_shard=run_shard,
    read_config=read_config,
    apply_options=apply_options,
    provenance=provenance,
    derived_keys=("weights",),
    check_outside=check_cache,
    version=2,
)
