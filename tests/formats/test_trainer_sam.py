"""The soft-prompt SAM decoder against segment_anything itself, on real MobileSAM weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamPredictor

from pipeline.models.frozen import FrozenSam, build_sam
from tests.helpers import REFER_SAMPLE, SAM_VIT_T
from trainer.network.soft_sam import SoftPromptSam, input_size, lowres_targets, upscale_masks

COCO = REFER_SAMPLE / "images" / "mscoco" / "images" / "train2014"
IMAGES = ("COCO_train2014_000000000025.jpg", "COCO_train2014_000000000154.jpg")  # wide, tall

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"needs the shared weights {SAM_VIT_T}"),
]


@dataclass
class Encoded:
    predictor: SamPredictor
    embedding: torch.Tensor  # (1, 256, 64, 64)
    size: tuple[int, int]  # original (H, W)


@pytest.fixture(scope="module")
def sam() -> FrozenSam:
    return build_sam("vit_t", checkpoint=SAM_VIT_T)


@pytest.fixture(scope="module")
def encoded(sam: FrozenSam) -> list[Encoded]:
    """Each sample image through SamPredictor.set_image (the pipeline's encode stage does this)."""
    out = []
    for name in IMAGES:
        image = np.asarray(Image.open(COCO / name).convert("RGB"))
        predictor = SamPredictor(sam.model)
        predictor.set_image(image)
        out.append(Encoded(predictor, predictor.features.clone(), image.shape[:2]))
    return out


def random_prompts(k: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, K, M, 2) points in [0, 1] and (1, K, M) hard labels in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, k, m, 2, generator=g), (torch.rand(1, k, m, generator=g) > 0.5).float()


def hard_logits(labels: torch.Tensor) -> torch.Tensor:
    return torch.where(labels > 0, torch.inf, -torch.inf)  # sigmoid → exactly 1 / 0


def test_hard_labels_equal_sam_predictor(sam: FrozenSam, encoded: list[Encoded]) -> None:
    soft = SoftPromptSam(sam)
    for i, enc in enumerate(encoded):
        points, labels = random_prompts(k=4, m=5, seed=i)
        h, w = enc.size
        pixels = points[0] * torch.tensor([w, h])  # (K, M, 2) original pixels
        coords = enc.predictor.transform.apply_coords_torch(pixels, enc.size)
        with torch.no_grad():
            ref_sparse, _ = sam.model.prompt_encoder((coords, labels[0]), None, None)
            _, ref_iou, ref_low = enc.predictor.predict_torch(
                coords, labels[0], multimask_output=False, return_logits=True
            )
            sizes = torch.tensor([enc.size])
            sparse = soft.embed_points(points, hard_logits(labels), sizes)
            low, iou = soft(enc.embedding, points, hard_logits(labels), sizes)
        # differences only from float rounding of the coordinate transform (x·W' vs x·W·W'/W)
        torch.testing.assert_close(sparse, ref_sparse, atol=1e-5, rtol=0)
        torch.testing.assert_close(low[0], ref_low[:, 0], atol=2e-4, rtol=1e-5)
        torch.testing.assert_close(iou[0], ref_iou[:, 0], atol=1e-5, rtol=1e-5)


def test_batch_equals_single_images(sam: FrozenSam, encoded: list[Encoded]) -> None:
    soft = SoftPromptSam(sam)
    g = torch.Generator().manual_seed(5)
    points, logits = torch.rand(2, 3, 4, 2, generator=g), torch.randn(2, 3, 4, generator=g)
    embeddings = torch.cat([e.embedding for e in encoded])  # (2, 256, 64, 64)
    sizes = torch.tensor([e.size for e in encoded])
    with torch.no_grad():
        low, iou = soft(embeddings, points, logits, sizes)
        for b in range(2):
            one = slice(b, b + 1)
            single = soft(embeddings[one], points[one], logits[one], sizes[one])
            torch.testing.assert_close(low[b], single[0][0])
            torch.testing.assert_close(iou[b], single[1][0])


def test_gradients_reach_points_not_sam(sam: FrozenSam, encoded: list[Encoded]) -> None:
    soft = SoftPromptSam(sam).train()
    assert not soft.prompt_encoder.training and not soft.mask_decoder.training
    points, labels = random_prompts(k=2, m=3, seed=9)
    points.requires_grad_(True)
    logits = (labels * 4 - 2).requires_grad_(True)  # soft labels: sigmoid(±2)
    enc = encoded[0]
    target = lowres_targets(torch.zeros(1, *enc.size).index_fill_(1, torch.arange(100, 300), 1.0))
    low, iou = soft(enc.embedding, points, logits, torch.tensor([enc.size]))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(low, target.expand_as(low))
    (loss + iou.sum()).backward()
    assert points.grad is not None and points.grad.abs().min() > 0  # every coordinate
    assert logits.grad is not None and logits.grad.abs().min() > 0
    assert all(p.grad is None and not p.requires_grad for p in sam.model.parameters())
    assert sum(p.numel() for p in soft.parameters() if p.requires_grad) == 0


def test_lowres_targets_and_upscale_share_sams_frame(sam: FrozenSam) -> None:
    h, w = 300, 500  # resized to (614, 1024): valid low-res rows 0..153.5
    full = lowres_targets(torch.ones(1, h, w))[0]  # (256, 256)
    rows = input_size((h, w))[0] / 4
    assert full.shape == (256, 256)
    assert (full[: int(rows)] == 1).all() and (full[int(rows) + 1 :] == 0).all()
    left = torch.zeros(1, h, w)
    left[:, :, : w // 2] = 1
    logits = lowres_targets(left) * 20 - 10  # confident logits of the left half
    back = upscale_masks(sam, logits, (h, w))[0] > 0  # (H, W)
    assert back.shape == (h, w)
    assert (back == left[0].bool()).float().mean() > 0.99
