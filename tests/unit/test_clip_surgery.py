"""CLIP Surgery maths, each part against a re-computation from the formulas by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.core.errors import ConfigError
from pipeline.models.clip_surgery import (
    dense_features,
    encode_texts,
    feature_surgery,
    interpolate_pos_embed,
    normalise_and_upsample,
    phrase_relevance,
    preprocess_image,
    relevance_maps,
    surgery_forward,
    vv_attention,
)
from pipeline.models.frozen import build_clip
from tests.helpers import REFER_SAMPLE

COCO_IMAGES = REFER_SAMPLE / "images" / "mscoco" / "images" / "train2014"
IMAGE = COCO_IMAGES / "COCO_train2014_000000000154.jpg"


@pytest.fixture(scope="module")
def tiny():
    return build_clip("ppt-tiny-vit", allow_random=True)


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _vv_by_hand(blk, x: torch.Tensor) -> torch.Tensor:
    """ls_1(VV(ln_1(x))) from the formulas: in_proj row slicing, explicit softmax."""
    c = x.shape[-1]
    heads = blk.attn.num_heads
    dh = c // heads
    z = F.layer_norm(x, (c,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
    qkv = z @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias  # (B, L, 3C)
    v = qkv[..., 2 * c :]
    v = v.reshape(*x.shape[:2], heads, dh).transpose(1, 2)  # (B, h, L, dh)
    attn = torch.softmax(v @ v.transpose(-1, -2) * dh**-0.5, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(x.shape)
    return out @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias


def _dense_by_hand(visual, images: torch.Tensor, n_vv: int) -> torch.Tensor:
    x = F.conv2d(images, visual.conv1.weight, stride=visual.conv1.stride)  # (B, C, G, G)
    g = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
    x = visual.ln_pre(x + interpolate_pos_embed(visual.positional_embedding, visual.grid_size, g))
    blocks = visual.transformer.resblocks
    x_new = None
    for i, blk in enumerate(blocks):
        if i == len(blocks) - n_vv:
            x_new = x.clone()
        if x_new is not None:
            x_new = x_new + _vv_by_hand(blk, x)
        x = blk(x)
    ln = visual.ln_post
    return F.layer_norm(x_new[:, 1:], ln.normalized_shape, ln.weight, ln.bias, ln.eps) @ visual.proj


@torch.no_grad()
def test_vv_attention_matches_formula_and_ignores_query_key(tiny) -> None:
    blk = tiny.model.visual.transformer.resblocks[-1]
    x = torch.randn(2, 50, 64, generator=torch.Generator().manual_seed(1))
    got = vv_attention(blk.attn, blk.ln_1(x))
    torch.testing.assert_close(got, _vv_by_hand(blk, x), rtol=1e-5, atol=1e-5)
    saved = blk.attn.in_proj_weight.clone()
    try:
        blk.attn.in_proj_weight[: 2 * 64].normal_()  # W_q, W_k play no part in the v-v path
        torch.testing.assert_close(vv_attention(blk.attn, blk.ln_1(x)), got)
    finally:
        blk.attn.in_proj_weight.copy_(saved)


@pytest.mark.parametrize(("side", "n_vv"), [(112, 2), (224, 3), (224, 4)])
@torch.no_grad()
def test_dense_path_matches_formula(tiny, side: int, n_vv: int) -> None:
    images = _images(2, side)
    out = surgery_forward(tiny.model.visual, images, n_vv_blocks=n_vv)
    g = side // 16
    assert out.grid == (g, g) and out.dense.shape == (2, g * g, 32)
    want = _dense_by_hand(tiny.model.visual, images, n_vv)
    torch.testing.assert_close(out.dense, want, rtol=1e-5, atol=1e-5)


def test_pos_embed_at_native_size_is_unchanged(tiny) -> None:
    visual = tiny.model.visual
    pos = visual.positional_embedding
    assert torch.equal(interpolate_pos_embed(pos, visual.grid_size, visual.grid_size), pos)
    big = interpolate_pos_embed(pos, visual.grid_size, (28, 28))
    assert big.shape == (1 + 28 * 28, pos.shape[1]) and torch.equal(big[0], pos[0])


@torch.no_grad()
def test_original_path_equals_encode_image(tiny) -> None:
    images = _images(3, 112, seed=2)
    out = surgery_forward(tiny.model.visual, images, n_vv_blocks=2)
    torch.testing.assert_close(out.pooled, tiny.model.encode_image(images), rtol=0, atol=0)


@torch.no_grad()
def test_batched_equals_single(tiny) -> None:
    images = _images(3, 224, seed=3)
    batched = dense_features(tiny, images, n_vv_blocks=2)
    for i in range(3):
        single = dense_features(tiny, images[i : i + 1], n_vv_blocks=2)
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-6)
    assert batched.shape == (3, 14, 14, 32)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(3, 14, 14))


def test_feature_surgery_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 9, 8)).astype(np.float32)
    txt = rng.normal(size=(4, 8)).astype(np.float32)
    img /= np.linalg.norm(img, axis=-1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=-1, keepdims=True)
    # the reference's multi-class form, literally: weighted elementwise products minus their mean
    logits = 2 * img @ txt.T
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    w = prob / prob.mean(-1, keepdims=True)  # (B, N, n_t)
    feats = img[:, :, None, :] * txt[None, None, :, :] * w[..., None]  # (B, N, n_t, C)
    want = (feats - feats.mean(axis=2, keepdims=True)).sum(-1)
    got = feature_surgery(torch.from_numpy(img), torch.from_numpy(txt))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    red = txt[0] * 0.5
    got = feature_surgery(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(red))
    np.testing.assert_allclose(got.numpy(), img @ (txt - red).T, rtol=1e-5, atol=1e-6)
    one = feature_surgery(torch.from_numpy(img), torch.from_numpy(txt[:1]))
    assert torch.equal(one, torch.zeros_like(one))  # why one text needs a redundant feature


@torch.no_grad()
def test_relevance_of_a_phrase_does_not_depend_on_the_others(tiny) -> None:
    image = Image.open(IMAGE)
    both = relevance_maps(tiny, image, ["a man", "the red bus"], input_size=224, n_vv_blocks=2)
    alone = relevance_maps(tiny, image, ["a man"], input_size=224, n_vv_blocks=2)
    assert both.shape == (2, 14, 14) and torch.isfinite(both).all()
    torch.testing.assert_close(both[:1], alone, rtol=1e-5, atol=1e-6)
    feats = dense_features(tiny, preprocess_image(image, 224, tiny.mean, tiny.std)[None], 2)[0]
    text = encode_texts(tiny, ["a man", ""])
    multi = phrase_relevance(feats, text[:1], text[1], redundant="phrases")
    assert multi.shape == (1, 14, 14) and multi.abs().sum() > 0
    with pytest.raises(ConfigError, match="redundant"):
        phrase_relevance(feats, text[:1], text[1], redundant="nope")  # type: ignore[arg-type]


@torch.no_grad()
def test_encode_texts_prompt_ensemble_is_normalised_mean(tiny) -> None:
    templates = ("a photo of {}.", "{}")
    got = encode_texts(tiny, ["a dog", "a cat"], templates)
    parts = [encode_texts(tiny, [t.format("a dog")]) for t in templates]
    torch.testing.assert_close(got[0], F.normalize(torch.cat(parts).mean(0), dim=0))
    assert got.shape == (2, 32)


def test_preprocess_image_pil_and_numpy_agree(tiny) -> None:
    image = Image.new("RGB", (40, 30), (255, 0, 128))
    x = preprocess_image(image, 64, tiny.mean, tiny.std)
    assert x.shape == (3, 64, 64)
    assert torch.equal(x, preprocess_image(np.asarray(image), 64, tiny.mean, tiny.std))
    want = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(tiny.mean)) / torch.tensor(tiny.std)
    torch.testing.assert_close(x[:, 10, 10], want)


def test_normalise_and_upsample() -> None:
    maps = torch.stack([torch.arange(16.0).reshape(4, 4), torch.full((4, 4), 3.0)])
    up = normalise_and_upsample(maps, (30, 20))
    assert up.shape == (2, 30, 20) and torch.isfinite(up).all()
    assert up[0].min() == 0.0 and up[0].max() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(up[1], torch.zeros(30, 20))  # constant map: no information, no NaN


def test_unsupported_models_raise_config_errors(tiny) -> None:
    with pytest.raises(ConfigError, match="ViT"):
        surgery_forward(torch.nn.Linear(2, 2), _images(1, 112))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_vv_blocks"):
        surgery_forward(tiny.model.visual, _images(1, 112), n_vv_blocks=5)


@pytest.mark.slow
@torch.no_grad()
def test_vit_b_16_random_init_at_448() -> None:
    clip = build_clip("ViT-B-16", allow_random=True)
    images = _images(1, 448, seed=4)
    out = surgery_forward(clip.model.visual, images)  # default: last 6 of 12 blocks
    assert out.grid == (28, 28) and out.dense.shape == (1, 784, 512)
    assert out.pooled.shape == (1, 512) and torch.isfinite(out.dense).all()
    native = _images(1, 224, seed=5)
    pooled = surgery_forward(clip.model.visual, native).pooled
    torch.testing.assert_close(pooled, clip.model.encode_image(native), rtol=0, atol=0)
    maps = relevance_maps(clip, Image.open(IMAGE), ["a man", "the bus"])
    assert maps.shape == (2, 28, 28) and torch.isfinite(maps).all()
