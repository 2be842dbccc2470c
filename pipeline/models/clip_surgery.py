"""Dense text-to-patch relevance from a frozen CLIP ViT, after CLIP Surgery (Li et al., 2023).

Follows the reference code (github.com/xmed-lab/CLIP_Surgery, clip/clip_surgery_model.py and
clip/clip.py) on open_clip's VisionTransformer, with the block weights used as they are:

Architecture surgery (`surgery_forward`). The image is run at a larger side S than the pretraining
one, the positional embedding of the patch grid resized to (S/p)×(S/p) (class row kept; bicubic
here, the reference uses bilinear). With blocks 0..L-1 and d = L - n_vv_blocks (d = 6 for ViT-B,
"from block 7" in the paper's 1-based count), two paths run from block d on:

    x_ori_{i+1} = block_i(x_ori_i)                       original path, untouched (attention + FFN)
    x_new_d     = x_ori_d
    x_new_{i+1} = x_new_i + ls_1_i(VV_i(ln_1_i(x_ori_i)))   for i = d..L-1, no FFN on this path
    VV(z)       = out_proj(concat_h softmax(v_h v_hᵀ / sqrt(d_h)) v_h),  v = z W_vᵀ + b_v

W_v, b_v are the last third of the block's in_proj (query = key = value = v). ls_1 is the block's
layer scale (Identity in CLIP; the reference has none). Dense features = ln_post(x_new_L) @ proj
over the patch tokens; the pooled embedding is open_clip's own pooling of x_ori_L, so it equals
`encode_image` at the native size.

Feature surgery (`feature_surgery`), for L2-normalised patch features F (B, N, D) and texts T:
with a redundant text feature R (the empty prompt "", the reference's single-text mode)
    sim[b, n, t] = F[b, n] · (T[t] - R);
without one (the reference's multi-class mode), with S = F Tᵀ and
w = softmax_t(2 S) / mean_t softmax_t(2 S),
    sim[b, n, t] = Σ_c (w_t F_c T_tc - mean_t' w_t' F_c T_t'c) = w_t S_t - mean_t' (w_t' S_t'),
computed in the closed form on the right (the sum over channels of an elementwise product is a
dot product), so the (B, N, n_t, D) tensor of the reference is never materialised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from PIL import Image
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.frozen import FrozenClip

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 448  # ViT-B-16: 28×28 grid instead of 14×14
DEFAULT_VV_BLOCKS = 6  # ViT-B (12 blocks): surgery from block 7 (1-based), as the reference


@dataclass(frozen=True, eq=False)
class SurgeryOutput:
    """What one surgery forward returns for a batch of images."""

    dense: torch.Tensor  # (B, Gh*Gw, D) v-v path patch features after ln_post and proj, raw
    pooled: torch.Tensor  # (B, D) original-path image embedding, == encode_image(normalize=False)
    grid: tuple[int, int]  # (Gh, Gw) patch grid


def interpolate_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], mode="bicubic"
) -> torch.Tensor:
    """Resize a ViT positional embedding (1 + Gh0*Gw0, C) → (1 + Gh*Gw, C), class row kept."""
    cls_pos, grid_pos = pos_embed[:1], pos_embed[1:]
    c = pos_embed.shape[-1]
    grid_pos = grid_pos.reshape(1, *old_grid, c).permute(0, 3, 1, 2)  # (1, C, Gh0, Gw0)
    grid_pos = F.interpolate(grid_pos.float(), size=new_grid, mode=mode, align_corners=False)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(-1, c).to(pos_embed.dtype)  # (Gh*Gw, C)
    return torch.cat([cls_pos, grid_pos], dim=0)


def vv_attention(attn: nn.MultiheadAttention, z: torch.Tensor) -> torch.Tensor:
    """V-V self-attention with a block's own weights: (B, L, C) → (B, L, C).

    `z` is the block's ln_1 output. Per head h: softmax(v_h v_hᵀ / sqrt(d_h)) v_h, then out_proj.
    """
    b, length, c = z.shape
    heads = attn.num_heads
    w_v = attn.in_proj_weight[2 * c :]  # in_proj rows are [W_q; W_k; W_v]
    b_v = attn.in_proj_bias[2 * c :] if attn.in_proj_bias is not None else None
    v = F.linear(z, w_v, b_v).reshape(b, length, heads, c // heads).transpose(1, 2)  # (B,h,L,dh)
    out = F.scaled_dot_product_attention(v, v, v)  # default scale dh^-0.5, as the reference
    out = out.transpose(1, 2).reshape(b, length, c)  # (B, L, C)
    return attn.out_proj(out)


def _check_supported(visual: nn.Module, n_vv_blocks: int) -> None:
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
        raise ConfigError(
            f"CLIP Surgery needs an open_clip ViT without attentional pooling, got "
            f"{type(visual).__name__}: choose a ViT --clip-model (e.g. ViT-B-16)"
        )
    blocks = visual.transformer.resblocks
    if not all(type(b) is ResidualAttentionBlock for b in blocks):
        raise ConfigError("CLIP Surgery needs standard ResidualAttentionBlocks (no custom blocks)")
    if not 1 <= n_vv_blocks <= len(blocks):
        raise ConfigError(f"n_vv_blocks={n_vv_blocks}: must be in 1..{len(blocks)}")


@torch.no_grad()
def surgery_forward(
    visual: VisionTransformer,
    images: torch.Tensor,
    n_vv_blocks: int = DEFAULT_VV_BLOCKS,
    pos_mode: str = "bicubic",
) -> SurgeryOutput:
    """Dual-path forward of an open_clip ViT on normalised images (B, 3, S, S) of any side S."""
    _check_supported(visual, n_vv_blocks)
    blocks = visual.transformer.resblocks
    start = len(blocks) - n_vv_blocks
    batch_first = visual.transformer.batch_first

    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, C, Gh, Gw)
    grid = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)  # (B, Gh*Gw, C)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
    x = torch.cat([cls, x], dim=1)  # (B, 1 + Gh*Gw, C)
    pos = interpolate_pos_embed(visual.positional_embedding, visual.grid_size, grid, pos_mode)
    x = visual.ln_pre(visual.patch_dropout(x + pos.to(x.dtype)))

    x_new = x  # (B, 1 + Gh*Gw, C) the v-v path, branched off the residual stream at `start`
    for i, blk in enumerate(blocks):
        if i == start:
            x_new = x
        if i >= start:
            x_new = x_new + blk.ls_1(vv_attention(blk.attn, blk.ln_1(x)))  # no FFN here
        x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)

    pooled, _ = visual._pool(x)  # open_clip's own pooling: the original path is unchanged
    dense = visual.ln_post(x_new[:, 1:])  # (B, Gh*Gw, C)
    if visual.proj is not None:
        pooled, dense = pooled @ visual.proj, dense @ visual.proj  # (B, D), (B, Gh*Gw, D)
    return SurgeryOutput(dense=dense, pooled=pooled, grid=grid)


def preprocess_image(
    image: Image.Image | np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """RGB image (PIL or uint8 H×W×3) → (3, size, size) float, normalised.

    The whole image is squashed to size×size (bicubic, no crop, aspect ratio not kept), as the
    reference does, so every pixel of the original maps onto the grid.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3,S,S)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - mean_t) / std_t


@torch.no_grad()
def encode_texts(
    clip: FrozenClip, texts: Sequence[str], templates: Sequence[str] = ("{}",)
) -> torch.Tensor:
    """Texts → (n, D) L2-normalised features; several templates are averaged (prompt ensemble)."""
    prompts = [tpl.format(t) for t in texts for tpl in templates]
    tokens = clip.tokenizer(prompts).to(clip.device)
    feats = F.normalize(clip.model.encode_text(tokens).float(), dim=-1)  # (n * n_tpl, D)
    feats = feats.reshape(len(texts), len(templates), -1).mean(dim=1)  # (n, D)
    return F.normalize(feats, dim=-1)


@torch.no_grad()
def dense_features(
    clip: FrozenClip, images: torch.Tensor, n_vv_blocks: int = DEFAULT_VV_BLOCKS
) -> torch.Tensor:
    """Normalised images (B, 3, S, S) → L2-normalised surgery features (B, Gh, Gw, D)."""
    out = surgery_forward(clip.model.visual, images.to(clip.device), n_vv_blocks)
    feats = F.normalize(out.dense.float(), dim=-1)
    return feats.reshape(feats.shape[0], *out.grid, -1)  # (B, Gh, Gw, D)


def feature_surgery(
    image_feats: torch.Tensor, text_feats: torch.Tensor, redundant: torch.Tensor | None = None
) -> torch.Tensor:
    """Similarity with the redundant feature removed: (B, N, D), (n_t, D) → (B, N, n_t).

    With `redundant` (D,): F · (T_t - R). Without: the reference's class-weighted form (module
    docstring); it is 0 everywhere for a single text, so pass a redundant feature then.
    """
    if redundant is not None:
        return image_feats @ (text_feats - redundant).T
    sim = image_feats @ text_feats.T  # (B, N, n_t)
    prob = (sim * 2).softmax(dim=-1)
    weighted = sim * prob / prob.mean(dim=-1, keepdim=True)
    return weighted - weighted.mean(dim=-1, keepdim=True)


@torch.no_grad()
def phrase_relevance(
    features: torch.Tensor,
    phrase_feats: torch.Tensor,
    empty_feat: torch.Tensor,
    redundant: Literal["empty", "phrases"] = "empty",
) -> torch.Tensor:
    """Relevance maps of phrases on one image's features: (Gh, Gw, D) → (n_t, Gh, Gw).

    "empty" (default): each phrase against the empty prompt, independent of the other phrases.
    "phrases": the multi-class form over the phrases plus "" (so one phrase is not degenerate).
    """
    gh, gw, d = features.shape
    flat = features.reshape(1, gh * gw, d)  # (1, N, D)
    if redundant == "empty":
        sim = feature_surgery(flat, phrase_feats, empty_feat)
    elif redundant == "phrases":
        texts = torch.cat([phrase_feats, empty_feat[None]], dim=0)  # (n_t + 1, D)
        sim = feature_surgery(flat, texts)[..., :-1]
    else:
        raise ConfigError(f"redundant={redundant!r}: choose 'empty' or 'phrases'")
    return sim[0].T.reshape(-1, gh, gw)  # (n_t, Gh, Gw)


@torch.no_grad()
def relevance_maps(
    clip: FrozenClip,
    image: Image.Image | np.ndarray,
    phrases: Sequence[str],
    input_size: int = DEFAULT_INPUT_SIZE,
    n_vv_blocks: int = DEFAULT_VV_BLOCKS,
    redundant: Literal["empty", "phrases"] = "empty",
    templates: Sequence[str] = ("{}",),
) -> torch.Tensor:
    """One image and its phrases → raw relevance maps (n_t, G, G), G = input_size // patch."""
    batch = preprocess_image(image, input_size, clip.mean, clip.std)[None]  # (1, 3, S, S)
    feats = dense_features(clip, batch, n_vv_blocks)[0]  # (G, G, D)
    text = encode_texts(clip, [*phrases, ""], templates)  # (n_t + 1, D)
    return phrase_relevance(feats, text[:-1], text[-1], redundant)


def normalise_and_upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-max each map to [0, 1], then bilinear to `size` (h, w): (n, G, G) → (n, h, w).

    A constant map becomes all zeros (no information), never NaN.
    """
    flat = maps.float().flatten(1)  # (n, G*G)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    flat = (flat - lo) / (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
    out = F.interpolate(flat.reshape(maps.shape)[:, None], size=size, mode="bilinear")
    return out[:, 0].clamp(0.0, 1.0)


@torch.no_grad()
def clip_maps(
    features: np.ndarray,
    phrase_feats: torch.Tensor,
    empty_feat: torch.Tensor,
    redundant: Literal["empty", "phrases"] = "empty",
) -> np.ndarray:
    """Raw CLIP Surgery maps of one sample's phrases: (G, G, D), (n, D), (D,) → (n, G, G) f32.

    `features` are the image's cached, L2-normalised dense features (any float dtype);
    `phrase_feats` and `empty_feat` the L2-normalised text features of the phrases and of "".
    """
    feats = torch.from_numpy(np.asarray(features, dtype=np.float32))  # (G, G, D)
    maps = phrase_relevance(feats, phrase_feats.float().cpu(), empty_feat.float().cpu(), redundant)
    return maps.numpy().astype(np.float32)  # (n, G, G)
