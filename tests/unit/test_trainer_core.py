"""Invariants of the trainer's matcher and set loss on small random tensors (no models)."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.config import from_section
from pipeline.core.errors import ConfigError
from trainer.loss.criterion import LossConfig, SetCriterion, build_criterion
from trainer.loss.matcher import HungarianMatcher, match_points, point_pair_cost

K, M, MT, S = 5, 6, 4, 32  # queries, predicted points, target points, mask side


def make_outputs(b: int, seed: int = 0, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """Random predictions for B samples."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "pred_masks": torch.randn(b, K, S, S, generator=g) * 3,
        "pred_points": torch.rand(b, K, M, 2, generator=g),
        "pred_point_logits": torch.randn(b, K, M, generator=g),
        "pred_scores": torch.randn(b, K, generator=g),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in out.items()}


def make_target(e: int, seed: int, referent: int | None = 0) -> dict[str, torch.Tensor]:
    """E random pseudo-labels; candidate `referent` has c = 1 (None: all c = 0)."""
    g = torch.Generator().manual_seed(1000 + seed)
    ref = torch.zeros(e, dtype=torch.int64)
    if referent is not None and e:
        ref[referent] = 1
    return {
        "masks": (torch.rand(e, S, S, generator=g) > 0.6).float(),
        "points": torch.rand(e, MT, 2, generator=g),
        "point_labels": (torch.rand(e, MT, generator=g) > 0.5).float(),
        "referent": ref,
    }


@pytest.fixture
def criterion() -> SetCriterion:
    return build_criterion(LossConfig(cost_mask_size=16))


def sample(outputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    return {k: v[b : b + 1] for k, v in outputs.items()}


def test_batched_matching_equals_per_sample(criterion: SetCriterion) -> None:
    outputs = make_outputs(4)
    targets = [make_target(e, i) for i, e in enumerate([3, 1, 5, 2])]
    batched = criterion.matcher(outputs, targets)
    for b, target in enumerate(targets):
        ((src, tgt),) = criterion.matcher(sample(outputs, b), [target])
        assert torch.equal(src, batched[b][0]) and torch.equal(tgt, batched[b][1])
        assert len(set(src.tolist())) == len(src) == len(set(tgt.tolist()))


def test_empty_targets_match_nothing_and_train(criterion: SetCriterion) -> None:
    outputs = make_outputs(2, requires_grad=True)
    targets = [make_target(0, 0), make_target(2, 1)]
    indices = criterion.matcher(outputs, targets)
    assert len(indices[0][0]) == len(indices[0][1]) == 0 and len(indices[1][0]) == 2
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    criterion.weighted(losses).backward()
    # all-empty batch: finite zero loss that still backpropagates
    none = criterion(make_outputs(2, requires_grad=True), [make_target(0, 0), make_target(0, 1)])
    assert all(float(v.detach()) == 0.0 for v in none.values())
    criterion.weighted(none).backward()


def test_more_targets_than_queries(criterion: SetCriterion) -> None:
    outputs = make_outputs(1)
    target = make_target(K + 3, 0)
    ((src, tgt),) = criterion.matcher(outputs, [target])
    assert len(src) == len(tgt) == K
    assert sorted(src.tolist()) == list(range(K)) and len(set(tgt.tolist())) == K
    assert torch.isfinite(criterion.weighted(criterion(outputs, [target])))


def test_loss_invariant_to_target_permutation(criterion: SetCriterion) -> None:
    outputs = make_outputs(3)
    targets = [make_target(e, i, referent=min(1, e - 1)) for i, e in enumerate([3, 4, 2])]
    reference = criterion(outputs, targets)
    g = torch.Generator().manual_seed(7)
    permuted = []
    for t in targets:
        perm = torch.randperm(len(t["referent"]), generator=g)
        point_perm = torch.randperm(MT, generator=g)  # point order within a target is free too
        permuted.append(
            {
                "masks": t["masks"][perm],
                "points": t["points"][perm][:, point_perm],
                "point_labels": t["point_labels"][perm][:, point_perm],
                "referent": t["referent"][perm],
            }
        )
    for name, value in criterion(outputs, permuted).items():
        torch.testing.assert_close(value, reference[name], msg=name)


def test_loss_invariant_to_query_permutation(criterion: SetCriterion) -> None:
    outputs = make_outputs(3)
    targets = [make_target(e, i) for i, e in enumerate([3, 4, 2])]
    reference = criterion(outputs, targets)
    perm = torch.randperm(K, generator=torch.Generator().manual_seed(3))
    permuted = {k: v[:, perm] for k, v in outputs.items()}
    for name, value in criterion(permuted, targets).items():
        torch.testing.assert_close(value, reference[name], msg=name)


def test_matcher_recovers_planted_assignment() -> None:
    target = make_target(3, 0)
    outputs = make_outputs(1)
    planted = torch.tensor([4, 0, 2])  # target e is predicted by query planted[e]
    outputs["pred_masks"][0, planted] = (target["masks"] * 2 - 1) * 20
    outputs["pred_points"][0, planted, :MT] = target["points"]
    outputs["pred_point_logits"][0, planted, :MT] = (target["point_labels"] * 2 - 1) * 20
    matcher = HungarianMatcher(cost_score=0.0, cost_mask_size=16)
    ((src, tgt),) = matcher(outputs, [target])
    assert torch.equal(planted[tgt], src)


def test_match_points_pairs_a_shuffled_set_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    xy, labels = torch.rand(2, M, 2, generator=g), (torch.rand(2, M, generator=g) > 0.5).float()
    perm = torch.randperm(M, generator=g)
    cost = point_pair_cost(xy, (labels * 2 - 1) * 30, xy[:, perm], labels[:, perm])
    src, dst = match_points(cost)
    assert src.shape == dst.shape == (2, M)
    assert torch.equal(perm[dst], src)
    empty = match_points(torch.zeros(0, M, MT))
    assert empty[0].shape == (0, MT)


def test_score_targets_follow_the_referent(criterion: SetCriterion) -> None:
    outputs = make_outputs(2, requires_grad=True)
    targets = [make_target(3, 0, referent=2), make_target(3, 1, referent=None)]
    indices = criterion.matcher(outputs, targets)
    src, tgt = indices[0]
    positive = int(src[tgt == 2])
    losses = criterion(outputs, targets)
    losses["loss_score"].backward()
    grad = outputs["pred_scores"].grad
    assert grad[0, positive] < 0  # pushed up: target 1
    assert (grad[0, torch.arange(K) != positive] > 0).all()  # every other query pushed down
    assert (grad[1] == 0).all()  # no referent (H_ref before Select): not scored


def test_gradients_reach_every_output(criterion: SetCriterion) -> None:
    outputs = make_outputs(2, requires_grad=True)
    targets = [make_target(2, 0), make_target(3, 1)]
    criterion.weighted(criterion(outputs, targets)).backward()
    for name, value in outputs.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, name


def test_loss_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[loss\]"):
        from_section(LossConfig, {"mask_dice": -1.0}, "loss")
    with pytest.raises(ConfigError, match="unknown key"):
        from_section(LossConfig, {"dice": 1.0}, "loss")
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(HungarianMatcher(), {}, losses=("boxes",))
