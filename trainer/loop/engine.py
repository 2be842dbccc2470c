"""One training epoch and one evaluation pass; every curriculum stage calls these two (DESIGN §6).

Batches come from `trainer.data.collate`: stages N × (B, G*G, C_n), words (B, T, C_t), text_pad
(B, T), sam_embedding (B, 256, 64, 64), size (B, 2) original (H, W), targets (B dicts). The model
returns pred_masks (B, K, 256, 256) low-res logits in SAM's padded frame; evaluation keeps the
most confident query's mask, upsamples it to the original (H, W) and thresholds at logit 0.

Metrics are DESIGN §7's (`pipeline.scoring.metrics`), per sample against a reference mask: the
ground truth where the dataset has it, else the referent pseudo-label (`reference_masks`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from rich.progress import TextColumn
from segment_anything import SamPredictor

from pipeline.core.progress import progress_bar
from pipeline.core.rle import decode_rle
from pipeline.labelling.prompting import prompt_mask
from pipeline.models.encoders import cached_predictor
from pipeline.models.frozen import FrozenSam
from pipeline.models.runtime import autocast
from pipeline.scoring.failures import breakdown, classify
from pipeline.scoring.metrics import intersection_union, summarize
from trainer.data.samples import Sample
from trainer.loop.distributed import gather_objects, mean_over_ranks
from trainer.loss.criterion import SetCriterion
from trainer.network.prompt_model import PointPromptModel
from trainer.network.soft_sam import input_size, upscale_masks

log = logging.getLogger(__name__)

Key = tuple[int, str]  # (store index, sample_id)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a collated batch's tensors (and its targets') to `device`."""
    out = dict(batch)
    out["stages"] = [_to(s, device) for s in batch["stages"]]
    for k in ("words", "text_pad", "sam_embedding", "sam_tokens", "relevance", "size"):
        if k in batch:
            out[k] = _to(batch[k], device)
    if "targets" in batch:
        out["targets"] = [{k: _to(v, device) for k, v in t.items()} for t in batch["targets"]]
    return out


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """On `device`; float16 host features (the loader's) become float32 there, after the copy."""
    x = x.to(device, non_blocking=True)
    return x.float() if x.dtype == torch.float16 else x


def needs_masks(criterion: SetCriterion) -> bool:
    """Whether the loss or the matching reads pred_masks (else SAM need not decode in training)."""
    m = criterion.matcher
    return "masks" in criterion.losses or bool(m.cost_mask_dice or m.cost_mask_bce)


def forward(
    model: PointPromptModel, batch: Mapping[str, Any], masks: bool = True
) -> dict[str, torch.Tensor]:
    """The model on one batch (see the module docstring for shapes).

    With `masks=False` only the point generator runs (no pred_masks): the frozen SAM decoder is
    most of a step's cost on CPU, and a points-and-score loss does not read its masks.
    """
    embedding, tokens = batch.get("sam_embedding"), batch.get("sam_tokens")
    args = (batch["stages"], batch["words"], batch["text_pad"], embedding, batch["size"], tokens)
    if not masks:
        return model.generator(*args, relevance=batch.get("relevance"))
    return model(*args, relevance=batch.get("relevance"))


def train_one_epoch(
    model: PointPromptModel,
    criterion: SetCriterion,
    loader: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = True,
    grad_clip: float = 0.0,
    progress: str | None = None,
) -> dict[str, float]:
    """One pass over `loader`; returns the mean of the weighted loss and of every loss term.

    Under data parallelism the means are over the global batches (averaged over the ranks).

    Args:
        scaler: a GradScaler for fp16 autocast (None for bf16 and CPU).
        amp: autocast on CUDA.
        grad_clip: max gradient norm of the trainable parameters (0 = off).
        progress: the description of a progress bar over the batches (running loss, ETA),
            shown on a terminal only; None for no bar (DDP ranks other than 0).
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    steps = 0
    decode = needs_masks(criterion)
    loss_column = TextColumn("loss {task.fields[loss]}")
    with progress_bar(
        loss_column, terminal_only=True, transient=True, show=progress is not None
    ) as bar:
        task = bar.add_task(progress or "train", total=_length(loader), loss="…")
        for raw in loader:
            batch = to_device(raw, device)
            with autocast(device, amp):
                outputs = forward(model, batch, decode)
            outputs = {k: v.float() for k, v in outputs.items()}  # the loss in float32
            terms = criterion(outputs, batch["targets"])
            loss = criterion.weighted(terms)
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(
                    f"loss is {float(loss.detach())}: lower optim.lr or set optim.grad_clip"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            steps += 1
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.update(task, advance=1, loss=f"{sums['loss'] / steps:.4g}")
    return mean_over_ranks({k: v / max(steps, 1) for k, v in sums.items()})


def _length(loader: Iterable[Any]) -> int | None:
    """Batches in `loader`, None where it has no length (the bar then counts without a total)."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


class Predicted(NamedTuple):
    """The model's answer for one sample: the most confident query's points and mask."""

    key: Key
    mask: np.ndarray  # (H, W) bool at the original size
    score: float  # the query's referent probability
    points: np.ndarray  # (M, 2) x / W, y / H of its points
    positive: np.ndarray  # (M,) bool, the points SAM reads as positive (logit > 0)


@torch.no_grad()
def predict_masks(
    model: PointPromptModel,
    loader: Iterable[Mapping[str, Any]],
    sam: FrozenSam,
    device: torch.device,
    amp: bool = True,
) -> Iterator[Predicted]:
    """The `Predicted` of every sample: the chosen query's points and mask at original size.

    The mask is the most confident query's (DESIGN §6), as `PointPromptModel.predict`, but SAM
    decodes only that query's points: each query is decoded independently, so the result is
    the same for K times less decoder work.
    """
    model.eval()
    generator = getattr(model.generator, "module", model.generator)  # DDP-wrapped or not
    rule = generator.decode_rule if generator.point_mode == "map" else None
    for raw in loader:
        batch = to_device(raw, device)
        if rule is not None:
            yield from decode_maps(model, batch, sam, rule, device, amp)
            continue
        with autocast(device, amp):
            out = forward(model, batch, masks=False)
            score, query = out["pred_scores"].sigmoid().max(dim=1)  # (B,), (B,)
            rows = torch.arange(len(query), device=query.device)
            points = out["pred_points"][rows, query][:, None]  # (B, 1, M, 2)
            logits = out["pred_point_logits"][rows, query][:, None]  # (B, 1, M)
            masks, _ = model.decoder(batch["sam_embedding"], points, logits, batch["size"])
        for b, key in enumerate(batch["key"]):
            h, w = (int(v) for v in batch["size"][b])
            full = upscale_masks(sam, masks[b].float(), (h, w))  # (1, H, W) logits
            yield Predicted(
                tuple(key),
                (full[0] > 0).cpu().numpy(),
                float(score[b]),
                points[b, 0].float().cpu().numpy(),
                (logits[b, 0] > 0).cpu().numpy(),
            )


@torch.no_grad()
def decode_maps(
    model: PointPromptModel,
    batch: Mapping[str, Any],
    sam: FrozenSam,
    rule: str,
    device: torch.device,
    amp: bool = True,
) -> Iterator[Predicted]:
    """point_mode "map": the most confident query's point map → SAM prompts by `rule` (the rule
    relevance maps take: box + spread positives + negatives in its empty parts) → its mask."""
    with autocast(device, amp):
        out = forward(model, batch, masks=False)
    score, query = out["pred_scores"].float().sigmoid().max(dim=1)  # (B,), (B,)
    rows = torch.arange(len(query), device=query.device)
    maps = out["pred_maps"][rows, query].float().sigmoid().cpu().numpy()  # (B, S, S)
    predictor = SamPredictor(sam.model)
    for b, key in enumerate(batch["key"]):
        h, w = (int(v) for v in batch["size"][b])
        embedding = batch["sam_embedding"][b].float().cpu().numpy()  # (256, 64, 64)
        cached_predictor(predictor, embedding, (h, w), input_size((h, w), sam.image_size))
        result = prompt_mask(rule, maps[b], predictor, (h, w))
        points = result.prompts.points / np.array([w, h], dtype=np.float32)  # (P, 2)
        yield Predicted(tuple(key), result.mask, float(score[b]), points, result.prompts.labels > 0)


def reference_masks(
    samples: Iterable[Sample], truths: Mapping[Key, Mapping[str, Any]] | None = None
) -> dict[Key, Any]:
    """The mask each sample is scored against: ground truth (a COCO RLE) where `truths` has one,
    else the referent pseudo-label (RLE counts str); samples with neither are absent."""
    out: dict[Key, Any] = {}
    for s in samples:
        if truths and s.key in truths:
            out[s.key] = truths[s.key]
        elif (ref := s.referent()) is not None:
            out[s.key] = (ref.mask_rle, s.height, s.width)
    return out


def _decode(ref: Any) -> np.ndarray:
    if isinstance(ref, tuple):
        return decode_rle(*ref)
    from pycocotools import mask as mask_utils

    rle = {"size": ref["size"], "counts": ref["counts"]}
    return mask_utils.decode(rle).astype(bool)


@torch.no_grad()
def evaluate(
    model: PointPromptModel,
    loader: Iterable[Mapping[str, Any]],
    sam: FrozenSam,
    references: Mapping[Key, Any],
    device: torch.device,
    amp: bool = True,
    objects: Mapping[Key, tuple[int, int, str, str]] | None = None,
) -> dict[str, Any]:
    """DESIGN §7 metrics of the model's masks against `references` (`reference_masks`).

    Samples without a reference are left out of n. Under DDP every rank scores its share of
    the loader and the counts are gathered (duplicates from sampler padding counted once).
    With `objects` (`pipeline.scoring.failures.object_truths`, the synthetic world) the metrics
    also hold "failures": the share of each failure class over the samples it covers.
    """
    counts: dict[Key, tuple[int, int]] = {}
    classes: dict[Key, str] = {}
    for p in predict_masks(model, loader, sam, device, amp):
        if p.key in references:
            counts[p.key] = intersection_union(p.mask, _decode(references[p.key]))
        if objects and p.key in objects:
            classes[p.key] = classify(p.mask, objects[p.key])
    counts = {k: v for part in gather_objects(counts) for k, v in part.items()}
    ordered = [counts[k] for k in sorted(counts)]
    metrics: dict[str, Any] = summarize([c[0] for c in ordered], [c[1] for c in ordered])
    if objects:
        classes = {k: v for part in gather_objects(classes) for k, v in part.items()}
        metrics["failures"] = breakdown(classes.values())
    return metrics
