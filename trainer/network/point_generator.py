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

from pipeline.models.frozen import FrozenClip
from trainer.network.clip_stages import resolve_stage_indices, text_dim


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
    sam_stage: int = 0  # >0: SAM's image embedding pooled to this side is one more (last) stage
    point_mode: str = "regress"  # "regress": MLP → sigmoid xy; "softargmax": attention over patches

    def __post_init__(self) -> None:
        if min(self.num_queries, self.points_per_query, self.num_heads) < 1:
            raise ValueError("num_queries, points_per_query and num_heads must be at least 1")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must divide by num_heads")
        if self.point_mode not in ("regress", "softargmax"):
            raise ValueError(f"point_mode {self.point_mode!r}: choose regress or softargmax")
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


def sam_stage_tokens(embedding: torch.Tensor, sizes: torch.Tensor, side: int) -> torch.Tensor:
    """SAM embeddings (B, C, 64, 64) in SAM's padded frame (long side first, padding bottom and
    right) → (B, side*side, C): each image's valid region pooled to a side×side grid, so cells
    map onto the original image as CLIP's squashed grid does."""
    g = embedding.shape[-1]
    out = []
    for emb, (h, w) in zip(embedding, sizes.tolist(), strict=True):
        long = max(h, w)
        gh, gw = max(1, math.ceil(g * h / long)), max(1, math.ceil(g * w / long))
        out.append(nn.functional.adaptive_avg_pool2d(emb[:, :gh, :gw], side))  # (C, s, s)
    return torch.stack(out).flatten(2).transpose(1, 2)


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
        return self.ffn_norm(q + self.ffn(q)), image


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
        sam_stage: int = 0,
        point_mode: str = "regress",
    ) -> None:
        super().__init__()
        self.sam_stage, self.point_mode = sam_stage, point_mode
        if sam_stage:
            image_dims = [*image_dims, 256]  # SAM's embedding width
        self.num_queries = num_queries
        self.points_per_query = points_per_query
        self.hidden_dim = hidden_dim
        self.queries = nn.Embedding(num_queries, hidden_dim)
        self.stages = nn.ModuleList(
            Stage(c, text_dim, hidden_dim, num_heads, ffn_dim, dropout) for c in image_dims
        )
        self.point_head = mlp(hidden_dim, hidden_dim, points_per_query * 3, 3)
        if point_mode == "softargmax":
            self.point_query = nn.Linear(hidden_dim, points_per_query * hidden_dim)
        self.score_head = mlp(hidden_dim, hidden_dim, 1, 2)

    def forward(
        self,
        stages: list[torch.Tensor],
        words: torch.Tensor,
        text_pad: torch.Tensor,
        sam_embedding: torch.Tensor | None = None,
        sizes: torch.Tensor | None = None,
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
        stages = list(stages)
        if self.sam_stage:
            if sam_embedding is None:
                raise ValueError("this generator reads SAM's image embedding: pass sam_embedding")
            if sizes is None:
                raise ValueError("the SAM stage needs the original sizes (B, 2)")
            stages.append(sam_stage_tokens(sam_embedding, sizes, self.sam_stage))
        if len(stages) != len(self.stages):
            raise ValueError(f"{len(stages)} CLIP stages given, the model has {len(self.stages)}")
        b = stages[0].shape[0]
        q = self.queries.weight[None].expand(b, -1, -1)  # (B, K, D)
        for stage, image in zip(self.stages, stages, strict=True):
            length = image.shape[1]
            side = math.isqrt(length)
            if side * side != length:
                raise ValueError(f"{length} patch tokens are not a square grid: give square images")
            pos = sine_position_2d((side, side), self.hidden_dim, words.device)  # (L, D)
            q, fused = stage(q, image, pos, words, text_pad)
        raw = self.point_head(q).reshape(b, self.num_queries, self.points_per_query, 3)
        if self.point_mode == "softargmax":  # each point: a softmax over the last stage's cells
            pq = self.point_query(q).reshape(b, self.num_queries, self.points_per_query, -1)
            att = torch.einsum("bkmd,bld->bkml", pq, fused) / math.sqrt(self.hidden_dim)
            cells = (torch.arange(side, device=words.device, dtype=att.dtype) + 0.5) / side
            grid = torch.stack(torch.meshgrid(cells, cells, indexing="ij"), -1).reshape(-1, 2)
            xy = att.softmax(-1) @ grid.flip(-1)  # (B, K, M, 2) as (x, y)
            return {
                "pred_points": xy,
                "pred_point_logits": raw[..., 2],
                "pred_scores": self.score_head(q)[..., 0],
            }
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
        sam_stage=cfg.sam_stage,
        point_mode=cfg.point_mode,
    )
