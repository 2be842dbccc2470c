"""The frozen encoders as configured: params.yaml [encode] → built models → image features.

`EncoderConfig` is the encode stage's section and, recorded in the store, the identity of the
encoders every later consumer rebuilds (the attention and masks stages, the trainer). Models are
built once per process (`load_sam`, `load_clip`; shard tasks may run on Dask workers).
`sam_embeddings` is exactly SamPredictor.set_image's preprocessing and encoder, batched;
`clip_dense` is CLIP Surgery's dense features; `cached_predictor` gives a SamPredictor the state
set_image would leave, from a cached embedding, so prompting never re-encodes an image.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from pipeline.core import config as config_io
from pipeline.core.errors import ConfigError
from pipeline.models.clip_surgery import dense_features, preprocess_image
from pipeline.models.frozen import FrozenClip, FrozenSam, build_clip, build_sam
from pipeline.models.options import DEVICES, ModelOptions
from pipeline.models.runtime import autocast, resolve_device
from pipeline.models.weights import (
    DEFAULT_SAM_CHECKPOINT,
    RANDOM_INIT,
    no_weights,
    resolve_checkpoint,
    weights_id,
)


@dataclass(frozen=True)
class EncoderConfig:
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
    batch_size: int = 4  # images per encode step (one encoder forward on CUDA; one each on CPU)
    device: str = (
        "auto"  # auto (cuda when available) | cpu | cuda; bf16 autocast on cuda [--device]
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r}: choose auto, cpu or cuda")
        if self.clip_input_size < 16:
            raise ValueError("clip_input_size must be at least 16 pixels")


def encoder_config(config: dict[str, Any]) -> EncoderConfig:
    """The `EncoderConfig` of a recorded config dict (extra keys such as "weights" ignored)."""
    names = {f.name for f in dataclasses.fields(EncoderConfig)}
    return config_io.from_section(
        EncoderConfig, {k: v for k, v in config.items() if k in names}, "encode"
    )


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


def _path(value: str | Path | None, flag: str) -> str | None:
    path = resolve_checkpoint(value, flag)
    return str(path) if path else None


def sam_for(cfg: EncoderConfig) -> FrozenSam:
    """The (cached) SAM that `cfg` names."""
    path = _path(cfg.sam_checkpoint, "--sam-checkpoint / encode.sam_checkpoint")
    device = str(resolve_device(cfg.device))
    return load_sam(cfg.sam_variant, path, cfg.allow_random_weights, device, cfg.model_cache)


def clip_for(cfg: EncoderConfig) -> FrozenClip:
    """The (cached) CLIP that `cfg` names."""
    path = _path(cfg.clip_checkpoint, "--clip-checkpoint / encode.clip_checkpoint")
    device = str(resolve_device(cfg.device))
    return load_clip(
        cfg.clip_model,
        path,
        cfg.allow_random_weights,
        device,
        cfg.clip_pretrained,
        cfg.model_cache,
    )


def frozen_pair(
    sam_variant: str,
    sam_weights: str,
    clip_model: str,
    options: ModelOptions,
    device: torch.device,
    clip_weights: str | None = None,
) -> tuple[FrozenClip, FrozenSam]:
    """The frozen CLIP and SAM a trainer run or a checkpoint needs, checked against their ids.

    `sam_variant` / `sam_weights` come from the label stores or the checkpoint (the embeddings
    were made with them), `clip_model` from the training config; without --sam-checkpoint the
    project's default weights are used unless those were random-init. `clip_weights`, where
    known (a checkpoint), is checked too.

    Raises:
        ConfigError: --sam / --clip-model naming another model, or weights other than the
            expected ones.
    """
    for flag, given, made in (
        ("--sam", options.sam, sam_variant),
        ("--clip-model", options.clip_model, clip_model),
    ):
        if given is not None and given != made:
            raise ConfigError(
                f"{flag} {given}: the label stores / config / checkpoint name {made}; leave "
                f"{flag} out or pass {made}"
            )
    sam_checkpoint = options.sam_checkpoint
    if sam_checkpoint is None and sam_weights != RANDOM_INIT:
        sam_checkpoint = Path(DEFAULT_SAM_CHECKPOINT)
    random = options.allow_random_weights
    sam = load_sam(sam_variant, _path(sam_checkpoint, "--sam-checkpoint"), random, str(device))
    clip_path = _path(options.clip_checkpoint, "--clip-checkpoint")
    clip = load_clip(clip_model, clip_path, random, str(device), options.clip_pretrained)
    expected = {"sam": (sam, sam_weights, "--sam-checkpoint")}
    if clip_weights is not None:
        expected["clip"] = (clip, clip_weights, "--clip-checkpoint")
    for what, (model, want, flag) in expected.items():
        if model.weights_id != want:
            raise ConfigError(
                f"{what} weights {model.weights_id[:12]} differ from the ones the stores / "
                f"checkpoint were made with ({want[:12]}): pass the same {flag}"
            )
    return clip, sam


def sam_inputs(sam: FrozenSam, images: list[np.ndarray]) -> tuple[list[torch.Tensor], list]:
    """RGB images → SAM encoder inputs, each (1, 3, S, S), and each image's resized (h, w).

    Exactly SamPredictor.set_image's preprocessing: resize the longest side, normalise, pad.
    """
    device = next(sam.model.parameters()).device
    transform = ResizeLongestSide(sam.image_size)
    batch, sizes = [], []
    for image in images:
        resized = transform.apply_image(image)  # (h, w, 3), longest side = image_size
        sizes.append(resized.shape[:2])
        x = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None]
        batch.append(sam.model.preprocess(x))  # (1, 3, S, S) normalised, padded
    return batch, sizes


@torch.no_grad()
def sam_embeddings(sam: FrozenSam, images: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """RGB images → SAM embeddings (B, 256, 64, 64) f16 and each input's resized (h, w).

    `sam_inputs`' preprocessing; one encoder forward for the whole batch on CUDA, one per image
    on a CPU (the same bytes).
    """
    device = next(sam.model.parameters()).device
    batch, sizes = sam_inputs(sam, images)
    # On a CPU one image a forward: batching buys no throughput there and costs cache (vit_t at
    # 1024², 2 threads: 1.9 s an image alone, 2.7 in fours; the same bytes: bench/encode_batch.py).
    step = len(batch) if device.type == "cuda" else 1
    with autocast(device):
        feats = torch.cat(
            [
                sam.model.image_encoder(torch.cat(batch[i : i + step]))
                for i in range(0, len(batch), step)
            ]
        )  # (B, 256, 64, 64)
    return feats.float().cpu().numpy().astype(np.float16), sizes


def vv_blocks(clip: FrozenClip, cfg: EncoderConfig) -> int:
    """CLIP Surgery's v-v block count: configured, else half the ViT's blocks."""
    if cfg.clip_vv_blocks is not None:
        return cfg.clip_vv_blocks
    return max(1, len(clip.model.visual.transformer.resblocks) // 2)


@torch.no_grad()
def clip_dense(clip: FrozenClip, images: list[np.ndarray], cfg: EncoderConfig) -> np.ndarray:
    """RGB images → L2-normalised CLIP Surgery dense features (B, G, G, D) f16."""
    batch = torch.stack(
        [preprocess_image(im, cfg.clip_input_size, clip.mean, clip.std) for im in images]
    )  # (B, 3, S, S)
    with autocast(clip.device):
        feats = dense_features(clip, batch, vv_blocks(clip, cfg))  # (B, G, G, D)
    return feats.float().cpu().numpy().astype(np.float16)


def cached_predictor(
    predictor: SamPredictor, embedding: np.ndarray, original: tuple[int, int], resized: tuple
) -> SamPredictor:
    """Give `predictor` the state `set_image` would leave, from a cached (256, 64, 64) embedding.

    original: the image's (H, W); resized: SAM's input (h, w) before padding.
    """
    predictor.reset_image()
    # Copied as stored (f16: half the bytes to a GPU), widened on the device (exact).
    features = torch.as_tensor(np.asarray(embedding), device=predictor.device)
    predictor.features = features.float()[None]  # (1, 256, 64, 64)
    predictor.original_size = tuple(int(v) for v in original)
    predictor.input_size = tuple(int(v) for v in resized)
    predictor.is_image_set = True
    return predictor


def identity(cfg: EncoderConfig) -> dict[str, str]:
    """The weights ids `cfg` names ({"sam", "clip"?}), checking that each model has weights.

    Raises:
        ConfigError: a model with neither a checkpoint, a download source nor
            allow_random_weights, naming the flag.
    """
    sam_path = resolve_checkpoint(cfg.sam_checkpoint, "--sam-checkpoint / encode.sam_checkpoint")
    # With a model_cache, build_sam fetches SAM's official checkpoint (online only).
    if sam_path is None and not (cfg.allow_random_weights or cfg.model_cache):
        raise no_weights(f"SAM {cfg.sam_variant}", "--sam-checkpoint", "sam_checkpoint")
    official = sam_path is None and cfg.model_cache
    weights = {"sam": f"official:{cfg.sam_variant}" if official else weights_id(sam_path)}
    if cfg.clip:
        clip_path = resolve_checkpoint(cfg.clip_checkpoint, "--clip-checkpoint")
        if clip_path is None and not (cfg.allow_random_weights or cfg.clip_pretrained):
            raise no_weights(f"CLIP {cfg.clip_model}", "--clip-checkpoint", "clip_checkpoint")
        weights["clip"] = (
            weights_id(clip_path)
            if clip_path or not cfg.clip_pretrained
            else f"openclip:{cfg.clip_pretrained}"
        )
    return weights
