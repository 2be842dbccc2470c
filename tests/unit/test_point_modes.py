"""The SAM stage and soft-argmax points of the point generator (cpu-small.yaml)."""

from __future__ import annotations

import torch

from trainer.network.point_generator import PointGenerator, sam_stage_tokens


def test_sam_stage_pools_only_the_valid_region() -> None:
    emb = torch.randn(1, 256, 64, 64)
    emb[:, :, 32:, :] = 1e6  # SAM pads a wide image (h = w / 2) at the bottom: rows 32..63
    tokens = sam_stage_tokens(emb, torch.tensor([[100, 200]]), 8)  # (1, 64, 256)
    assert tokens.shape == (1, 64, 256)
    assert tokens.abs().max() < 1e3  # no padding leaked in
    expected = torch.nn.functional.adaptive_avg_pool2d(emb[0, :, :32, :], 8)
    torch.testing.assert_close(tokens[0], expected.flatten(1).T)


def test_softargmax_points_are_cell_averages_and_train() -> None:
    torch.manual_seed(0)
    gen = PointGenerator([32, 48], 16, num_queries=3, points_per_query=5, hidden_dim=32,
                         num_heads=4, ffn_dim=64, dropout=0.0, sam_stage=4,
                         point_mode="softargmax")  # fmt: skip
    stages = [torch.randn(2, 49, 32), torch.randn(2, 49, 48)]
    words, pad = torch.randn(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool)
    sam, sizes = torch.randn(2, 256, 64, 64), torch.tensor([[300, 200], [200, 300]])
    out = gen(stages, words, pad, sam, sizes)
    points = out["pred_points"]
    assert points.shape == (2, 3, 5, 2) and out["pred_scores"].shape == (2, 3)
    # Convex combinations of the 4x4 cell centres: inside [1/8, 7/8].
    assert points.min() >= 0.125 - 1e-6 and points.max() <= 0.875 + 1e-6
    points.sum().backward()
    assert gen.point_query.weight.grad is not None and gen.point_query.weight.grad.abs().sum() > 0
    try:
        gen(stages, words, pad)
    except ValueError as exc:
        assert "sam_embedding" in str(exc)
    else:
        raise AssertionError("a SAM-stage generator must refuse to run without the embedding")
