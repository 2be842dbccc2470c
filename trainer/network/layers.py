"""The point generator's building blocks: position codes, SAM-stage pooling, MLPs, one stage.

`Stage` is one step of the point generator (DESIGN §6): project a CLIP (or SAM) stage and the
words, fuse them (every patch reads the words), and update the queries by self-attention, then
cross-attention to the fused image and to the words, then an FFN.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


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
