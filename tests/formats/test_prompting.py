"""Map → SAM prompts: CLIP Surgery's points, our box + points rule, and one real end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.labelling.grid import agreement, mask_to_grid, upsample_map
from pipeline.labelling.prompting import (
    PROMPT_RULES,
    box_points_prompts,
    box_points_rule,
    clip_surgery_prompts,
    prompt_mask,
)
from pipeline.scoring.metrics import mask_iou
from tests.helpers import REFER_SAMPLE, SAM_VIT_T


def reference_points(
    sm: torch.Tensor, shape: tuple[int, int], t: float = 0.8, down_sample: int = 2
):
    """CLIP Surgery's similarity_map_to_points, transcribed (xmed-lab/CLIP_Surgery clip/clip.py).

    Only change: a stable sort, so that ties are broken as in the implementation under test.
    """
    side = int(sm.shape[0] ** 0.5)
    sm = sm.reshape(1, 1, side, side)
    down_side = side // down_sample
    sm = torch.nn.functional.interpolate(sm, (down_side, down_side), mode="bilinear")[0, 0, :, :]
    h, w = sm.shape
    sm = sm.reshape(-1)
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    rank = sm.sort(dim=0, stable=True)[1]
    scale_h = float(shape[0]) / h
    scale_w = float(shape[1]) / w
    num = min((sm >= t).sum(), sm.shape[0] // 2)
    labels = np.ones(num * 2).astype("uint8")
    labels[num:] = 0
    points = []
    for idx in list(rank[-num:]) + list(rank[:num]):
        x = min((idx % w + 0.5) * scale_w, shape[1] - 1)
        y = min((idx // w + 0.5) * scale_h, shape[0] - 1)
        points.append([int(x.item()), int(y.item())])
    return points, labels


def peak_map() -> np.ndarray:
    """(28, 28): background 0.3, a peak block (rows 4:12, cols 10:18) at 1, a low block at 0."""
    m = np.full((28, 28), 0.3)
    m[4:12, 10:18] = 1.0
    m[20:28, 20:28] = 0.0
    return m


def test_clip_surgery_points_come_from_the_right_cells() -> None:
    h, w = 280, 420  # non-square: cell = 10 × 15 px
    prompts = clip_surgery_prompts(peak_map(), (h, w))
    pos, neg = prompts.points[prompts.labels == 1], prompts.points[prompts.labels == 0]
    assert len(pos) == len(neg) == 16  # 8×8 cells → 4×4 after 2× downsampling, all ≥ 0.8
    assert np.all((pos[:, 1] >= 4 * 10) & (pos[:, 1] < 12 * 10))
    assert np.all((pos[:, 0] >= 10 * 15) & (pos[:, 0] < 18 * 15))
    assert np.all((neg[:, 1] >= 20 * 10) & (neg[:, 0] >= 20 * 15))
    # Point for point the reference, fed the raw (un-normalised) flattened map.
    rng = np.random.default_rng(0)
    for sm in (peak_map(), rng.random((28, 28)), rng.random((32, 32)) ** 4):
        ref_pts, ref_labels = reference_points(
            torch.tensor(sm.reshape(-1), dtype=torch.float32), (h, w)
        )
        ours = clip_surgery_prompts(sm, (h, w))
        np.testing.assert_array_equal(ours.points, np.asarray(ref_pts, dtype=np.float32))
        np.testing.assert_array_equal(ours.labels, ref_labels)


def blob_mask(h: int, w: int) -> np.ndarray:
    """(h, w) ellipse with a rectangular hole, plus a small separate square."""
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - 0.5 * h) / (0.3 * h)) ** 2 + ((xx - 0.45 * w) / (0.3 * w)) ** 2 <= 1
    m[int(0.45 * h) : int(0.55 * h), int(0.40 * w) : int(0.5 * w)] = False  # too small to matter
    m[int(0.05 * h) : int(0.12 * h), int(0.85 * w) : int(0.93 * w)] = True  # stray, less mass
    return m


def test_box_points_prompts_are_consistent_with_the_map() -> None:
    h, w = 300, 400
    gt = blob_mask(h, w)
    rel = mask_to_grid(gt, 28)
    prompts = box_points_prompts(rel, (h, w))
    pts, labels = prompts.points, prompts.labels
    assert pts.shape == (len(labels), 2) and labels.sum() == 3
    assert np.all((pts >= 0) & (pts < [w, h]))
    up = upsample_map(rel, (h, w))
    vals = up[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    assert np.all(vals[labels == 1] >= 0.8) and np.all(vals[labels == 0] <= 0.1)
    assert np.all(gt[pts[labels == 1, 1].astype(int), pts[labels == 1, 0].astype(int)])
    # The box is the ellipse's (the component of largest mass), within half a cell.
    ys, xs = np.nonzero(gt[:, : int(0.8 * w)])
    gt_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert np.abs(prompts.box - gt_box).max() <= 0.5 * max(h, w) / 28
    x0, y0, x1, y1 = prompts.box
    assert np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1))


def test_mask_to_grid_and_agreement() -> None:
    gt = blob_mask(97, 131)  # sizes not divisible by the grid
    grid = mask_to_grid(gt, 28)
    assert grid.shape == (28, 28) and grid.min() >= 0 and grid.max() <= 1 + 1e-9
    cell_area = (97 / 28) * (131 / 28)
    assert grid.sum() * cell_area == pytest.approx(gt.sum())
    np.testing.assert_allclose(mask_to_grid(np.ones((97, 131)), 28), 1.0)
    assert agreement(gt, grid) == pytest.approx(1.0)
    assert agreement(np.zeros_like(gt), grid) == 0.0
    assert 0 < agreement(np.roll(gt, 20, axis=1), grid) < 1


class FakePredictor:
    """Stands in for SamPredictor: fixed multimask outputs, records the calls."""

    def __init__(self, masks: np.ndarray, scores: np.ndarray) -> None:
        self.masks, self.scores, self.calls = masks, scores, []
        self.is_image_set, self.original_size = True, masks.shape[1:]

    def predict(self, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.calls.append(kw)
        return self.masks, self.scores, np.zeros((len(self.masks), 256, 256), np.float32)


def test_box_points_rule_picks_the_mask_the_map_means() -> None:
    h, w = 120, 160
    gt = blob_mask(h, w)
    part = gt & (np.arange(w) < w // 2)  # SAM's "part" candidate, scored higher
    group = np.ones_like(gt)  # SAM's "whole scene" candidate
    fake = FakePredictor(np.stack([part, gt, group]), np.array([0.95, 0.9, 0.8]))
    result = prompt_mask("box_points", mask_to_grid(gt, 28), fake, (h, w))
    assert np.array_equal(result.mask, gt) and result.score == pytest.approx(0.9)
    assert fake.calls[0]["box"] is not None and fake.calls[0]["multimask_output"]
    # A constant map carries no location: empty mask, SAM never called.
    fake.calls.clear()
    empty = box_points_rule(np.full((28, 28), 0.5), fake, (h, w))
    assert not empty.mask.any() and empty.score == 0.0 and not fake.calls


def test_prompt_mask_rejects_bad_input() -> None:
    fake = FakePredictor(np.zeros((3, 10, 12), bool), np.zeros(3))
    with pytest.raises(ValueError, match="choose one of"):
        prompt_mask("nope", np.zeros((28, 28)), fake, (10, 12))
    with pytest.raises(ValueError, match="original"):
        prompt_mask("box_points", np.eye(28), fake, (12, 10))


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["box_points", "clip_surgery"])
def test_real_image_gt_mask_map(rule: str, sam_on_real_image) -> None:
    predictor, gt = sam_on_real_image
    result = prompt_mask(rule, mask_to_grid(gt, 28), predictor, gt.shape)
    assert result.mask.shape == gt.shape and result.mask.dtype == bool
    bound = 0.7 if rule == "box_points" else 0.3
    assert mask_iou(result.mask, gt) > bound
    assert 0 < result.agreement <= 1 and 0 < result.score <= 1.5


@pytest.fixture(scope="module")
def sam_on_real_image():
    """Real vit_t SAM with a refer_sample image set, and one referent's GT mask."""
    if not SAM_VIT_T.exists():
        pytest.skip(f"needs {SAM_VIT_T}")
    from mobile_sam import sam_model_registry
    from PIL import Image
    from pycocotools import mask as mask_utils
    from segment_anything import SamPredictor

    inst = json.loads((REFER_SAMPLE / "refcoco" / "instances.json").read_text())
    ann = inst["annotations"][0]
    im = next(i for i in inst["images"] if i["id"] == ann["image_id"])
    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"]))
    sam = sam_model_registry["vit_t"]()
    sam.load_state_dict(torch.load(SAM_VIT_T, map_location="cpu", weights_only=True))
    predictor = SamPredictor(sam.eval())  # eval() after loading: TinyViT caches attention biases
    image = Image.open(REFER_SAMPLE / "images/mscoco/images/train2014" / im["file_name"]).convert(
        "RGB"
    )
    predictor.set_image(np.asarray(image))
    return predictor, mask_utils.decode(rle).astype(bool)


def test_rules_registry() -> None:
    assert {"clip_surgery", "box_points"} <= set(PROMPT_RULES)
