"""Frozen foundation models: real SAM weights drive SamPredictor; missing weights name the flag."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from segment_anything import SamPredictor

from pipeline.core.errors import ConfigError
from pipeline.core.hashing import sha256_file
from pipeline.models.frozen import build_clip, build_sam
from pipeline.models.weights import RANDOM_INIT
from tests.helpers import REFER_SAMPLE, SAM_VIT_T

SAM_VIT_T_SHA256 = "4a66351e76d31d10898a3ee089adf58251087f65ad77d727a4ae13ad28730ef2"
REFCOCO = REFER_SAMPLE / "refcoco"
COCO_IMAGES = REFER_SAMPLE / "images" / "mscoco" / "images" / "train2014"
TINY = "ppt-tiny-vit"


def _assert_frozen(model: torch.nn.Module) -> None:
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())


@pytest.fixture(scope="module")
def sam_vit_t():
    if not SAM_VIT_T.is_file():
        pytest.skip(f"{SAM_VIT_T} not present")
    return build_sam("vit_t", SAM_VIT_T)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1024) == hashlib.sha256(data).hexdigest()


def test_tiny_config_is_registered() -> None:
    assert TINY in open_clip.list_models()


# ---------------------------------------------------------------------------------------- SAM


def test_build_sam_vit_t_real_weights_frozen(sam_vit_t) -> None:
    assert sam_vit_t.weights_id == SAM_VIT_T_SHA256
    assert sam_vit_t.real_weights and sam_vit_t.variant == "vit_t"
    assert sam_vit_t.image_size == 1024
    _assert_frozen(sam_vit_t.model)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_sam_vit_t_box_prompt_gives_plausible_masks(sam_vit_t) -> None:
    """A GT box prompt on real RefCOCO referents gives masks that overlap the GT polygon well."""
    coco = json.loads((REFCOCO / "instances.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    predictor = SamPredictor(sam_vit_t.model)
    ious = []
    for image_id in sorted({a["image_id"] for a in coco["annotations"]})[:2]:
        info = images[image_id]
        predictor.set_image(np.asarray(Image.open(COCO_IMAGES / info["file_name"]).convert("RGB")))
        for ann in (a for a in coco["annotations"] if a["image_id"] == image_id):
            x, y, w, h = ann["bbox"]
            masks, scores, _ = predictor.predict(
                box=np.array([x, y, x + w, y + h]), multimask_output=False
            )
            assert masks.shape == (1, info["height"], info["width"]) and np.isfinite(scores).all()
            rles = mask_utils.frPyObjects(ann["segmentation"], info["height"], info["width"])
            gt = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
            pred = masks[0]
            ious.append((pred & gt).sum() / max((pred | gt).sum(), 1))
    assert ious and min(ious) > 0.5 and float(np.mean(ious)) > 0.7, ious


def test_build_sam_without_checkpoint_names_flag() -> None:
    with pytest.raises(ConfigError, match="--sam-checkpoint"):
        build_sam("vit_t")
    with pytest.raises(ConfigError, match="--sam-checkpoint"):
        build_sam("vit_t", Path("/nonexistent/sam.pth"))


def test_build_sam_rejects_unknown_variant_and_wrong_state_dict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--sam "):
        build_sam("vit_xxl", allow_random=True)
    bogus = tmp_path / "bogus.pth"
    torch.save({"not_a_sam_key": torch.zeros(2)}, bogus)
    with pytest.raises(ConfigError, match="--sam-checkpoint"):
        build_sam("vit_t", bogus)


def _offline(*args, **kwargs):
    raise OSError("network unreachable")


def test_build_sam_failed_download_names_flag(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(ConfigError, match="--sam-checkpoint"):
        build_sam("vit_t", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # no half-written checkpoint left behind


def test_build_sam_uses_cached_checkpoint_offline(tmp_path: Path, monkeypatch) -> None:
    if not SAM_VIT_T.is_file():
        pytest.skip(f"{SAM_VIT_T} not present")
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    (tmp_path / "mobile_sam.pt").symlink_to(SAM_VIT_T)  # the name of the official vit_t file
    assert build_sam("vit_t", cache_dir=tmp_path).weights_id == SAM_VIT_T_SHA256


def test_build_sam_random_init_is_stamped_and_deterministic() -> None:
    a, b = build_sam("vit_t", allow_random=True), build_sam("vit_t", allow_random=True)
    assert a.weights_id == RANDOM_INIT and not a.real_weights
    _assert_frozen(a.model)
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name


# --------------------------------------------------------------------------------------- CLIP


def test_build_clip_without_weights_names_flag() -> None:
    with pytest.raises(ConfigError, match="--clip-checkpoint"):
        build_clip(TINY)
    with pytest.raises(ConfigError, match="--clip-checkpoint"):
        build_clip(TINY, checkpoint=Path("/nonexistent/clip.pt"))


def test_build_clip_random_init_is_stamped_frozen_and_deterministic() -> None:
    before = torch.random.get_rng_state()
    clip = build_clip(TINY, allow_random=True)
    assert torch.equal(before, torch.random.get_rng_state())  # caller's RNG untouched
    assert clip.weights_id == RANDOM_INIT and not clip.real_weights
    assert clip.name == TINY and clip.image_size == 112 and len(clip.mean) == len(clip.std) == 3
    _assert_frozen(clip.model)
    tokens = clip.tokenizer(["a dog", ""])
    assert tokens.shape == (2, 77)
    again = build_clip(TINY, allow_random=True)
    assert torch.equal(clip.model.visual.proj, again.model.visual.proj)


def test_build_clip_from_checkpoint_records_sha256(tmp_path: Path) -> None:
    source = build_clip(TINY, allow_random=True).model
    with torch.no_grad():
        source.visual.proj.mul_(3.0)  # differ from the seeded random init
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    clip = build_clip(TINY, checkpoint=path)
    assert clip.weights_id == sha256_file(path) and clip.real_weights
    assert torch.equal(clip.model.visual.proj, source.visual.proj)
    _assert_frozen(clip.model)


def test_build_clip_bad_inputs_raise_config_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="--clip-model"):
        build_clip("no-such-architecture", allow_random=True)
    bogus = tmp_path / "bogus.pt"
    torch.save({"not_a_clip_key": torch.zeros(2)}, bogus)
    with pytest.raises(ConfigError, match="--clip-checkpoint"):
        build_clip(TINY, checkpoint=bogus)
    with pytest.raises(ConfigError, match="not a tag"):
        build_clip("ViT-B-16", pretrained="no-such-tag")
    monkeypatch.setattr(open_clip.factory, "download_pretrained", _offline)
    with pytest.raises(ConfigError, match=r"--clip-checkpoint.*--allow-random-weights"):
        build_clip("ViT-B-16", pretrained="openai", cache_dir=tmp_path)
