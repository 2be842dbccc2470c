"""The set loss, DETR's way: match, then one `loss_*` per term, a dispatch map, a weight dict.

Terms (each unweighted; `SetCriterion.weighted` applies the weight dict):
- loss_mask_dice, loss_mask_bce: DICE and mean per-pixel BCE of each matched query's mask logits
  against its target's low-res mask, summed over matched couples / their number.
- loss_point_l1, loss_point_bce: within each matched couple the points are paired one-to-one
  (`matcher.match_points`, the target points being an unordered set); mean L1 of the paired
  coordinates (x and y summed) and mean BCE of the predicted logits against the paired target
  labels, summed over couples / their number.
- loss_score: BCE of every query's referent logit, mean over the queries of the samples scored.
  Target 1 for the query matched to a target with c = 1, 0 for every other query: those matched
  to a candidate with c = 0 and those unmatched. A sample is scored only if one of its c = 1
  targets is matched. So a sample none of whose targets has c = 1 is not scored: in H_ref before
  Select, c = 0 means "unknown", and all-zero targets would teach that none of its candidates is
  the referent; nor is one whose referent went unmatched (E > K), for the same reason. D_ref's
  c = 0 objects sit in samples that have a referent, so they are scored 0. Unscored samples still
  train the masks and points of their matched candidates.

Under data parallelism (torchrun, `trainer.loop.distributed`) each rank holds a slice of the
global batch and DistributedDataParallel averages the ranks' gradients. The terms are then
normalised by the global batch's counts (matched couples, scored samples: one all_reduce a
step, as DETR's num_boxes) divided by the world size, so the ranks' mean loss is the one-process
loss of the global batch; per-rank counts would weigh a couple by the size of its rank's slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainer.loss.matcher import HungarianMatcher, Target, match_points, point_pair_cost

Outputs = dict[str, torch.Tensor]
Indices = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LossConfig:
    """params.yaml [loss]: matching costs and loss weights (DETR sets them equal)."""

    mask_dice: float = 1.0  # loss_mask_dice weight and matching cost
    mask_bce: float = 1.0  # loss_mask_bce weight and matching cost (per-pixel mean)
    point_l1: float = 5.0  # loss_point_l1 weight and matching cost (DETR's box L1 weight)
    point_bce: float = 1.0  # loss_point_bce weight
    score: float = 2.0  # loss_score weight and matching cost (Mask2Former's class weight)
    cost_mask_size: int = 64  # side masks are pooled to for the matching cost
    # point_mode "map": DICE and BCE of each query's point map on the last stage's grid against
    # its target's mask pooled to that grid (weights and matching costs)
    map_dice: float = 0.0
    map_bce: float = 0.0

    def __post_init__(self) -> None:
        weights = (self.mask_dice, self.mask_bce, self.point_l1, self.point_bce, self.score,
                   self.map_dice, self.map_bce)  # fmt: skip
        if min(weights) < 0 or not any(weights):
            raise ValueError("loss weights must be ≥ 0 and not all 0")
        if self.cost_mask_size < 1:
            raise ValueError("cost_mask_size must be at least 1")


def _batch_index(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    """DETR's permutation helper: (sample, query) index of every matched couple."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


def _matched_targets(targets: list[Target], indices: Indices, key: str) -> torch.Tensor:
    """targets[b][key][tgt_idx] of every matched couple, concatenated in `_batch_index` order."""
    return torch.cat([t[key][j] for t, (_, j) in zip(targets, indices, strict=True)])


class SetCriterion(nn.Module):
    """Hungarian-matched set loss over K queries and E pseudo-labels per sample.

    Args:
        matcher: assigns targets to queries.
        weight_dict: loss name → weight, for `weighted`.
        losses: which `loss_*` groups to compute: "masks", "maps", "points", "score".
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        losses: Sequence[str] = ("masks", "points", "score"),
    ) -> None:
        super().__init__()
        self.matcher, self.weight_dict, self.losses = matcher, dict(weight_dict), tuple(losses)
        self._scored: float | None = None  # data-parallel: the global scored samples / world
        unknown = set(self.losses) - set(self._loss_map())
        if unknown:
            raise ValueError(
                f"unknown losses {sorted(unknown)}: choose from {list(self._loss_map())}"
            )

    def _loss_map(self) -> dict[str, Callable[[Outputs, list[Target], Indices, float], Outputs]]:
        return {
            "masks": self.loss_masks,
            "maps": self.loss_maps,
            "points": self.loss_points,
            "score": self.loss_score,
        }

    def loss_maps(
        self, outputs: Outputs, targets: list[Target], indices: Indices, num: float
    ) -> Outputs:
        """DICE + BCE of matched point maps: pred_maps (B, K, S, S) logits vs targets' grid."""
        pred = outputs["pred_maps"][_batch_index(indices)].flatten(1)  # (N, S*S)
        tgt = _matched_targets(targets, indices, "grid").flatten(1).to(pred)  # (N, S*S)
        p = pred.sigmoid()
        dice = 1 - (2 * (p * tgt).sum(-1) + 1) / (p.sum(-1) + tgt.sum(-1) + 1)  # (N,)
        bce = F.binary_cross_entropy_with_logits(pred, tgt, reduction="none").mean(-1)  # (N,)
        return {"loss_map_dice": dice.sum() / num, "loss_map_bce": bce.sum() / num}

    def loss_masks(
        self, outputs: Outputs, targets: list[Target], indices: Indices, num: float
    ) -> Outputs:
        """DICE + BCE of matched masks: pred_masks (B, K, 256, 256) vs targets' masks."""
        pred = outputs["pred_masks"][_batch_index(indices)].flatten(1)  # (N, 256*256)
        tgt = _matched_targets(targets, indices, "masks").flatten(1).to(pred)  # (N, 256*256)
        p = pred.sigmoid()
        dice = 1 - (2 * (p * tgt).sum(-1) + 1) / (p.sum(-1) + tgt.sum(-1) + 1)  # (N,)
        bce = F.binary_cross_entropy_with_logits(pred, tgt, reduction="none").mean(-1)  # (N,)
        return {"loss_mask_dice": dice.sum() / num, "loss_mask_bce": bce.sum() / num}

    def loss_points(
        self, outputs: Outputs, targets: list[Target], indices: Indices, num: float
    ) -> Outputs:
        """L1 on paired point coordinates + BCE of point logits vs paired labels."""
        idx = _batch_index(indices)
        xy = outputs["pred_points"][idx]  # (N, M, 2)
        logit = outputs["pred_point_logits"][idx]  # (N, M)
        tgt_xy = _matched_targets(targets, indices, "points").to(xy)  # (N, Mt, 2)
        tgt_label = _matched_targets(targets, indices, "point_labels").to(xy)  # (N, Mt)
        with torch.no_grad():
            src, dst = match_points(point_pair_cost(xy, logit, tgt_xy, tgt_label))  # (N, P) each
        rows = torch.arange(len(src))[:, None]  # (N, 1)
        src, dst, rows = src.to(xy.device), dst.to(xy.device), rows.to(xy.device)
        l1 = (xy[rows, src] - tgt_xy[rows, dst]).abs().sum(-1)  # (N, P)
        bce = F.binary_cross_entropy_with_logits(
            logit[rows, src], tgt_label[rows, dst], reduction="none"
        )  # (N, P)
        return {
            "loss_point_l1": l1.mean(-1).sum() / num,
            "loss_point_bce": bce.mean(-1).sum() / num,
        }

    def loss_score(
        self, outputs: Outputs, targets: list[Target], indices: Indices, num: float
    ) -> Outputs:
        """BCE of pred_scores (B, K): 1 for the query matched to c = 1, else 0 (module doc)."""
        scores = outputs["pred_scores"]  # (B, K)
        goal = torch.zeros_like(scores)
        for b, (t, (src, tgt)) in enumerate(zip(targets, indices, strict=True)):
            is_referent = t["referent"][tgt] == 1  # (n_b,)
            goal[b, src[is_referent].to(scores.device)] = 1.0
        scored = goal.amax(dim=1) > 0  # (B,) samples whose referent is matched
        if self._scored is not None:  # data-parallel: over the global batch's scored samples
            bce = F.binary_cross_entropy_with_logits(scores[scored], goal[scored], reduction="sum")
            return {"loss_score": bce / (self._scored * scores.shape[1])}
        if not bool(scored.any()):
            return {"loss_score": scores.sum() * 0}
        return {"loss_score": F.binary_cross_entropy_with_logits(scores[scored], goal[scored])}

    def forward(self, outputs: Outputs, targets: list[Target]) -> Outputs:
        """Match, then every requested loss term (unweighted), keyed by name.

        Args:
            outputs: pred_masks (B, K, 256, 256), pred_points (B, K, M, 2),
                pred_point_logits (B, K, M), pred_scores (B, K).
            targets: B dicts: masks (E, 256, 256) float, points (E, Mt, 2),
                point_labels (E, Mt), referent (E,) int.
        """
        indices = self.matcher(outputs, targets)
        num = float(max(sum(len(src) for src, _ in indices), 1))  # matched couples in the batch
        self._scored = None
        if dist.is_available() and dist.is_initialized():
            num, self._scored = _global_counts(targets, indices, outputs["pred_scores"].device)
        losses: Outputs = {}
        for name in self.losses:
            losses.update(self._loss_map()[name](outputs, targets, indices, num))
        return losses

    def weighted(self, losses: Outputs) -> torch.Tensor:
        """Σ weight_dict[name] · loss over the terms that have a weight."""
        return sum(losses[k] * self.weight_dict[k] for k in losses if k in self.weight_dict)


def _global_counts(
    targets: list[Target], indices: Indices, device: torch.device
) -> tuple[float, float]:
    """Matched couples and scored samples (see `loss_score`) of the global batch, each divided
    by the world size: the normalisers that make the ranks' mean loss the global batch's."""
    scored = sum(
        bool((t["referent"][tgt] == 1).any()) for t, (_, tgt) in zip(targets, indices, strict=True)
    )
    couples = sum(len(src) for src, _ in indices)
    counts = torch.tensor([couples, scored], dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    world = dist.get_world_size()
    return max(float(counts[0]), 1.0) / world, max(float(counts[1]), 1.0) / world


def build_matcher(cfg: LossConfig) -> HungarianMatcher:
    """The matcher with the loss weights as costs (point BCE enters via the point-set cost)."""
    return HungarianMatcher(
        cost_mask_dice=cfg.mask_dice,
        cost_mask_bce=cfg.mask_bce,
        cost_points=cfg.point_l1,
        cost_score=cfg.score,
        cost_mask_size=cfg.cost_mask_size,
        cost_map_dice=cfg.map_dice,
        cost_map_bce=cfg.map_bce,
    )


def build_criterion(cfg: LossConfig) -> SetCriterion:
    """SetCriterion with the matcher and weight dict of `cfg`, over the loss groups whose weights
    are not all 0: without mask terms neither loss nor matching reads masks and training skips
    SAM's decoder (the CPU configs' choice; evaluation always decodes the chosen query's prompts).
    """
    weight_dict = {
        "loss_mask_dice": cfg.mask_dice,
        "loss_mask_bce": cfg.mask_bce,
        "loss_point_l1": cfg.point_l1,
        "loss_point_bce": cfg.point_bce,
        "loss_score": cfg.score,
        "loss_map_dice": cfg.map_dice,
        "loss_map_bce": cfg.map_bce,
    }
    groups = {
        "masks": cfg.mask_dice or cfg.mask_bce,
        "maps": cfg.map_dice or cfg.map_bce,
        "points": cfg.point_l1 or cfg.point_bce,
        "score": True,
    }
    return SetCriterion(build_matcher(cfg), weight_dict, [g for g, on in groups.items() if on])
