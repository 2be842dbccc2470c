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

from pipeline.core.errors import ConfigError
from pipeline.core.rle import decode_rle
from pipeline.models.options import ModelOptions
from pipeline.models.runtime import resolve_device
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.reader import LabelStore
from trainer.config import config_from_dict
from trainer.inference.baselines import score_masks
from trainer.inference.predict import load_for_inference, predict_store
from trainer.inference.predict_images import check_image_input, predict_images
from trainer.loop.checkpoint import load_checkpoint

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
    return score_masks(baseline_predictions(store), store, data_root, dataset)


def baseline_predictions(store: LabelStore) -> dict[str, np.ndarray]:
    """sample_id → the baseline's mask in a store built by `eval_baseline` (its one candidate,
    the whole sentence, prompted into SAM); a sample whose candidate got no mask predicts none."""
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
    return predictions


def predict_image(
    checkpoint: Path,
    image: np.ndarray,
    text: str,
    options: ModelOptions | None = None,
) -> tuple[np.ndarray, float]:
    """(H, W) bool mask of the most confident query, and its confidence, for one RGB image
    (`trainer.inference.predict_images`: the frozen encoders run on it here)."""
    options = options or ModelOptions()
    device = resolve_device(options.device)
    model, clip, sam, cfg = load_for_inference(checkpoint, options, device)
    check_image_input(cfg, checkpoint)
    predicted = predict_images(model, clip, sam, cfg, [image], [(0, text)], device)[0]
    return predicted.mask, predicted.score
