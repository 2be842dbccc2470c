"""CLIP feature extraction, the point generator, and one training step of the whole model."""

from __future__ import annotations

import time

import pytest
import torch

from pipeline.core.config import from_section
from pipeline.core.errors import ConfigError
from pipeline.models.frozen import FrozenClip, FrozenSam, build_clip, build_sam
from tests.helpers import SAM_VIT_T
from trainer.loss.criterion import LossConfig, build_criterion
from trainer.network.clip_stages import clip_features, resolve_stage_indices
from trainer.network.point_generator import PointGeneratorConfig, build_point_generator
from trainer.network.prompt_model import PointPromptModel, build_model

TEXTS = ["the red cup left of the man", "dog"]
TINY = PointGeneratorConfig(
    num_queries=4, points_per_query=5, hidden_dim=32, num_heads=4, ffn_dim=64, stage_indices=(1, -1)
)


@pytest.fixture(scope="module")
def tiny_clip() -> FrozenClip:
    return build_clip("ppt-tiny-vit", allow_random=True)


@pytest.fixture(scope="module")
def sam_t() -> FrozenSam:
    if SAM_VIT_T.is_file():
        return build_sam("vit_t", checkpoint=SAM_VIT_T)
    return build_sam("vit_t", allow_random=True)  # the decoder is all the model uses


def images(b: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_clip_features_match_open_clip(tiny_clip: FrozenClip) -> None:
    x = images(2, tiny_clip.image_size)
    feats = clip_features(tiny_clip, x, TEXTS, (1, -1))
    ref = tiny_clip.model.visual.forward_intermediates(
        x, indices=[1, 3], output_fmt="NLC", intermediates_only=True
    )["image_intermediates"]
    assert len(feats.stages) == 2
    for ours, theirs in zip(feats.stages, ref, strict=True):
        torch.testing.assert_close(ours, theirs)  # (B, 49, 64)
    tokens = tiny_clip.tokenizer(TEXTS)
    eot = tokens.argmax(-1)
    assert feats.words.shape == (2, int(eot.max()) + 1, 32)  # trimmed to the longest text
    assert feats.text_pad.tolist()[1] == [i > int(eot[1]) for i in range(feats.words.shape[1])]
    pooled = feats.words[torch.arange(2), eot]  # the end-of-text row is CLIP's sentence embedding
    torch.testing.assert_close(pooled, tiny_clip.model.encode_text(tokens))
    assert not any(t.requires_grad for t in (*feats.stages, feats.words))  # frozen, no graph


def test_clip_features_at_another_input_size(tiny_clip: FrozenClip) -> None:
    feats = clip_features(tiny_clip, images(1, 224), TEXTS[:1], (0,))
    assert feats.stages[0].shape == (1, 14 * 14, 64)


def test_stage_indices_are_checked() -> None:
    assert resolve_stage_indices((-1, 2), 12) == (2, 11)
    with pytest.raises(ConfigError, match="outside the 4 blocks"):
        resolve_stage_indices((1, 4), 4)
    with pytest.raises(ConfigError, match="repeated"):
        resolve_stage_indices((3, -1), 4)
    with pytest.raises(ConfigError, match="num_heads"):
        from_section(PointGeneratorConfig, {"hidden_dim": 30, "num_heads": 4}, "point_generator")


def test_point_generator_shapes_batching_and_padding(tiny_clip: FrozenClip) -> None:
    gen = build_point_generator(TINY, tiny_clip).eval()
    feats = clip_features(tiny_clip, images(2, tiny_clip.image_size), TEXTS, TINY.stage_indices)
    with torch.no_grad():
        out = gen(*feats)
        assert out["pred_points"].shape == (2, 4, 5, 2)
        assert out["pred_point_logits"].shape == (2, 4, 5)
        assert out["pred_scores"].shape == (2, 4)
        assert out["pred_points"].min() >= 0 and out["pred_points"].max() <= 1
        # one sample alone, with its words trimmed to its own length: the same predictions
        length = int((~feats.text_pad[1]).sum())
        single = gen(
            [s[1:] for s in feats.stages], feats.words[1:, :length], feats.text_pad[1:, :length]
        )
    for key, value in single.items():
        torch.testing.assert_close(value[0], out[key][1], msg=key)


@pytest.mark.slow
def test_one_training_step_moves_only_the_generator(
    tiny_clip: FrozenClip, sam_t: FrozenSam
) -> None:
    torch.manual_seed(0)
    model = build_model(TINY, tiny_clip, sam_t).train()
    criterion = build_criterion(LossConfig())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in model.generator.parameters())
    assert set(model.trainable_state_dict()) == set(model.generator.state_dict())
    feats = clip_features(tiny_clip, images(2, tiny_clip.image_size), TEXTS, TINY.stage_indices)
    embeddings = torch.randn(2, 256, 64, 64)  # stands in for cached SAM image embeddings
    sizes = torch.tensor([[480, 640], [640, 427]])
    g = torch.Generator().manual_seed(1)
    targets = [
        {
            "masks": (torch.rand(e, 256, 256, generator=g) > 0.5).float(),
            "points": torch.rand(e, 5, 2, generator=g),
            "point_labels": (torch.rand(e, 5, generator=g) > 0.5).float(),
            "referent": torch.tensor([1] + [0] * (e - 1)),
        }
        for e in (2, 3)
    ]
    sam_before = [p.clone() for p in model.decoder.parameters()]
    gen_before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    out = model(feats.stages, feats.words, feats.text_pad, embeddings, sizes)
    assert out["pred_masks"].shape == (2, 4, 256, 256) and out["pred_ious"].shape == (2, 4)
    loss = criterion.weighted(criterion(out, targets))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.generator.queries.weight.grad.abs().sum() > 0
    assert model.generator.point_head[0].weight.grad.abs().sum() > 0
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(gen_before, trainable, strict=True))
    assert all(p.grad is None for p in model.decoder.parameters())
    assert all(
        torch.equal(a, b) for a, b in zip(sam_before, model.decoder.parameters(), strict=True)
    )
    pred = model.eval().predict(feats.stages, feats.words, feats.text_pad, embeddings, sizes)
    assert pred.masks.shape == (2, 256, 256) and pred.query.shape == pred.score.shape == (2,)


@pytest.mark.slow
def test_vit_b16_with_sam_vit_b_builds_and_trains() -> None:
    """The paper's backbone pair, random-init: build time, parameter count, one step on CPU."""
    start = time.perf_counter()
    clip = build_clip("ViT-B-16", allow_random=True)
    sam = build_sam("vit_b", allow_random=True)
    cfg = PointGeneratorConfig()
    model: PointPromptModel = build_model(cfg, clip, sam).train()
    built = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in model.generator.parameters())
    assert not any(p.requires_grad for p in (*clip.model.parameters(), *sam.model.parameters()))
    assert 5_000_000 < trainable < 25_000_000  # the paper's generator: 20.7M
    feats = clip_features(clip, images(2, clip.image_size), TEXTS, cfg.stage_indices)
    assert [s.shape for s in feats.stages] == [(2, 196, 768)] * 4
    start = time.perf_counter()
    out = model(feats.stages, feats.words, feats.text_pad, torch.randn(2, 256, 64, 64),
                torch.tensor([[480, 640], [500, 375]]))  # fmt: skip
    masks = out["pred_masks"]
    assert masks.shape == (2, cfg.num_queries, 256, 256)
    (masks.sigmoid().mean() + out["pred_scores"].mean()).backward()
    step = time.perf_counter() - start
    assert all(p.grad is not None for p in model.generator.parameters())
    print(f"\nViT-B-16 + SAM vit_b: built in {built:.1f}s, {trainable:,} trainable parameters, "
          f"forward+backward at batch 2 in {step:.1f}s")  # fmt: skip
