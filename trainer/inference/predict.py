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
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import StoreError
from pipeline.models.encoders import frozen_pair
from pipeline.models.frozen import FrozenClip, FrozenSam
from pipeline.models.options import ModelOptions
from pipeline.store.reader import LabelStore
from trainer.config import TrainConfig, config_from_dict
from trainer.data.batches import Batches
from trainer.data.dataset import PromptDataset
from trainer.data.feature_cache import ClipCache, build_clip_cache
from trainer.data.loaders import make_loader
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.data.samples import SUBSETS, collect_samples
from trainer.loop.checkpoint import load_checkpoint
from trainer.loop.engine import Predicted, predict_masks
from trainer.network.prompt_model import PointPromptModel, build_model

log = logging.getLogger(__name__)


def load_for_inference(
    path: Path, options: ModelOptions | None = None, device: str | torch.device = "cpu"
) -> tuple[PointPromptModel, FrozenClip, FrozenSam, TrainConfig]:
    """(model in eval mode, clip, sam, config) of a training checkpoint.

    The frozen models are the ones the checkpoint names (`pipeline.models.encoders.frozen_pair`:
    weights files from `options`, identities checked against the checkpoint).

    Raises:
        ConfigError: weights other than the ones the checkpoint trained with.
    """
    device = torch.device(device)
    state = load_checkpoint(Path(path), map_location=device)
    cfg = config_from_dict(state["config"], f"{path} config")
    models = state["models"]
    clip, sam = frozen_pair(
        models["sam"]["variant"],
        models["sam"]["weights"],
        cfg.clip.model,
        options or ModelOptions(),
        device,
        clip_weights=models["clip"]["weights"],
    )
    model = build_model(cfg.model, clip, sam).to(device)
    model.generator.load_state_dict(state["model"])
    return model.eval(), clip, sam, cfg


def predict_store(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """sample_id → (H, W) bool predicted mask (`predict_store_points`' masks only)."""
    return {sid: p.mask for sid, p in predict_store_points(*args, **kwargs).items()}


@torch.no_grad()
def predict_store_points(
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
) -> dict[str, Predicted]:
    """sample_id → the model's points and mask (`Predicted`), for `store`'s samples.

    Args:
        data_root: the store's dataset root (images, for the one-time CLIP cache).
        cache_dir: where CLIP features are cached (reused when present).
        sample_ids: only these samples (default: all, or those of `splits`).
    """
    path = build_clip_cache(store, data_root, clip, cfg.cache_spec(), cache_dir)
    samples = collect_samples([store], SUBSETS, splits, require_targets=False)
    if sample_ids is not None:
        wanted = set(sample_ids)
        ids = samples.sample_id.to_pylist()
        samples = samples.take([i for i, sid in enumerate(ids) if sid in wanted])
        missing = wanted - set(samples.sample_id.to_pylist())
        if missing:
            raise StoreError(
                f"{store.root}: {len(missing)} unknown sample ids, e.g. {min(missing)}"
            )
    dataset = PromptDataset(samples, [ClipCache(path)], [SamEmbeddings(store, sam)], False)
    pin = torch.device(device).type == "cuda"
    loader = make_loader(dataset, Batches(len(samples), batch_size), 0, pin)
    return {p.key[1]: p for p in predict_masks(model, loader, sam, torch.device(device))}
