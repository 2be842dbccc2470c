"""SAM's mask decoder on a cached image, batched over all the prompts of that image.

The image is a `SamPredictor` whose state `pipeline.models.encoders.cached_predictor` (or
`set_image`) set: its embedding, original and input sizes, coordinate transform and model, on the
model's device. `decode` runs exactly what `SamPredictor.predict` runs (prompt encoder, mask
decoder), for many prompts at once, and returns SAM's low-res logits (256² over the padded input)
without upsampling them; `frame_masks` samples them on a coarse `Frame` (to compare masks with maps
there) and `full_masks` upsamples the few chosen ones to the original size exactly as
`SamPredictor.predict` does (`Sam.postprocess_masks`, then SAM's threshold).

Prompts with different numbers of points go to separate decoder calls: SAM has no way to pad a
prompt (a padding token is one more token the decoder attends to, so it changes the masks), so
one call per prompt shape is what keeps every mask SAM's own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor

from pipeline.labelling.grid import Frame

LOW_RES = 256  # side of SAM's mask logits, over the padded square input


@dataclass(frozen=True, eq=False)
class Prompts:
    """SAM prompts in the original image's pixel coordinates."""

    points: np.ndarray  # (P, 2) float32 (x, y); P may be 0
    labels: np.ndarray  # (P,) int64: 1 positive, 0 negative
    box: np.ndarray | None = None  # (4,) float32 (x0, y0, x1, y1), or no box


@torch.no_grad()
def decode(
    predictor: SamPredictor, prompts: Sequence[Prompts], multimask: bool, chunk: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's outputs for every prompt of the image `predictor` holds.

    Returns low-res logits (N, C, 256, 256) and predicted IoUs (N, C) on the model's device,
    C = 3 with `multimask`, else 1; one decoder call per distinct (points, box) shape and per
    `chunk` prompts of it (the decoder holds ~10 copies of the 64² embedding per prompt: ~40 MB
    in float32, so a Mosaic image's hundred maps would otherwise take 4 GB at once).
    """
    model, device = predictor.model, predictor.device
    shapes: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        shapes[(len(p.labels), p.box is not None)].append(i)
    n, c = len(prompts), 3 if multimask else 1
    logits = torch.empty((n, c, LOW_RES, LOW_RES), device=device)
    scores = torch.empty((n, c), device=device)
    size = predictor.original_size
    batches = [
        (shape, rows[start : start + chunk])
        for shape, rows in shapes.items()
        for start in range(0, len(rows), chunk)
    ]
    for (n_points, has_box), rows in batches:
        points = boxes = None
        if n_points:
            coords = np.stack([prompts[i].points for i in rows])  # (B, P, 2)
            labels = np.stack([prompts[i].labels for i in rows])  # (B, P)
            points = (
                torch.as_tensor(
                    predictor.transform.apply_coords(coords, size), dtype=torch.float, device=device
                ),
                torch.as_tensor(labels, dtype=torch.int, device=device),
            )
        if has_box:
            box = np.stack([prompts[i].box for i in rows])  # (B, 4)
            boxes = torch.as_tensor(
                predictor.transform.apply_boxes(box, size), dtype=torch.float, device=device
            )
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
        low, iou = model.mask_decoder(
            image_embeddings=predictor.features,  # (1, 256, 64, 64): shared by the batch
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )  # (B, C, 256, 256), (B, C)
        index = torch.as_tensor(rows, device=device)
        logits[index], scores[index] = low.float(), iou.float()
    return logits, scores


@torch.no_grad()
def frame_masks(predictor: SamPredictor, logits: torch.Tensor, frame: Frame) -> torch.Tensor:
    """Low-res logits (..., 256, 256) → masks (..., h, w) bool at the frame's pixel centres.

    An image point (x, y) is at (x·w'/W, y·h'/H) / 4 in the low-res logits (w', h': SAM's input
    size before padding), where the logits are interpolated bilinearly, as SAM's upsampling does.
    """
    lead = logits.shape[:-2]
    (fh, fw), (sy, sx) = frame.shape, frame.scale
    (h, w), (ih, iw) = predictor.original_size, predictor.input_size
    device = logits.device
    # Normalised grid_sample coordinates (align_corners=False: -1 and 1 are the outer edges).
    ys = ((torch.arange(fh, device=device) + 0.5) * sy * ih / h) / (LOW_RES * 4 / 2) - 1  # (fh,)
    xs = ((torch.arange(fw, device=device) + 0.5) * sx * iw / w) / (LOW_RES * 4 / 2) - 1  # (fw,)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (fh, fw, 2) x, y
    flat = logits.reshape(-1, 1, LOW_RES, LOW_RES)  # (M, 1, 256, 256)
    grid = grid[None].expand(flat.shape[0], -1, -1, -1)  # (M, fh, fw, 2)
    sampled = F.grid_sample(flat, grid, mode="bilinear", align_corners=False)  # (M, 1, fh, fw)
    return (sampled > predictor.model.mask_threshold).reshape(*lead, fh, fw)


@torch.no_grad()
def full_masks(predictor: SamPredictor, logits: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Low-res logits (N, 256, 256) → (N, H, W) bool masks at the original size, on the host.

    `Sam.postprocess_masks` and SAM's threshold, as `SamPredictor.predict` applies them (each
    output pixel depends only on its own mask's logits, so batching changes no pixel), on the
    model's device, `chunk` masks at a time (one 1024² float map each on the way).
    """
    model = predictor.model
    out = np.empty((len(logits), *predictor.original_size), dtype=bool)
    for start in range(0, len(logits), chunk):
        low = logits[start : start + chunk, None]  # (B, 1, 256, 256)
        up = model.postprocess_masks(low, predictor.input_size, predictor.original_size)
        out[start : start + chunk] = (up[:, 0] > model.mask_threshold).cpu().numpy()
    return out
