"""Frozen SAM as a differentiable decoder of soft point prompts (DESIGN §6).

SAM's prompt encoder embeds a point as PE(x, y) + E[label], E[1] positive, E[0] negative, and
with no box appends one padding point (PE zeroed, + not_a_point). Here the label is soft: with
p = sigmoid(logit),

    embed(x, y, p) = PE(x, y) + p · E[1] + (1 - p) · E[0]

PE (random Fourier features) is differentiable in (x, y), so mask losses reach both the point
coordinates and the logits through the frozen prompt encoder and mask decoder; with p ∈ {0, 1} it
is exactly SAM's `_embed_points`. Points arrive as (x, y) ∈ [0, 1] of the original image (W, H);
SAM's input frame is the image resized to long side 1024 (ResizeLongestSide) and padded, so a
point sits at (x · W', y · H') there, (H', W') the resized size, before SAM's own +0.5 shift.

Masks come out as SAM's low-resolution logits (256 × 256 for the padded 1024 × 1024 input): a
target mask must be put in the same frame (`lowres_targets`); the padding stays background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from pipeline.models.frozen import FrozenSam


def input_size(original: tuple[int, int], long_side: int = 1024) -> tuple[int, int]:
    """(H, W) of the original image → (H', W') after ResizeLongestSide, before padding."""
    return ResizeLongestSide.get_preprocess_shape(int(original[0]), int(original[1]), long_side)


class SoftPromptSam(nn.Module):
    """Frozen SAM prompt encoder + mask decoder on cached image embeddings and soft points.

    The SAM modules stay frozen (requires_grad off, eval mode even under `.train()`); gradients
    flow through them to the prompts only.
    """

    def __init__(self, sam: FrozenSam) -> None:
        super().__init__()
        self.prompt_encoder = sam.model.prompt_encoder
        self.mask_decoder = sam.model.mask_decoder
        self.long_side = sam.image_size
        for module in (self.prompt_encoder, self.mask_decoder):
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> SoftPromptSam:
        """Frozen parts never leave eval mode."""
        super().train(mode)
        self.prompt_encoder.eval()
        self.mask_decoder.eval()
        return self

    def embed_points(
        self, points: torch.Tensor, logits: torch.Tensor, original_sizes: torch.Tensor
    ) -> torch.Tensor:
        """Sparse prompt embeddings of soft points, one padding point appended.

        Args:
            points: (B, K, M, 2) (x, y) in [0, 1] of the original image.
            logits: (B, K, M) positive-label logits (±inf gives SAM's hard labels).
            original_sizes: (B, 2) original (H, W) of each image.

        Returns:
            (B*K, M + 1, C) sparse embeddings, row b*K + k for query k of image b.
        """
        b, k, m, _ = points.shape
        resized = [input_size((int(h), int(w)), self.long_side) for h, w in original_sizes.tolist()]
        scale = torch.tensor(resized, dtype=points.dtype, device=points.device).flip(-1)  # (B, 2)
        coords = points * scale[:, None, None, :] + 0.5  # (B, K, M, 2) SAM pixels, centre shift
        coords = coords.reshape(b * k, m, 2)  # (B*K, M, 2)
        frame = self.prompt_encoder.input_image_size
        pe = self.prompt_encoder.pe_layer.forward_with_coords(coords, frame)  # (B*K, M, C)
        p = logits.sigmoid().reshape(b * k, m, 1)  # (B*K, M, 1)
        neg, pos = (e.weight for e in self.prompt_encoder.point_embeddings[:2])  # (1, C) each
        point_embed = pe + p * pos + (1 - p) * neg  # (B*K, M, C)
        pad = self.prompt_encoder.not_a_point_embed.weight.expand(b * k, 1, -1)  # (B*K, 1, C)
        return torch.cat([point_embed, pad.to(point_embed.dtype)], dim=1)  # (B*K, M + 1, C)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        points: torch.Tensor,
        logits: torch.Tensor,
        original_sizes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one single-output mask per query.

        Args:
            image_embeddings: (B, 256, 64, 64) cached SAM image embeddings.
            points: (B, K, M, 2) (x, y) in [0, 1] of the original image.
            logits: (B, K, M) positive-label logits.
            original_sizes: (B, 2) original (H, W).

        Returns:
            low-resolution mask logits (B, K, 256, 256) in SAM's padded input frame, and SAM's
            predicted IoU (B, K).
        """
        b, k = points.shape[:2]
        sparse = self.embed_points(points, logits, original_sizes)  # (B*K, M + 1, C)
        sparse = sparse.reshape(b, k, *sparse.shape[1:])  # (B, K, M + 1, C)
        dense_pe = self.prompt_encoder.get_dense_pe()  # (1, C, 64, 64)
        h, w = self.prompt_encoder.image_embedding_size
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(k, -1, h, w)
        masks, ious = [], []
        for i in range(b):  # the decoder repeats one image over its prompts, as Sam.forward
            mask, iou = self.mask_decoder(
                image_embeddings=image_embeddings[i : i + 1],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse[i],
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )  # (K, 1, 256, 256), (K, 1)
            masks.append(mask[:, 0])
            ious.append(iou[:, 0])
        return torch.stack(masks), torch.stack(ious)  # (B, K, 256, 256), (B, K)


def lowres_targets(masks: torch.Tensor, long_side: int = 1024, lowres: int = 256) -> torch.Tensor:
    """Binary masks (E, H, W), original size → soft targets (E, lowres, lowres) in SAM's frame.

    Resized (bilinear) to SAM's input size, zero-padded bottom/right to long_side², then averaged
    over (long_side / lowres)² cells: each target pixel is the mask's share of its cell.
    """
    h, w = masks.shape[1:]
    new_h, new_w = input_size((h, w), long_side)
    x = F.interpolate(masks[:, None].float(), (new_h, new_w), mode="bilinear", align_corners=False)
    x = F.pad(x, (0, long_side - new_w, 0, long_side - new_h))  # (E, 1, long, long)
    return F.avg_pool2d(x, long_side // lowres)[:, 0].clamp(0, 1)  # (E, lowres, lowres)


@torch.no_grad()
def upscale_masks(
    sam: FrozenSam, lowres_logits: torch.Tensor, original: tuple[int, int]
) -> torch.Tensor:
    """Low-res logits (N, 256, 256) of one image → logits (N, H, W) at its original size."""
    resized = input_size(original, sam.image_size)
    out = sam.model.postprocess_masks(lowres_logits[:, None], resized, original)
    return out[:, 0]  # (N, H, W)
