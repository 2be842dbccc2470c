"""Prediction on images that are in no label store: `predict --image` and `predict --texts`.

There is no feature cache for such images, so the frozen encoders run here: each distinct image
of a batch through CLIP's image tower and SAM's image encoder once (rows that share an image
share its features), every text of the batch through CLIP's text side at once. Features are
rounded to float16 as the training cache stores them, so a stored sample predicts the same.

`predict_queries` runs a CSV's rows (`pipeline.data.queries`) in batches, rows sorted by image
so that rows of one image meet in one batch, and writes a mask PNG per row and one COCO JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.core.progress import progress_bar
from pipeline.data.queries import Query
from pipeline.export.coco_predictions import predictions_document, row_prediction
from pipeline.models.clip_surgery import preprocess_image
from pipeline.models.encoders import sam_embeddings
from pipeline.models.frozen import FrozenClip, FrozenSam
from pipeline.store.shards import write_json
from trainer.config import TrainConfig
from trainer.loop.engine import Predicted, predict_masks
from trainer.network.clip_stages import image_stages, word_features
from trainer.network.layers import sam_stage_tokens
from trainer.network.prompt_model import PointPromptModel

log = logging.getLogger(__name__)

MASKS_DIR = "masks"
PREDICTIONS_FILE = "predictions.json"


def check_image_input(cfg: TrainConfig, checkpoint: Path) -> None:
    """Refuse a model that reads a store's relevance maps: a lone image has none."""
    if cfg.model.relevance_input:
        raise ConfigError(
            f"{checkpoint}: this model reads each expression's relevance map from a label store "
            "(model.relevance_input), which a lone image has none of: predict on a built store "
            "(--labels), whose attention stage made them"
        )


@torch.no_grad()
def predict_images(
    model: PointPromptModel,
    clip: FrozenClip,
    sam: FrozenSam,
    cfg: TrainConfig,
    images: Sequence[np.ndarray],
    rows: Sequence[tuple[int, str]],
    device: torch.device,
) -> list[Predicted]:
    """The model's answer for each (image index, text) of `rows`, one batch through the model.

    Args:
        images: distinct RGB images (H, W, 3) uint8; each goes through the encoders once.
        rows: (index into `images`, referring expression) per prediction, in output order.
    """
    pixels = torch.stack(
        [preprocess_image(im, cfg.clip.input_size, clip.mean, clip.std) for im in images]
    )  # (I, 3, S, S)
    stages = image_stages(clip.model.visual, pixels.to(clip.device), cfg.model.stage_indices)
    embedding, _ = sam_embeddings(sam, list(images))  # (I, 256, 64, 64) f16
    tokens = clip.tokenizer([text for _, text in rows]).to(clip.device)
    words, pad = word_features(clip.model, tokens, cfg.clip.text_layers)  # (B, T, C_t), (B, T)
    index = torch.tensor([i for i, _ in rows])  # (B,) row → its image
    size = torch.tensor([images[i].shape[:2] for i, _ in rows])  # (B, 2) original (H, W)
    batch = {
        "stages": [s.half().float().cpu()[index] for s in stages],  # N × (B, G*G, C)
        "words": words.half().float().cpu(),
        "text_pad": pad.cpu(),
        "sam_embedding": torch.from_numpy(embedding).float()[index],  # (B, 256, 64, 64)
        "size": size,
        "key": [(0, str(n)) for n in range(len(rows))],
    }
    if cfg.model.sam_stage:  # as the feature cache pools and rounds it
        pooled = sam_stage_tokens(batch["sam_embedding"], size, cfg.model.sam_stage)
        batch["sam_tokens"] = pooled.half().float()  # (B, S*S, 256)
    return list(predict_masks(model, [batch], sam, device))


def read_rgb(path: Path, what: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8; `what` names it in the error (flag or CSV line)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{what}: cannot read {path} as an image ({exc})") from None


def predict_queries(
    model: PointPromptModel,
    clip: FrozenClip,
    sam: FrozenSam,
    cfg: TrainConfig,
    queries: Sequence[Query],
    images_dir: Path,
    out_dir: Path,
    device: torch.device,
    batch_size: int = 8,
    description: str = "",
) -> dict:
    """Predict every query in batches of `batch_size`; writes OUT/masks/<row>.png (0 / 255) and
    OUT/predictions.json (`pipeline.export.coco_predictions`). Returns the COCO document."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give at least 1")
    out_dir = Path(out_dir)
    (out_dir / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    ordered = sorted(queries, key=lambda q: (q.image, q.row))
    width = max(5, len(str(len(queries))))
    results = []
    with progress_bar() as bar:
        task = bar.add_task("predict", total=len(ordered))
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start : start + batch_size]
            first = {q.image: q for q in reversed(chunk)}  # image → its first row in the chunk
            names = list(dict.fromkeys(q.image for q in chunk))
            images = [read_rgb(images_dir / n, f"--texts line {first[n].line}") for n in names]
            rows = [(names.index(q.image), q.text) for q in chunk]
            for q, p in zip(chunk, predict_images(model, clip, sam, cfg, images, rows, device),
                            strict=True):  # fmt: skip
                mask_file = f"{MASKS_DIR}/{q.row:0{width}d}.png"
                Image.fromarray(p.mask.astype(np.uint8) * 255).save(out_dir / mask_file)
                results.append(row_prediction(q.row, q.image, q.text, p.mask, p.score, mask_file))
            bar.advance(task, len(chunk))
    document = predictions_document(results, description)
    write_json(document, out_dir / PREDICTIONS_FILE)
    return document
