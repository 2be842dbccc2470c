"""Frozen CLIP features the point generator reads: N intermediate image stages and word tokens.

This is what the pipeline caches per image and per expression, so training never runs the frozen
encoders per epoch (DESIGN §6). Both towers are open_clip's own modules, iterated by hand:

- image: patch embedding, class token, positional embedding (resized to the input's patch grid,
  so any square side works), ln_pre, then the residual blocks; the output of block i (0-based) for
  each i in `stage_indices` is kept, patch tokens only (class token dropped), as the residual
  stream (no ln_post, no projection). Iteration stops after the deepest requested block.
- text: token + positional embedding, the causal transformer, ln_final, text_projection, at every
  token (the pooled sentence embedding would take only the end-of-text row). Positions after the
  end-of-text token are padding; the sequence is trimmed to the batch's longest expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.clip_surgery import interpolate_pos_embed
from pipeline.models.frozen import FrozenClip


class ClipFeatures(NamedTuple):
    """Frozen CLIP features of a batch of (image, expression) pairs."""

    stages: list[torch.Tensor]  # N × (B, G*G, C_n) patch tokens of the chosen blocks, row-major
    words: torch.Tensor  # (B, T, C_t) projected token features, T = longest expression in batch
    text_pad: torch.Tensor  # (B, T) bool, True = padding (after the end-of-text token)


def resolve_stage_indices(indices: Sequence[int], n_blocks: int) -> tuple[int, ...]:
    """Block indices (negative = from the end) → sorted, distinct, non-negative indices.

    Raises:
        ConfigError: an index outside the encoder's blocks, a repeat, or none at all.
    """
    if not indices:
        raise ConfigError("point_generator.stage_indices: give at least one CLIP block index")
    resolved = [i + n_blocks if i < 0 else i for i in indices]
    bad = [i for i, r in zip(indices, resolved, strict=True) if not 0 <= r < n_blocks]
    if bad:
        raise ConfigError(
            f"point_generator.stage_indices {list(indices)}: {bad} outside the {n_blocks} blocks "
            f"of this CLIP image encoder; use 0..{n_blocks - 1} or negative indices from the end"
        )
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"point_generator.stage_indices {list(indices)}: repeated block")
    return tuple(sorted(resolved))


def text_dim(model: nn.Module) -> int:
    """Width of the projected word features (the CLIP embedding dimension)."""
    proj = model.text_projection
    if proj is None:
        return int(model.transformer.width)
    return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])


def embed_patches(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, S, S) → what the first block reads, (B, 1 + G*G, C): patch
    embedding, class token, the positional embedding resized to the input's grid, ln_pre.

    Differentiable: bench/world_clip.py pretrains through it (as the open_clip tower's `_embeds`)
    so that a pretrained CLIP saw its images exactly as `image_stages` reads them.
    """
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, C, Gh, Gw)
    grid = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)  # (B, Gh*Gw, C)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
    x = torch.cat([cls, x], dim=1)  # (B, 1 + Gh*Gw, C)
    pos = visual.positional_embedding
    if tuple(grid) != tuple(visual.grid_size):
        pos = interpolate_pos_embed(pos, visual.grid_size, grid)
    return visual.ln_pre(visual.patch_dropout(x + pos.to(x.dtype)))


@torch.no_grad()
def image_stages(
    visual: VisionTransformer, images: torch.Tensor, stage_indices: Sequence[int]
) -> list[torch.Tensor]:
    """Normalised images (B, 3, S, S) → the outputs of blocks `stage_indices`, (B, G*G, C) each."""
    if not isinstance(visual, VisionTransformer):
        raise ConfigError(
            f"the point generator needs an open_clip ViT image tower, got "
            f"{type(visual).__name__}: choose a ViT --clip-model (e.g. ViT-B-16)"
        )
    blocks = visual.transformer.resblocks
    wanted = set(resolve_stage_indices(stage_indices, len(blocks)))
    x = embed_patches(visual, images)
    batch_first = visual.transformer.batch_first
    stages = []
    for i, blk in enumerate(blocks):
        x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
        if i in wanted:
            stages.append(x[:, 1:].float())  # (B, Gh*Gw, C), class token dropped
            if len(stages) == len(wanted):
                break
    return stages


@torch.no_grad()
def word_features(
    model: nn.Module, tokens: torch.Tensor, layers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, context) → projected word features (B, T, C_t) and padding mask (B, T).

    `layers`: text transformer blocks to run (None: all of them, CLIP's own word features;
    0: the token embeddings alone, through ln_final and the projection). A random-init text
    tower mixes the words away (ppt-tiny-vit: pooled features of "the red circle" and "the red
    square" have cosine 0.98); its token embeddings keep them apart.
    """
    pool = getattr(model, "text_pool_type", "argmax")
    if pool == "argmax":  # OpenAI-style vocabularies: end-of-text has the highest id
        eot = tokens.argmax(dim=-1)
    elif pool == "eos":
        eot = (tokens == model.text_eos_id).int().argmax(dim=-1)
    else:
        raise ConfigError(
            f"CLIP text pooling {pool!r}: word features need an end-of-text token "
            "(argmax or eos pooling); choose an OpenAI-style CLIP --clip-model such as ViT-B-16"
        )
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # (B, context, W)
    x = x + model.positional_embedding.to(cast_dtype)
    transformer = model.transformer
    blocks = transformer.resblocks if layers is None else transformer.resblocks[:layers]
    if not transformer.batch_first:
        x = x.transpose(0, 1)  # (context, B, W)
    for block in blocks:
        x = block(x, attn_mask=model.attn_mask)
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    x = model.ln_final(x)  # (B, context, W)
    proj = model.text_projection
    if isinstance(proj, nn.Linear):
        x = proj(x)
    elif proj is not None:
        x = x @ proj  # (B, context, C_t)
    length = int(eot.max()) + 1
    positions = torch.arange(length, device=tokens.device)
    pad = positions[None, :] > eot[:, None]  # (B, T)
    return x[:, :length].float(), pad


@torch.no_grad()
def clip_features(
    clip: FrozenClip,
    images: torch.Tensor,
    texts: Sequence[str] | torch.Tensor,
    stage_indices: Sequence[int],
) -> ClipFeatures:
    """Frozen features of B (image, expression) pairs.

    Args:
        clip: the frozen CLIP (a ViT image tower).
        images: (B, 3, S, S) normalised images (`clip_surgery.preprocess_image`); S a
            multiple of the patch size, any side (the positional embedding is resized).
        texts: B expressions, or their (B, context) token ids.
        stage_indices: CLIP blocks whose outputs become the N stages (negative = from the end).
    """
    tokens = texts if isinstance(texts, torch.Tensor) else clip.tokenizer(list(texts))
    if tokens.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {tokens.shape[0]} texts: pair them 1:1")
    stages = image_stages(clip.model.visual, images.to(clip.device), stage_indices)
    words, pad = word_features(clip.model, tokens.to(clip.device))
    return ClipFeatures(stages=stages, words=words, text_pad=pad)
