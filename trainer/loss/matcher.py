"""Hungarian matching of the E pseudo-labels of a sample to its K predictions, as DETR's.

The cost of giving target e to query k is a weighted sum of
- mask DICE and mask BCE between the query's mask logits and the target mask, both pooled to
  `cost_mask_size`² (the ranking of candidates needs no 256² detail);
- points: a symmetric Chamfer distance between the query's M points and the target's M_t points,
  each pair costing L1(xy) + |sigmoid(logit) - label|: the target points are an unordered set
  (drawn uniformly in the mask's box), so no fixed pairing of point j to point j exists;
- score: -P(score agrees with the target's c), i.e. -p_k for the referent and -(1 - p_k) for
  the other candidates; 0 for samples with no referent (H_ref before Select: c is unknown).

`match_points` pairs the points of one matched (query, target) couple one-to-one for the loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

Target = dict[str, torch.Tensor]  # masks (E, 256, 256), points (E, M_t, 2), point_labels (E, M_t),
# referent (E,) int: 1 = the referent (c = 1), 0 = another candidate or unknown


def point_pair_cost(
    pred_xy: torch.Tensor, pred_logit: torch.Tensor, tgt_xy: torch.Tensor, tgt_label: torch.Tensor
) -> torch.Tensor:
    """Cost of pairing predicted and target points: (..., M, 2), (..., M), (..., Mt, 2), (..., Mt)
    → (..., M, Mt) = L1 distance + |sigmoid(logit) - label|."""
    dist = (pred_xy[..., :, None, :] - tgt_xy[..., None, :, :]).abs().sum(-1)  # (..., M, Mt)
    label = (pred_logit.sigmoid()[..., :, None] - tgt_label[..., None, :].float()).abs()
    return dist + label


@torch.no_grad()
def match_points(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one point pairing per couple: cost (N, M, Mt) → indices (N, min(M, Mt)) each."""
    pairs = [linear_sum_assignment(c) for c in cost.cpu().numpy()]
    m = min(cost.shape[1:])
    src = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, m), dtype=np.int64)
    tgt = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, m), dtype=np.int64)
    return torch.as_tensor(src, dtype=torch.int64), torch.as_tensor(tgt, dtype=torch.int64)


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DICE loss of every pair: (K, P) logits, (E, P) targets in [0, 1] → (K, E)."""
    p = logits.sigmoid()
    inter = p @ targets.T  # (K, E)
    return 1 - (2 * inter + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


def pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits of every pair: (K, P), (E, P) → (K, E), exact for soft targets."""
    pos = F.softplus(-logits)  # -log sigmoid(x): loss where the target is 1
    neg = F.softplus(logits)  # -log(1 - sigmoid(x)): loss where the target is 0
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of targets to queries; min(K, E) pairs per sample.

    Args:
        cost_mask_dice: weight of the mask DICE cost.
        cost_mask_bce: weight of the mask BCE cost.
        cost_points: weight of the point-set cost.
        cost_score: weight of the referent-score cost.
        cost_mask_size: side to which masks are average-pooled for the cost.
        cost_map_dice, cost_map_bce: weights of the point-map costs (point_mode "map").
    """

    def __init__(
        self,
        cost_mask_dice: float = 1.0,
        cost_mask_bce: float = 1.0,
        cost_points: float = 1.0,
        cost_score: float = 1.0,
        cost_mask_size: int = 64,
        cost_map_dice: float = 0.0,
        cost_map_bce: float = 0.0,
    ) -> None:
        super().__init__()
        costs = (
            cost_mask_dice,
            cost_mask_bce,
            cost_points,
            cost_score,
            cost_map_dice,
            cost_map_bce,
        )
        if not any(costs):
            raise ValueError("all matching costs are 0: give at least one a positive weight")
        self.cost_map_dice, self.cost_map_bce = cost_map_dice, cost_map_bce
        self.cost_mask_dice, self.cost_mask_bce = cost_mask_dice, cost_mask_bce
        self.cost_points, self.cost_score = cost_points, cost_score
        self.cost_mask_size = cost_mask_size

    def _pool(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, H, W) → (N, s*s): mean over cells (logits and targets alike)."""
        s = self.cost_mask_size
        return F.adaptive_avg_pool2d(masks.float()[:, None], (s, s)).flatten(1)

    @torch.no_grad()
    def cost_matrix(self, outputs: dict[str, torch.Tensor], target: Target) -> torch.Tensor:
        """The (K, E) cost of one sample; `outputs` holds its tensors without the batch dim."""
        cost = torch.zeros(outputs["pred_scores"].shape[0], len(target["referent"]))  # (K, E)
        if cost.shape[1] == 0:
            return cost
        cost = cost.to(outputs["pred_scores"].device)
        if self.cost_mask_dice or self.cost_mask_bce:
            pred = self._pool(outputs["pred_masks"])  # (K, s*s)
            tgt = self._pool(target["masks"])  # (E, s*s)
            cost = cost + self.cost_mask_dice * pairwise_dice(pred, tgt)
            cost = cost + self.cost_mask_bce * pairwise_bce(pred, tgt)
        if self.cost_map_dice or self.cost_map_bce:
            pred = outputs["pred_maps"].flatten(1)  # (K, S*S) logits
            tgt = target["grid"].flatten(1).to(pred)  # (E, S*S)
            cost = cost + self.cost_map_dice * pairwise_dice(pred, tgt)
            cost = cost + self.cost_map_bce * pairwise_bce(pred, tgt)
        if self.cost_points:
            pc = point_pair_cost(
                outputs["pred_points"][:, None],  # (K, 1, M, 2)
                outputs["pred_point_logits"][:, None],  # (K, 1, M)
                target["points"][None].to(cost.dtype),  # (1, E, Mt, 2)
                target["point_labels"][None],  # (1, E, Mt)
            )  # (K, E, M, Mt)
            chamfer = pc.min(dim=3).values.mean(2) + pc.min(dim=2).values.mean(2)  # (K, E)
            cost = cost + self.cost_points * chamfer
        referent = target["referent"].to(cost.device).float()  # (E,)
        if self.cost_score and bool(referent.any()):
            p = outputs["pred_scores"].sigmoid()[:, None]  # (K, 1)
            agree = referent[None] * p + (1 - referent[None]) * (1 - p)  # (K, E)
            cost = cost - self.cost_score * agree
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, torch.Tensor], targets: list[Target]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match each sample's targets to its queries.

        Args:
            outputs: pred_masks (B, K, 256, 256) logits, pred_points (B, K, M, 2),
                pred_point_logits (B, K, M), pred_scores (B, K).
            targets: B dicts (see `Target`), E targets each (E may be 0 or exceed K).

        Returns:
            B pairs (pred_idx, tgt_idx) of int64 tensors of length min(K, E), pred_idx ascending.
        """
        keys = ("pred_masks", "pred_maps", "pred_points", "pred_point_logits", "pred_scores")
        indices = []
        for b, target in enumerate(targets):
            # pred_masks may be absent when no mask cost is weighted (training without SAM)
            cost = self.cost_matrix({k: outputs[k][b] for k in keys if k in outputs}, target)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
