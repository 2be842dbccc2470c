"""Encode: every distinct image of a shard through the frozen image encoders, exactly once.

SAM's image embedding (256, 64, 64) is what the masks stage (and the trainer) prompt; CLIP
Surgery's dense features (G, G, D) are what the "clip" relevance source scores phrases against.
Both are cached as float16 in the shard's Zarr group, batched across images; row i of each array
belongs to the table row whose `array_row` is i. Images are keyed by content (`image_sha256`),
so two paths to the same bytes are encoded once.

Models are built once per process (`load_sam`, `load_clip`: shard tasks may run on Dask workers)
and identified by the sha256 of their checkpoint, or "random-init". That identity is part of the
stage config (so new weights re-encode) and lands in the store manifest's "models". Later stages
(attention, masks) rebuild the same models from this stage's recorded config, never their own.

Checkpoint paths (params.yaml encode.sam_checkpoint / --sam-checkpoint, and the CLIP ones) that
are relative are looked up from the working directory, then from the repository root (where
params.yaml lives), so the default `../shared/weights/...` works from any checkout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from pipeline import config as config_io
from pipeline import schemas, shards
from pipeline.errors import ConfigError, StoreError
from pipeline.models import RANDOM_INIT, FrozenClip, FrozenSam, build_clip, build_sam, sha256_file
from pipeline.stage import STAGE_MANIFEST, ShardOutput, ShardTask, StageContext, StageSpec

REPO_ROOT = config_io.DEFAULT_PARAMS.parent
# The project's shared MobileSAM weights (also params.yaml's value), so a params file without an
# [encode] section still builds real labels where the shared checkout is present.
DEFAULT_SAM_CHECKPOINT = "../shared/weights/sam_vit_t_minisam.pth"


@dataclass(frozen=True)
class EncodeConfig:
    """params.yaml [encode]; command-line flags override the keys named in brackets."""

    sam_variant: str = "vit_t"  # vit_b | vit_l | vit_h | vit_t (MobileSAM) [--sam]
    sam_checkpoint: str | None = DEFAULT_SAM_CHECKPOINT  # null needs allow_random_weights
    clip: bool = False  # also cache CLIP dense features: attention.source clip needs them
    clip_model: str = "ViT-B-16"  # open_clip architecture [--clip-model]
    clip_checkpoint: str | None = None  # open_clip state dict [--clip-checkpoint]
    clip_pretrained: str | None = None  # open_clip pretrained tag, online only [--clip-pretrained]
    model_cache: str | None = None  # download dir for pretrained tags and SAM's official weights
    clip_input_size: int = 448  # CLIP input side S; relevance grid G = S / patch (ViT-B-16: 28)
    clip_vv_blocks: int | None = None  # CLIP Surgery v-v blocks; None = half the blocks (ViT-B: 6)
    allow_random_weights: bool = False  # tests and demos only; stamped "random-init"
    batch_size: int = 4  # images per encoder forward
    device: str = "auto"  # auto (cuda when available) | cpu | cuda; bf16 autocast on cuda

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r}: choose auto, cpu or cuda")
        if self.clip_input_size < 16:
            raise ValueError("clip_input_size must be at least 16 pixels")


# command-line option (StageContext.options key) → [encode] key
OPTION_KEYS = {
    "sam": "sam_variant",
    "sam_checkpoint": "sam_checkpoint",
    "clip_model": "clip_model",
    "clip_checkpoint": "clip_checkpoint",
    "clip_pretrained": "clip_pretrained",
    "allow_random_weights": "allow_random_weights",
}


def apply_options(section: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Command-line model flags override params; --relevance clip turns CLIP features on."""
    section = dict(section)
    for option, key in OPTION_KEYS.items():
        if options.get(option) is not None:
            section[key] = str(options[option]) if "checkpoint" in key else options[option]
    if options.get("relevance") is not None:
        section["clip"] = options["relevance"] == "clip"
    return section


def encode_config(config: dict[str, Any]) -> EncodeConfig:
    """The `EncodeConfig` of a validated config dict (as `read_config` returns it)."""
    names = {f.name for f in dataclasses.fields(EncodeConfig)}
    return config_io.from_section(
        EncodeConfig, {k: v for k, v in config.items() if k in names}, "encode"
    )


def resolve_checkpoint(value: str | None, where: str) -> Path | None:
    """A checkpoint path as configured → an existing file (see the module docstring)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    for candidate in (path,) if path.is_absolute() else (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{where} {value}: no such file (relative paths: from . or {REPO_ROOT})")


@functools.lru_cache(maxsize=8)
def _weights_id(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def weights_id(path: Path | None) -> str:
    """sha256 of a checkpoint (cached per file version), or "random-init" for no file."""
    if path is None:
        return RANDOM_INIT
    stat = path.stat()
    return _weights_id(str(path), stat.st_size, stat.st_mtime_ns)


def resolve_device(device: str) -> torch.device:
    """ "auto" → cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params.yaml [encode] device: cuda, but no CUDA device is visible")
    return torch.device(device)


@functools.lru_cache(maxsize=2)
def load_sam(
    variant: str, checkpoint: str | None, allow_random: bool, device: str, cache: str | None = None
) -> FrozenSam:
    """A frozen SAM, built once per process for each (variant, checkpoint, flag, device, cache)."""
    path = Path(checkpoint) if checkpoint else None
    cache_dir = Path(cache) if cache else None
    return build_sam(variant, path, allow_random=allow_random, cache_dir=cache_dir, device=device)


@functools.lru_cache(maxsize=2)
def load_clip(
    name: str,
    checkpoint: str | None,
    allow_random: bool,
    device: str,
    pretrained: str | None = None,
    cache: str | None = None,
) -> FrozenClip:
    """A frozen CLIP, built once per process for each distinct set of arguments."""
    path = Path(checkpoint) if checkpoint else None
    cache_dir = Path(cache) if cache else None
    return build_clip(
        name, path, pretrained, allow_random=allow_random, cache_dir=cache_dir, device=device
    )


def sam_for(cfg: EncodeConfig) -> FrozenSam:
    """The (cached) SAM that `cfg` names."""
    path = resolve_checkpoint(cfg.sam_checkpoint, "--sam-checkpoint / encode.sam_checkpoint")
    device = str(resolve_device(cfg.device))
    return load_sam(
        cfg.sam_variant, path and str(path), cfg.allow_random_weights, device, cfg.model_cache
    )


def clip_for(cfg: EncodeConfig) -> FrozenClip:
    """The (cached) CLIP that `cfg` names."""
    path = resolve_checkpoint(cfg.clip_checkpoint, "--clip-checkpoint / encode.clip_checkpoint")
    device = str(resolve_device(cfg.device))
    return load_clip(
        cfg.clip_model,
        path and str(path),
        cfg.allow_random_weights,
        device,
        cfg.clip_pretrained,
        cfg.model_cache,
    )


def _no_weights(model: str, flag: str, key: str) -> ConfigError:
    return ConfigError(
        f"no weights for {model}: pass {flag} PATH (or set encode.{key} in params.yaml), "
        "or --allow-random-weights for tests and demos"
    )


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate [encode]; adds the weights' identity so that new weights re-encode."""
    cfg = config_io.from_section(EncodeConfig, section, "encode")
    sam_path = resolve_checkpoint(cfg.sam_checkpoint, "--sam-checkpoint / encode.sam_checkpoint")
    # With a model_cache, build_sam fetches SAM's official checkpoint (online only).
    if sam_path is None and not (cfg.allow_random_weights or cfg.model_cache):
        raise _no_weights(f"SAM {cfg.sam_variant}", "--sam-checkpoint", "sam_checkpoint")
    official = sam_path is None and cfg.model_cache
    weights = {"sam": f"official:{cfg.sam_variant}" if official else weights_id(sam_path)}
    if cfg.clip:
        clip_path = resolve_checkpoint(cfg.clip_checkpoint, "--clip-checkpoint")
        if clip_path is None and not (cfg.allow_random_weights or cfg.clip_pretrained):
            raise _no_weights(f"CLIP {cfg.clip_model}", "--clip-checkpoint", "clip_checkpoint")
        weights["clip"] = (
            weights_id(clip_path)
            if clip_path or not cfg.clip_pretrained
            else f"openclip:{cfg.clip_pretrained}"
        )
    return {**config_io.to_dict(cfg), "weights": weights}


def upstream_config(encode_shard: str) -> EncodeConfig:
    """The config the encode stage ran with, from its `_stage.json` next to `encode_shard`."""
    path = Path(encode_shard).parent / STAGE_MANIFEST
    try:
        return encode_config(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(
            f"{path}: unreadable encode stage manifest ({exc}); re-run encode"
        ) from None


def check_weights(expected: dict[str, Any], model: FrozenSam | FrozenClip, what: str) -> None:
    """Refuse a model whose weights differ from the ones the cached features were made with."""
    if model.weights_id != expected.get("weights"):
        raise StoreError(
            f"{what} weights {model.weights_id[:12]} differ from the ones the encode stage used "
            f"({str(expected.get('weights'))[:12]}): re-run `ppt-labels stage encode`"
        )


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


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()  # CPU stays float32: deterministic bytes
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


@torch.no_grad()
def sam_embeddings(sam: FrozenSam, images: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """RGB images → SAM embeddings (B, 256, 64, 64) f16 and each input's resized (h, w).

    Exactly SamPredictor.set_image's preprocessing (resize longest side, normalise, pad), one
    encoder forward for the whole batch.
    """
    from segment_anything.utils.transforms import ResizeLongestSide

    device = next(sam.model.parameters()).device
    transform = ResizeLongestSide(sam.image_size)
    batch, sizes = [], []
    for image in images:
        resized = transform.apply_image(image)  # (h, w, 3), longest side = image_size
        sizes.append(resized.shape[:2])
        x = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None]
        batch.append(sam.model.preprocess(x))  # (1, 3, S, S) normalised, padded
    with _autocast(device):
        feats = sam.model.image_encoder(torch.cat(batch))  # (B, 256, 64, 64)
    return feats.float().cpu().numpy().astype(np.float16), sizes


def vv_blocks(clip: FrozenClip, cfg: EncodeConfig) -> int:
    """CLIP Surgery's v-v block count: configured, else half the ViT's blocks."""
    if cfg.clip_vv_blocks is not None:
        return cfg.clip_vv_blocks
    return max(1, len(clip.model.visual.transformer.resblocks) // 2)


@torch.no_grad()
def clip_dense(clip: FrozenClip, images: list[np.ndarray], cfg: EncodeConfig) -> np.ndarray:
    """RGB images → L2-normalised CLIP Surgery dense features (B, G, G, D) f16."""
    from pipeline.clip_surgery import dense_features, preprocess_image

    batch = torch.stack(
        [preprocess_image(im, cfg.clip_input_size, clip.mean, clip.std) for im in images]
    )  # (B, 3, S, S)
    with _autocast(clip.device):
        feats = dense_features(clip, batch, vv_blocks(clip, cfg))  # (B, G, G, D)
    return feats.float().cpu().numpy().astype(np.float16)


def run_shard(task: ShardTask) -> ShardOutput:
    """Encode each distinct image of the shard once; one table row per image."""
    cfg = encode_config(task.config)
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
    table="encode",
    inputs=("ingest",),
    schema=schemas.ENCODE,
    run_shard=run_shard,
    read_config=read_config,
    apply_options=apply_options,
    provenance=provenance,
)
