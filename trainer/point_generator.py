"""The point generator: K point queries read N CLIP stages and the words, and emit point prompts.

Per stage n (DESIGN §6), with V_n the stage's patch tokens and T the word features, both
projected to `hidden_dim` (a per-stage projection of T gives T_n):

    V'_n    = LN(V_n + CrossAttn(V_n, T_n))            fusion: every patch reads the words
    Q       = LN(Q + SelfAttn(Q))                      queries see each other (set prediction)
    Q       = LN(Q + CrossAttn(Q, V'_n))               queries read the fused image,
    Q       = LN(Q + CrossAttn(Q, T_n))                then the words,
    Q_{n+1} = LN(Q + FFN(Q))                           then an FFN

Fusion is word-level cross-attention rather than a gated product with the pooled sentence:
referring expressions carry relations and positions ("the cup left of the man") that one pooled
vector blurs, and attention over T ≤ 77 words costs little next to the G*G patches. V_n gets a
fixed 2-D sine position code after projection, in keys and values, so the queries can read
*where* as well as *what*: the heads regress coordinates. The queries self-attend, as in DETR's
decoder, so that under one-to-one matching they can split the objects between them.

Heads, on the last stage's queries: PointHead → M points per query, (x, y) = sigmoid ∈ [0, 1] of
the original image and a positive-label logit each; ScoreHead → one referent logit per query.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models import FrozenClip
from trainer.clip_features import resolve_stage_indices, text_dim


@dataclass(frozen=True)
class PointGeneratorConfig:
    """params.yaml [point_generator]."""

    num_queries: int = 8  # K: ≥ the candidates of one expression (phrases.max_candidates = 4)
    points_per_query: int = 16  # M: as many as the pseudo-labels carry (points.m = 16)
    hidden_dim: int = 256  # width of queries and fused features (= SAM's prompt width)
    num_heads: int = 8  # attention heads in every attention layer
    ffn_dim: int = 2048  # hidden width of the query FFN (DETR's)
    stage_indices: tuple[int, ...] = (
        2,
        5,
        8,
        11,
    )  # CLIP blocks used as stages, 0-based (<0: from end)
    dropout: float = 0.1  # in attention and FFN residuals (DETR's)

    def __post_init__(self) -> None:
        if min(self.num_queries, self.points_per_query, self.num_heads) < 1:
            raise ValueError("num_queries, points_per_query and num_heads must be at least 1")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must divide by num_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


def sine_position_2d(grid: tuple[int, int], dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine code of a row-major patch grid (Gh, Gw) → (Gh*Gw, dim), as DETR's."""
    gh, gw = grid
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, device=device) / quarter))  # (dim/4,)
    ys = (torch.arange(gh, device=device) + 0.5) / gh * 2 * math.pi  # cell centres, normalised
    xs = (torch.arange(gw, device=device) + 0.5) / gw * 2 * math.pi
    y = ys[:, None] * freqs  # (Gh, dim/4)
    x = xs[:, None] * freqs  # (Gw, dim/4)
    y = torch.cat([y.sin(), y.cos()], -1)[:, None].expand(gh, gw, -1)  # (Gh, Gw, dim/2)
    x = torch.cat([x.sin(), x.cos()], -1)[None].expand(gh, gw, -1)  # (Gh, Gw, dim/2)
    pos = torch.cat([y, x], dim=-1).reshape(gh * gw, -1)  # (Gh*Gw, 4*(dim/4))
    return nn.functional.pad(pos, (0, dim - pos.shape[-1]))  # (Gh*Gw, dim)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """`layers` linear layers with ReLU between them."""
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < layers - 1 else [])
    return nn.Sequential(*mods)


class Residual(nn.Module):
    """x → LN(x + Dropout(Attn(x, ctx, ctx))), post-norm as DETR's decoder."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, ctx_pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, D) attending (B, S, D), padding (B, S) True = ignore → (B, L, D)."""
        out, _ = self.attn(x, ctx, ctx, key_padding_mask=ctx_pad, need_weights=False)
        return self.norm(x + self.drop(out))


class Stage(nn.Module):
    """One stage: project V_n and T, fuse, then update the queries (module docstring)."""

    def __init__(self, image_dim: int, text_dim: int, dim: int, heads: int, ffn: int, p: float):
        super().__init__()
        self.image_proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.fuse = Residual(dim, heads, p)
        self.self_attn = Residual(dim, heads, p)
        self.image_attn = Residual(dim, heads, p)
        self.text_attn = Residual(dim, heads, p)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(p), nn.Linear(ffn, dim), nn.Dropout(p)
        )
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(
        self,
        queries: torch.Tensor,
        image: torch.Tensor,
        pos: torch.Tensor,
        words: torch.Tensor,
        text_pad: torch.Tensor,
    ) -> torch.Tensor:
        """Q (B, K, D), V_n (B, L, C_n), pos (L, D), T (B, T, C_t), pad (B, T) → Q (B, K, D)."""
        text = self.text_proj(words)  # (B, T, D) T_n
        image = self.image_proj(image) + pos  # (B, L, D)
        image = self.fuse(image, text, text_pad)  # (B, L, D) V'_n
        q = self.self_attn(queries, queries)
        q = self.image_attn(q, image)
        q = self.text_attn(q, text, text_pad)  # (B, K, D)
        return self.ffn_norm(q + self.ffn(q))


class PointGenerator(nn.Module):
    """K learnable point queries → M point prompts each and a referent score.

    Args:
        image_dims: width C_n of each of the N CLIP stages.
        text_dim: width C_t of the word features.
        hidden_dim: width D of queries and fused features.
        num_queries: K.
        points_per_query: M.
        num_heads: attention heads.
        ffn_dim: query FFN hidden width.
        dropout: residual dropout.
    """

    def __init__(
        self,
        image_dims: list[int],
        text_dim: int,
        hidden_dim: int = 256,
        num_queries: int = 8,
        points_per_query: int = 16,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.points_per_query = points_per_query
        self.hidden_dim = hidden_dim
        self.queries = nn.Embedding(num_queries, hidden_dim)
        self.stages = nn.ModuleList(
            Stage(c, text_dim, hidden_dim, num_heads, ffn_dim, dropout) for c in image_dims
        )
        self.point_head = mlp(hidden_dim, hidden_dim, points_per_query * 3, 3)
        self.score_head = mlp(hidden_dim, hidden_dim, 1, 2)

    def forward(
        self, stages: list[torch.Tensor], words: torch.Tensor, text_pad: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Predict point prompts.

        Args:
            stages: N × (B, G*G, C_n) patch tokens on a square, row-major G×G grid.
            words: (B, T, C_t) word features.
            text_pad: (B, T) bool, True = padding.

        Returns:
            pred_points (B, K, M, 2) (x, y) in [0, 1] of the original image, pred_point_logits
            (B, K, M) positive-label logits, pred_scores (B, K) referent logits.
        """
        if len(stages) != len(self.stages):
            raise ValueError(f"{len(stages)} CLIP stages given, the model has {len(self.stages)}")
        b, length = stages[0].shape[:2]
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"{length} patch tokens are not a square grid: give square images")
        pos = sine_position_2d((side, side), self.hidden_dim, words.device)  # (L, D)
        q = self.queries.weight[None].expand(b, -1, -1)  # (B, K, D)
        for stage, image in zip(self.stages, stages, strict=True):
            q = stage(q, image, pos, words, text_pad)
        raw = self.point_head(q).reshape(b, self.num_queries, self.points_per_query, 3)
        return {
            "pred_points": raw[..., :2].sigmoid(),  # (B, K, M, 2)
            "pred_point_logits": raw[..., 2],  # (B, K, M)
            "pred_scores": self.score_head(q)[..., 0],  # (B, K)
        }


def build_point_generator(cfg: PointGeneratorConfig, clip: FrozenClip) -> PointGenerator:
    """A PointGenerator sized for `clip`'s ViT (stage widths) and text tower (word width)."""
    visual = clip.model.visual
    stage_indices = resolve_stage_indices(cfg.stage_indices, len(visual.transformer.resblocks))
    return PointGenerator(
        image_dims=[int(visual.transformer.width)] * len(stage_indices),
        text_dim=text_dim(clip.model),
        hidden_dim=cfg.hidden_dim,
        num_queries=cfg.num_queries,
        points_per_query=cfg.points_per_query,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout,
    )
