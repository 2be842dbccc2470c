"""The paper's backbone pair, ViT-B-16 + SAM vit_b (random init here), through one training step.

Issue 6's target: the configuration builds, runs forward/backward on CPU through the real
SoftPromptSam decoder and set criterion, and reports its trainable parameter count. SAM's image
encoder is built (so the decoder is vit_b's) but not run: training reads cached embeddings, and
a (B, 256, 64, 64) random tensor stands in for them, as vit_b at 1024 px is slow on a CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import torch

from pipeline.models.frozen import build_clip, build_sam
from trainer.loss.criterion import LossConfig, build_criterion
from trainer.network.clip_stages import clip_features
from trainer.network.point_generator import PointGeneratorConfig
from trainer.network.prompt_model import build_model

log = logging.getLogger(__name__)

TEXTS = ["the red cup left of the man", "dog"]
SIZES = [[480, 640], [500, 375]]  # original (H, W): one landscape, one portrait


def targets(counts: list[int], m: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Random pseudo-labels, E = counts[b] for sample b, candidate 0 the referent."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "masks": (torch.rand(e, 256, 256, generator=g) > 0.5).float(),
            "points": torch.rand(e, m, 2, generator=g),
            "point_labels": (torch.rand(e, m, generator=g) > 0.5).float(),
            "referent": torch.tensor([1] + [0] * (e - 1)),
        }
        for e in counts
    ]


@pytest.mark.slow
def test_vit_b16_sam_vit_b_trains_one_step_on_cpu(
    record_property: Callable[[str, object], None],
) -> None:
    start = time.perf_counter()
    clip = build_clip("ViT-B-16", allow_random=True)
    sam = build_sam("vit_b", allow_random=True)
    assert sam.variant == "vit_b" and type(sam.model.image_encoder).__name__ == "ImageEncoderViT"
    cfg = PointGeneratorConfig()
    model = build_model(cfg, clip, sam).train()
    assert model.decoder.mask_decoder is sam.model.mask_decoder  # vit_b's own decoder
    criterion = build_criterion(LossConfig())

    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    assert n_trainable == sum(p.numel() for p in model.generator.parameters())
    frozen = [*clip.model.parameters(), *sam.model.parameters()]
    assert not any(p.requires_grad for p in frozen)

    torch.manual_seed(0)
    images = torch.randn(2, 3, clip.image_size, clip.image_size)  # (B, 3, 224, 224)
    feats = clip_features(clip, images, TEXTS, cfg.stage_indices)
    assert [s.shape for s in feats.stages] == [(2, 196, 768)] * len(cfg.stage_indices)
    embeddings = torch.randn(2, 256, 64, 64)  # stands in for cached SAM vit_b embeddings
    out = model(feats.stages, feats.words, feats.text_pad, embeddings, torch.tensor(SIZES))
    assert out["pred_masks"].shape == (2, cfg.num_queries, 256, 256)
    out["pred_points"].retain_grad()
    losses = criterion(out, targets([2, 3], cfg.points_per_query))
    loss = criterion.weighted(losses)
    assert torch.isfinite(loss)
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    loss.backward()
    # The mask loss reaches the point coordinates through the frozen prompt encoder and decoder.
    assert out["pred_points"].grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.grad is None for p in frozen)
    before = [p.detach().clone() for p in sam.model.mask_decoder.parameters()]
    optimizer.step()
    after = sam.model.mask_decoder.parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    seconds = time.perf_counter() - start
    record_property("trainable_parameters", n_trainable)
    log.info("ViT-B-16 + SAM vit_b: %d trainable parameters (paper: 20.7M)", n_trainable)
    print(f"\nViT-B-16 + SAM vit_b: {n_trainable:,} trainable parameters, {seconds:.1f}s")
