"""Inference from a training checkpoint: rebuild the model, predict masks for a label store.

`load_for_inference` rebuilds the frozen CLIP and SAM the checkpoint was trained with (their
weights files come from the caller; their identities are checked against the checkpoint) and
the point generator with the trained weights. `predict_store` returns, for the samples of a label
store, the mask of the most confident query at the image's original size, reading cached
features (CLIP cached on first use, SAM from the store's encode arrays).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ConfigError, StoreError
from pipeline.models import RANDOM_INIT, FrozenClip, FrozenSam
from pipeline.stages.encode import DEFAULT_SAM_CHECKPOINT, load_clip, load_sam, resolve_checkpoint
from pipeline.store import LabelStore
from trainer.checkpoint import load_checkpoint
from trainer.config import TrainConfig, config_from_dict
from trainer.data import SUBSETS, PromptDataset, collate, collect_samples
from trainer.engine import predict_masks
from trainer.features import ClipCache, SamEmbeddings, build_clip_cache
from trainer.model import PointPromptModel, build_model

log = logging.getLogger(__name__)


def load_for_inference(
    path: Path,
    device: str | torch.device = "cpu",
    sam_checkpoint: Path | None = None,
    clip_checkpoint: Path | None = None,
    allow_random_weights: bool = False,
) -> tuple[PointPromptModel, FrozenClip, FrozenSam, TrainConfig]:
    """(model in eval mode, clip, sam, config) of a training checkpoint.

    Raises:
        ConfigError: weights other than the ones the checkpoint trained with.
    """
    device = torch.device(device)
    state = load_checkpoint(Path(path), map_location=device)
    cfg = config_from_dict(state["config"], f"{path} config")
    models = state["models"]
    if sam_checkpoint is None and models["sam"]["weights"] != RANDOM_INIT:
        sam_checkpoint = Path(DEFAULT_SAM_CHECKPOINT)  # as training's default (encode stage's)
    sam_path = resolve_checkpoint(
        str(sam_checkpoint) if sam_checkpoint else None, "--sam-checkpoint"
    )
    clip_path = resolve_checkpoint(
        str(clip_checkpoint) if clip_checkpoint else None, "--clip-checkpoint"
    )
    sam = load_sam(
        models["sam"]["variant"], sam_path and str(sam_path), allow_random_weights, str(device)
    )
    clip = load_clip(
        cfg.clip.model, clip_path and str(clip_path), allow_random_weights, str(device)
    )
    for what, model, flag in (
        ("sam", sam, "--sam-checkpoint"),
        ("clip", clip, "--clip-checkpoint"),
    ):
        if model.weights_id != models[what]["weights"]:
            raise ConfigError(
                f"{path} was trained with {what} weights {models[what]['weights'][:12]}, got "
                f"{model.weights_id[:12]}: pass the same {flag}"
            )
    model = build_model(cfg.model, clip, sam).to(device)
    model.generator.load_state_dict(state["model"])
    return model.eval(), clip, sam, cfg


@torch.no_grad()
def predict_store(
    model: PointPromptModel,
    clip: FrozenClip,
    sam: FrozenSam,
    cfg: TrainConfig,
    store: LabelStore,
    data_root: Path,
    cache_dir: Path,
    device: str | torch.device = "cpu",
    sample_ids: Collection[str] | None = None,
    splits: Collection[str] | None = None,
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """sample_id → (H, W) bool predicted mask at the original size, for `store`'s samples.

    Args:
        data_root: the store's dataset root (images, for the one-time CLIP cache).
        cache_dir: where CLIP features are cached (reused when present).
        sample_ids: only these samples (default: all, or those of `splits`).
    """
    path = build_clip_cache(
        store,
        data_root,
        clip,
        cfg.model.stage_indices,
        cfg.clip.input_size,
        cache_dir,
        cfg.clip.batch_size,
    )
    samples = collect_samples([store], SUBSETS, splits, require_targets=False)
    if sample_ids is not None:
        wanted = set(sample_ids)
        samples = [s for s in samples if s.sample_id in wanted]
        missing = wanted - {s.sample_id for s in samples}
        if missing:
            raise StoreError(
                f"{store.root}: {len(missing)} unknown sample ids, e.g. {min(missing)}"
            )
    dataset = PromptDataset(samples, [ClipCache(path)], [SamEmbeddings(store, sam)], False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    return {
        key[1]: mask for key, mask, _ in predict_masks(model, loader, sam, torch.device(device))
    }
