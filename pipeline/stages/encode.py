"""Encode: every distinct image of a shard through the frozen image encoders, exactly once.

SAM's image embedding (256, 64, 64) is what the masks stage (and the trainer) prompt; CLIP
Surgery's dense features (G, G, D) are what the "clip" relevance source scores phrases against.
Both are cached as float16 in the shard's Zarr group, batched across images; row i of each array
belongs to the table row whose `array_row` is i. Images are keyed by content (`image_sha256`),
so two paths to the same bytes are encoded once.

The config is `pipeline.models.encoders.EncoderConfig` (params.yaml [encode], overridden by the
command's `ModelOptions`). The weights' identity is part of the stage config (so new weights
re-encode) and lands in the store manifest's "models". Later stages (attention, masks) rebuild
the same models from this stage's recorded config, never their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core import config as config_io
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


def apply_options(section: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Command-line model flags override params; --relevance clip turns CLIP features on."""
    return {**section, **ctx.models.encode_overrides()}


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate [encode]; adds the weights' identity so that new weights re-encode."""
    cfg = config_io.from_section(EncoderConfig, section, "encode")
    return {**config_io.to_dict(cfg), "weights": identity(cfg)}


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


def run_shard(task: ShardTask) -> ShardOutput:
    """Encode each distinct image of the shard once; one table row per image."""
    cfg = encoder_config(task.config)
    samples = shards.read_parquet(task.inputs["ingest"]).to_pylist()
    images: dict[str, dict[str, Any]] = {}
    for s in samples:  # first path of each content hash, in shard order
        images.setdefault(s["image_sha256"], s)
    order = list(images)

    sam = sam_for(cfg)
    clip = clip_for(cfg) if cfg.clip else None
    sam_parts, clip_parts, rows = [], [], {name: [] for name in schemas.ENCODE.names}
    for chunk in _batches(order, cfg.batch_size):
        pixels = [_load_rgb(task.context.data_root / images[h]["image_path"]) for h in chunk]
        with reproducible_threads():
            emb, sizes = sam_embeddings(sam, pixels)
            sam_parts.append(emb)
            if clip is not None:
                clip_parts.append(clip_dense(clip, pixels, cfg))
        for digest, image, (ih, iw) in zip(chunk, pixels, sizes, strict=True):
            values = (digest, len(rows["array_row"]), *image.shape[:2], ih, iw)
            for name, value in zip(schemas.ENCODE.names, values, strict=True):
                rows[name].append(value)

    side = sam.image_size // 16  # SAM's embedding grid (64 for a 1024 input)
    arrays = {
        "sam_embedding": np.concatenate(sam_parts)
        if sam_parts
        else np.zeros((0, 256, side, side), np.float16)  # (n_images, 256, 64, 64)
    }
    attrs: dict[str, Any] = {"sam": {"variant": sam.variant, "weights": sam.weights_id}}
    if clip is not None:
        width = clip.model.visual.output_dim
        arrays["clip_dense"] = (
            np.concatenate(clip_parts) if clip_parts else np.zeros((0, 1, 1, width), np.float16)
        )  # (n_images, G, G, D)
        attrs["clip"] = {
            "model": clip.name,
            "weights": clip.weights_id,
            "input_size": cfg.clip_input_size,
            "vv_blocks": vv_blocks(clip, cfg),
        }
    return ShardOutput(pa.table(rows, schema=schemas.ENCODE), arrays=arrays, attrs=attrs)


def provenance(ctx: StageContext, config: dict[str, Any]) -> dict[str, Any]:
    """The models, for the store manifest: variant / architecture and checkpoint sha256."""
    weights = config["weights"]
    models = {"sam": {"variant": config["sam_variant"], "weights": weights["sam"]}}
    if "clip" in weights:
        models["clip"] = {"model": config["clip_model"], "weights": weights["clip"]}
    return {"models": models, "encode_device": str(resolve_device(config["device"]))}


SPEC = StageSpec(
    name="encode",
    inputs=("ingest",),
    schema=schemas.ENCODE,
    run_shard=run_shard,
    read_config=read_config,
    apply_options=apply_options,
    provenance=provenance,
    derived_keys=("weights",),
)
