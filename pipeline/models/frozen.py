"""The frozen foundation models: CLIP (open_clip) and SAM (segment_anything / MobileSAM).

One module builds them for the pipeline and the trainer (DESIGN §3); `pipeline.models.encoders`
builds them from a config and caches them per process. Weights come from a local
checkpoint or, where online, open_clip's pretrained tags and SAM's official checkpoints; random
initialisation exists only behind `allow_random` and is stamped `"random-init"` so labels made with
it can never pass for real ones. Built models are frozen here: eval(), requires_grad off.

Importing this module registers the JSON architectures in `pipeline/model_configs/` with open_clip
(e.g. "ppt-tiny-vit", a small ViT for fast tests).
"""

from __future__ import annotations

import logging
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from segment_anything import sam_model_registry as _sa_registry
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.hashing import sha256_file
from pipeline.models.runtime import keep_freed_memory
from pipeline.models.weights import RANDOM_INIT, load_error, load_tensors

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_INIT_SEED = 0  # random-init models are reproducible and leave the caller's RNG untouched

if not set(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
    open_clip.add_model_config(MODEL_CONFIG_DIR)


def _short(exc: BaseException, limit: int = 300) -> str:
    # load_state_dict errors list every key; the first few say enough
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " …"


def _freeze(model: nn.Module) -> nn.Module:
    keep_freed_memory()  # the frozen models' CPU work, and the trainer's after it
    model.eval()
    model.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------- CLIP


@dataclass(frozen=True, eq=False)
class FrozenClip:
    """A frozen open_clip model with what is needed to feed it."""

    model: nn.Module  # open_clip CLIP, eval(), requires_grad off
    tokenizer: Callable[..., torch.Tensor]  # list[str] -> (n, context_length) token ids
    name: str  # open_clip architecture name, e.g. "ViT-B-16"
    weights_id: str  # "random-init" | sha256 of the checkpoint file | "openclip:<tag>"
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]
    image_size: int  # native (pretraining) input side in pixels

    @property
    def real_weights(self) -> bool:
        """False for random initialisation: labels from it are demos, not pseudo-labels."""
        return self.weights_id != RANDOM_INIT

    @property
    def device(self) -> torch.device:
        """Device the model's parameters live on."""
        return next(self.model.parameters()).device


def build_clip(
    name: str = "ViT-B-16",
    checkpoint: Path | None = None,
    pretrained: str | None = None,
    allow_random: bool = False,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> FrozenClip:
    """Build a frozen open_clip model.

    Weights, in order of precedence: `checkpoint` (a local state dict in open_clip's layout or any
    layout open_clip converts; OpenAI weights need the "-quickgelu" architecture name), then
    `pretrained` (an open_clip tag such as "openai" or "laion2b_s34b_b88k", downloaded into
    `cache_dir`, online only), then random initialisation if `allow_random`.

    Raises:
        ConfigError: unknown architecture, unreadable checkpoint, failed download, or no weights.
    """
    if name not in open_clip.list_models():
        known = ", ".join(open_clip.list_models()[:12])
        raise ConfigError(f"--clip-model {name!r}: not an open_clip architecture (e.g. {known}, …)")
    kwargs: dict[str, Any] = {"device": device, "pretrained_text": False, "weights_only": True}
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise ConfigError(f"--clip-checkpoint {checkpoint}: no such file")
        weights_id = sha256_file(checkpoint)
        source = str(checkpoint)
    elif pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ConfigError(
                f"--clip-pretrained {pretrained!r}: not a tag of {name} (known: {', '.join(tags)})"
            )
        weights_id, source = f"openclip:{pretrained}", pretrained
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
    elif allow_random:
        weights_id, source = RANDOM_INIT, None
        log.warning("CLIP %s is randomly initialised: its relevance maps are meaningless", name)
    else:
        raise ConfigError(
            f"no weights for CLIP {name}: pass --clip-checkpoint PATH (an open_clip state dict), "
            "or --allow-random-weights for tests and demos"
        )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_INIT_SEED)
            model = open_clip.create_model(name, pretrained=source, **kwargs)
    except Exception as exc:
        if checkpoint is not None:
            if load_error(exc) is None:  # a damaged file, or a sound one of other weights?
                load_tensors(checkpoint, "--clip-checkpoint")  # raises the damaged file's line
            reason = load_error(exc) or f"cannot load into {name} ({_short(exc)})"
            raise ConfigError(f"--clip-checkpoint {checkpoint}: {reason}") from exc
        raise ConfigError(
            f"CLIP {name} weights {pretrained!r} could not be downloaded ({exc}); offline, pass "
            "--clip-checkpoint PATH, or --allow-random-weights for tests and demos"
        ) from exc
    _freeze(model)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, tuple | list) else size
    log.info("built CLIP %s (weights %s)", name, weights_id)
    return FrozenClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        name=name,
        weights_id=weights_id,
        mean=tuple(float(m) for m in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(s) for s in cfg["std"]),  # type: ignore[arg-type]
        image_size=int(size),
    )


# ---------------------------------------------------------------------------------------- SAM


def _mobile_sam_vit_t(checkpoint: str | None = None) -> nn.Module:
    # Imported here: mobile_sam re-registers timm's tiny_vit models noisily on import.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import sam_model_registry as ms_registry
    return ms_registry["vit_t"](checkpoint=checkpoint)


# variant -> builder(checkpoint=None) returning an un-initialised-from-file Sam
SAM_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "vit_b": _sa_registry["vit_b"],
    "vit_l": _sa_registry["vit_l"],
    "vit_h": _sa_registry["vit_h"],
    "vit_t": _mobile_sam_vit_t,  # MobileSAM TinyViT encoder, SAM's prompt encoder + mask decoder
}

# official checkpoints, fetched into --cache-dir only when online
SAM_CHECKPOINT_URLS: dict[str, str] = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_t": "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
}


@dataclass(frozen=True, eq=False)
class FrozenSam:
    """A frozen SAM-family model; it drives segment_anything.SamPredictor unchanged."""

    model: nn.Module  # Sam (image_encoder, prompt_encoder, mask_decoder), eval(), no grad
    variant: str  # key of SAM_REGISTRY
    weights_id: str  # sha256 of the checkpoint file | "random-init"
    real_weights: bool  # False only for random initialisation
    image_size: int  # encoder input side (1024 for every variant)


def _download(url: str, cache_dir: Path) -> Path:
    target = cache_dir / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    log.info("downloading %s into %s", url, cache_dir)
    try:
        with urllib.request.urlopen(url, timeout=60) as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(target)
    return target


def build_sam(
    variant: str = "vit_b",
    checkpoint: Path | None = None,
    allow_random: bool = False,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> FrozenSam:
    """Build a frozen SAM of `variant` (vit_b, vit_l, vit_h, or vit_t = MobileSAM).

    Weights: `checkpoint` (a state dict in the variant's key layout), else the official checkpoint
    in `cache_dir` (downloaded there first if absent; online only), else, with neither given,
    random initialisation if `allow_random`. A weight source that fails is an error, never a
    silent fall-back to random weights.

    Raises:
        ConfigError: unknown variant, unreadable or mismatched checkpoint, or no weights.
    """
    if variant not in SAM_REGISTRY:
        raise ConfigError(f"--sam {variant!r}: choose one of {', '.join(SAM_REGISTRY)}")
    if checkpoint is None and cache_dir is not None:
        try:
            checkpoint = _download(SAM_CHECKPOINT_URLS[variant], Path(cache_dir))
        except Exception as exc:  # best effort: any network or HTTP failure
            raise ConfigError(
                f"SAM {variant} checkpoint could not be downloaded into {cache_dir} ({exc}); "
                "offline, pass --sam-checkpoint PATH"
            ) from exc
    if checkpoint is None and not allow_random:
        raise ConfigError(
            f"no weights for SAM {variant}: pass --sam-checkpoint PATH "
            "(or --allow-random-weights for tests and demos)"
        )
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f"--sam-checkpoint {checkpoint}: no such file")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        model = SAM_REGISTRY[variant]()
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        state = load_tensors(checkpoint, "--sam-checkpoint")
        try:
            model.load_state_dict(state)
        except Exception as exc:
            raise ConfigError(
                f"--sam-checkpoint {checkpoint}: not a SAM {variant} state dict ({_short(exc)})"
            ) from exc
        weights_id = sha256_file(checkpoint)
    else:
        weights_id = RANDOM_INIT
        log.warning("SAM %s is randomly initialised: its masks are meaningless", variant)
    # Order matters: TinyViT caches attention biases as plain attributes when switched to eval,
    # so weights must be loaded and the model moved before eval().
    model.to(device)
    _freeze(model)
    log.info("built SAM %s (weights %s)", variant, weights_id)
    return FrozenSam(
        model=model,
        variant=variant,
        weights_id=weights_id,
        real_weights=weights_id != RANDOM_INIT,
        image_size=int(model.image_encoder.img_size),
    )
