"""`ppt-labels eval` and `predict`: a trained checkpoint (or the untrained CLIP→SAM baseline) on
a dataset split, scored as DESIGN §7; and one image + sentence → mask.

Evaluation needs the split's SAM embeddings (and, for the baseline, CLIP relevance maps), so it
builds a label store for that split with the ordinary pipeline stages into `labels_dir` first;
a second evaluation of the same split reuses it (every stage is a no-op when up to date).
Ground truth is read from the dataset only here, after prediction.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import ConfigError
from pipeline.core.rle import decode_rle
from pipeline.models.clip_surgery import preprocess_image
from pipeline.models.encoders import sam_embeddings
from pipeline.models.options import ModelOptions
from pipeline.models.runtime import resolve_device
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.reader import LabelStore
from trainer.config import config_from_dict
from trainer.inference.baselines import score_masks
from trainer.inference.predict import load_for_inference, predict_store
from trainer.loop.checkpoint import load_checkpoint
from trainer.loop.engine import predict_masks
from trainer.network.clip_stages import image_stages, word_features
from trainer.network.layers import sam_stage_tokens

log = logging.getLogger(__name__)

STORE_STAGES = ("ingest", "phrases", "split", "encode")  # what a checkpoint needs
BASELINE_STAGES = (*STORE_STAGES, "attention", "masks")  # CLIP relevance → SAM
BASELINES = ("clip-sam",)


def split_params(params: dict[str, Any], split: str) -> dict[str, Any]:
    """`params` restricted to one split of the dataset (the ingest section's `splits`)."""
    out = copy.deepcopy(params)
    out.setdefault("ingest", {})
    out["ingest"] = {**(out["ingest"] or {}), "splits": [split]}
    return out


def build_split_store(
    dataset: str,
    split: str,
    data_root: Path,
    labels_dir: Path,
    params: dict[str, Any],
    models: ModelOptions,
    stages: tuple[str, ...] = STORE_STAGES,
) -> LabelStore:
    """Build (or bring up to date) the label store of one split; returns it."""
    build(
        dataset,
        Path(data_root),
        Path(labels_dir),
        split_params(params, split),
        InProcessExecutor(),
        stages=stages,
        models=models,
    )
    return LabelStore(labels_dir)


def eval_checkpoint(
    checkpoint: Path,
    dataset: str,
    split: str,
    data_root: Path,
    labels_dir: Path,
    params: dict[str, Any],
    options: ModelOptions | None = None,
) -> dict[str, float]:
    """DESIGN §7 metrics of a trained checkpoint's most confident masks on `dataset`/`split`.

    The split's store is encoded with the checkpoint's SAM variant (and `options`' weights); for
    a model that reads the expression's relevance map (`relevance_input`) its attention stage runs
    too, with `options.relevance` (required: the source the model was trained with).
    """
    options = options or ModelOptions()
    state = load_checkpoint(checkpoint)
    device = str(resolve_device(options.device))
    reads_relevance = bool(config_from_dict(state["config"]).model.relevance_input)
    if reads_relevance and not options.relevance:
        raise ConfigError(
            f"{checkpoint}: this model reads each expression's relevance map: pass --relevance, "
            "the source its training stores were built with (simulated in the synthetic world)"
        )
    # SAM embeddings (and, for a model that reads it, each expression's relevance): the CLIP
    # features come from the training cache, not the store.
    models = ModelOptions(
        sam=state["models"]["sam"]["variant"],
        sam_checkpoint=options.sam_checkpoint,
        relevance=options.relevance if reads_relevance else None,
        device=options.device,
        allow_random_weights=options.allow_random_weights,
    )
    stages = (*STORE_STAGES, "attention") if reads_relevance else STORE_STAGES
    store = build_split_store(dataset, split, data_root, labels_dir, params, models, stages)
    model, clip, sam, cfg = load_for_inference(checkpoint, options, device)
    predictions = predict_store(
        model, clip, sam, cfg, store, data_root, Path(labels_dir) / "feature_cache", device
    )
    return score_masks(predictions, store, data_root, dataset)


def eval_baseline(
    baseline: str,
    dataset: str,
    split: str,
    data_root: Path,
    labels_dir: Path,
    params: dict[str, Any],
    options: ModelOptions | None = None,
) -> dict[str, float]:
    """The untrained CLIP→SAM baseline (the paper's ablation row 1) on `dataset`/`split`.

    The relevance of the whole sentence (as the paper's CLIP + SAM reads it: `--relevance`, clip
    by default; `simulated` in the synthetic world) prompts SAM with the params' masks.rule (our
    best, box_points, by default: a baseline, not a straw man); no point generator, no training.
    """
    if baseline not in BASELINES:
        raise ConfigError(f"--baseline {baseline!r}: choose one of {', '.join(BASELINES)}")
    params = copy.deepcopy(params)
    params["phrases"] = {**(params.get("phrases") or {}), "whole_expression": True}
    options = options or ModelOptions()
    options = dataclasses.replace(options, relevance=options.relevance or "clip")
    store = build_split_store(
        dataset, split, data_root, labels_dir, params, options, BASELINE_STAGES
    )
    sizes = {s["sample_id"]: (s["height"], s["width"]) for s in store.samples().to_pylist()}
    predictions: dict[str, np.ndarray] = {}
    for cand in store.candidates().to_pylist():
        sid = cand["sample_id"]
        if sid in predictions or cand["cand_idx"] != 0:
            continue
        h, w = sizes[sid]
        rle = cand.get("mask_rle")
        predictions[sid] = decode_rle(rle, h, w) if rle else np.zeros((h, w), dtype=bool)
    for sid, (h, w) in sizes.items():  # a sample whose candidate got no mask is a miss
        predictions.setdefault(sid, np.zeros((h, w), dtype=bool))
    return score_masks(predictions, store, data_root, dataset)


@torch.no_grad()
def predict_image(
    checkpoint: Path,
    image: np.ndarray,
    text: str,
    options: ModelOptions | None = None,
) -> tuple[np.ndarray, float]:
    """(H, W) bool mask of the most confident query, and its confidence, for one RGB image.

    The frozen encoders run here once (there is no cache for a single image); their outputs are
    rounded to float16 as the training cache stores them, so a stored sample predicts the same.
    """
    options = options or ModelOptions()
    device = str(resolve_device(options.device))
    model, clip, sam, cfg = load_for_inference(checkpoint, options, device)
    if cfg.model.relevance_input:
        raise ConfigError(
            f"{checkpoint}: this model reads each expression's relevance map from a label store "
            "(model.relevance_input), which a lone image has none of: predict on a built store "
            "(--labels), whose attention stage made them"
        )
    pixels = preprocess_image(image, cfg.clip.input_size, clip.mean, clip.std)[None]
    stages = image_stages(clip.model.visual, pixels.to(clip.device), cfg.model.stage_indices)
    tokens = clip.tokenizer([text]).to(clip.device)
    words, pad = word_features(clip.model, tokens, cfg.clip.text_layers)
    embedding, _ = sam_embeddings(sam, [image])  # (1, 256, 64, 64) f16
    size = torch.tensor([image.shape[:2]])  # (1, 2)
    batch = {
        "stages": [s.half().float().cpu() for s in stages],  # N × (1, G*G, C)
        "words": words.half().float().cpu(),  # (1, T, C_t)
        "text_pad": pad.cpu(),  # (1, T)
        "sam_embedding": torch.from_numpy(embedding).float(),
        "size": size,
        "key": [(0, "image")],
    }
    if cfg.model.sam_stage:  # as the feature cache pools and rounds it
        tokens = sam_stage_tokens(batch["sam_embedding"], size, cfg.model.sam_stage)
        batch["sam_tokens"] = tokens.half().float()  # (1, S*S, 256)
    predicted = next(iter(predict_masks(model, [batch], sam, torch.device(device))))
    return predicted.mask, predicted.score
