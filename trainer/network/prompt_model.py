"""The PPT model on cached features: point generator → soft point prompts → frozen SAM decoder.

Only the point generator trains. The frozen SAM prompt encoder and mask decoder are submodules
(so `.to(device)` moves them) but have requires_grad off; `trainable_state_dict` is what a
checkpoint needs, the SAM weights being identified by the label store's manifest instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pipeline.models.frozen import FrozenClip, FrozenSam
from trainer.network.point_generator import (
    PointGenerator,
    PointGeneratorConfig,
    build_point_generator,
)
from trainer.network.soft_sam import SoftPromptSam


class Prediction(NamedTuple):
    """Inference output: the most confident query of each sample (DESIGN §6)."""

    masks: torch.Tensor  # (B, 256, 256) low-res mask logits in SAM's padded frame
    query: torch.Tensor  # (B,) index of the chosen query
    score: torch.Tensor  # (B,) its referent probability


class PointPromptModel(nn.Module):
    """PointGenerator + SoftPromptSam."""

    def __init__(self, generator: PointGenerator, decoder: SoftPromptSam) -> None:
        super().__init__()
        self.generator, self.decoder = generator, decoder

    def forward(
        self,
        stages: list[torch.Tensor],
        words: torch.Tensor,
        text_pad: torch.Tensor,
        sam_embeddings: torch.Tensor,
        original_sizes: torch.Tensor,
        sam_tokens: torch.Tensor | None = None,
        relevance: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict points, score and masks for every query.

        Args:
            stages: N × (B, G*G, C_n) cached CLIP stage features.
            words: (B, T, C_t) cached word features; text_pad (B, T) True = padding.
            sam_embeddings: (B, 256, 64, 64) cached SAM image embeddings.
            original_sizes: (B, 2) original (H, W) of each image.
            sam_tokens: (B, S*S, 256) the cached SAM stage, if the generator reads one.
            relevance: (B, R, R) the expression's relevance map, if the generator reads one.

        Returns:
            pred_points (B, K, M, 2), pred_point_logits (B, K, M), pred_scores (B, K),
            pred_masks (B, K, 256, 256) logits, pred_ious (B, K).
        """
        out = self.generator(
            stages, words, text_pad, sam_embeddings, original_sizes, sam_tokens, relevance
        )
        masks, ious = self.decoder(
            sam_embeddings, out["pred_points"], out["pred_point_logits"], original_sizes
        )
        return {**out, "pred_masks": masks, "pred_ious": ious}

    @torch.no_grad()
    def predict(
        self,
        stages: list[torch.Tensor],
        words: torch.Tensor,
        text_pad: torch.Tensor,
        sam_embeddings: torch.Tensor,
        original_sizes: torch.Tensor,
    ) -> Prediction:
        """The mask of the most confident query per sample (arguments as `forward`)."""
        out = self(stages, words, text_pad, sam_embeddings, original_sizes)
        score, query = out["pred_scores"].sigmoid().max(dim=1)  # (B,), (B,)
        rows = torch.arange(len(query), device=query.device)
        return Prediction(masks=out["pred_masks"][rows, query], query=query, score=score)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The point generator's weights: everything a checkpoint must hold of the model."""
        return self.generator.state_dict()


def build_model(cfg: PointGeneratorConfig, clip: FrozenClip, sam: FrozenSam) -> PointPromptModel:
    """The model for `clip`'s feature widths on `sam`'s frozen decoder."""
    return PointPromptModel(build_point_generator(cfg, clip), SoftPromptSam(sam))
