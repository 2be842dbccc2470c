"""Map → SAM prompts: CLIP Surgery's points, our box + points rule on SAM's low-res frame against
the full-size reference, the batched decoder against SAM's own predictor, and real end-to-end runs.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.labelling.grid import Frame, agreement, mask_to_grid, normalize_map, upsample_map
from pipeline.labelling.map_prompts import box_points_prompts, clip_surgery_prompts
from pipeline.labelling.prompting import PROMPT_RULES, prompt_mask, prompt_masks
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
    prompts = clip_surgery_prompts(peak_map(), Frame.of((h, w)))
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
        ours = clip_surgery_prompts(sm, Frame.of((h, w)))
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
    prompts = box_points_prompts(rel, Frame.of((h, w)))
    pts, labels = prompts.points, prompts.labels
    assert pts.shape == (len(labels), 2) and labels.sum() == 3
    assert np.all((pts >= 0) & (pts < [w, h]))
    up = upsample_map(rel, (h, w))
    vals = up[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    # Points are frame pixel centres (map ≥ 0.8 / ≤ 0.1 there); the image pixel holding one is
    # within half a frame pixel of it.
    assert np.all(vals[labels == 1] >= 0.78) and np.all(vals[labels == 0] <= 0.12)
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
    """Stands in for a SamPredictor with an image set; only `prompt_mask`'s checks read it."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.is_image_set, self.original_size = True, size


def test_a_constant_map_gives_an_empty_mask_without_sam() -> None:
    fake = FakePredictor((10, 12))  # no model: any decoder call would fail
    (result,) = prompt_masks("box_points", [np.full((28, 28), 0.5)], fake, (10, 12))
    assert result.mask.shape == (10, 12) and not result.mask.any() and result.score == 0.0


def test_prompt_mask_rejects_bad_input() -> None:
    fake = FakePredictor((10, 12))
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


@functools.cache
def refer_maps() -> list[tuple[str, np.ndarray, tuple[int, int]]]:
    """(kind, (28, 28) map, image (H, W)) for every annotation of the refer_sample images: its
    gt-mask and gt-box maps and the gt-mask map blurred and noised (a crude CLIP stand-in)."""
    from pycocotools import mask as mask_utils

    anns, images = {}, {}
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        inst = json.loads((REFER_SAMPLE / dataset / "instances.json").read_text())
        images.update({im["id"]: im for im in inst["images"]})
        anns.update({a["id"]: a for a in inst["annotations"]})
    out = []
    for ann_id, ann in sorted(anns.items()):
        im = images[ann["image_id"]]
        h, w = im["height"], im["width"]
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
        gt_map = mask_to_grid(mask_utils.decode(rle), 28)
        x, y, bw, bh = (round(v) for v in ann["bbox"])
        box = np.zeros((h, w), bool)
        box[y : y + bh, x : x + bw] = True
        blurred = ndimage.gaussian_filter(gt_map, 1.5)
        noise = np.random.default_rng(ann_id).random(gt_map.shape)
        out += [("gt-mask", gt_map, (h, w)), ("gt-box", mask_to_grid(box, 28), (h, w))]
        out.append(("noisy", blurred / blurred.max() + 0.3 * noise, (h, w)))
    return out


def full_size_region_box(relevance: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference: box_points' box as version 1 built it, on the full-size upsampled map."""
    r = normalize_map(relevance)
    t = torch.as_tensor(r, dtype=torch.float32)[None, None]
    up = torch.nn.functional.interpolate(t, size=size, mode="bilinear")[0, 0].numpy()  # (H, W)
    region = up >= min(0.5, float(up.max()))
    comps, n = ndimage.label(region)
    mass = ndimage.sum(up, comps, index=np.arange(1, n + 1))
    ys, xs = np.nonzero(comps == int(np.argmax(mass)) + 1)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def test_frame_prompts_match_the_full_size_reference() -> None:
    """Prompts built on SAM's low-res frame: the box is the full-size one to the pixel on oracle
    maps (where SAM follows the box most), the points are where the full-size map puts them."""
    diffs: dict[str, list[float]] = {"gt-mask": [], "gt-box": [], "noisy": []}
    for kind, grid_map, size in refer_maps():
        r = normalize_map(grid_map)
        prompts = box_points_prompts(r, Frame.of(size))
        diffs[kind].append(np.abs(prompts.box - full_size_region_box(grid_map, size)).max())
        up = upsample_map(r, size)  # (H, W) full size: the map the points must agree with
        x, y = prompts.points[:, 0].astype(int), prompts.points[:, 1].astype(int)
        pos = prompts.labels == 1
        assert pos.sum() >= 1 and np.all(up[y[pos], x[pos]] >= 0.75)
        assert np.all(up[y[~pos], x[~pos]] <= 0.15)
    assert max(diffs["gt-mask"] + diffs["gt-box"]) <= 1.0, diffs
    # A noisy map's region may split or join differently on the frame; most boxes still agree.
    assert np.median(diffs["noisy"]) <= 1.0, diffs["noisy"]


def test_batched_masks_are_sams_own(sam_on_real_image) -> None:
    """One decoder batch for the maps of an image (two prompt shapes here) gives, per map, the
    mask and score SAM's own predictor gives for the same prompts, and the output the rule would
    choose at full size."""
    predictor, gt = sam_on_real_image
    size = gt.shape
    maps = [m for kind, m, s in refer_maps() if s == size and kind != "gt-box"][:2]
    results = prompt_masks("box_points", maps, predictor, size)
    assert len({len(r.prompts.labels) for r in results}) == 2  # two decoder calls, both checked
    for grid_map, ours in zip(maps, results, strict=True):
        p = ours.prompts
        masks, scores, _ = predictor.predict(
            point_coords=p.points, point_labels=p.labels, box=p.box, multimask_output=True
        )  # (3, H, W), (3,): SamPredictor, one prompt, full size
        j = int(np.argmin(np.abs(scores - ours.score)))
        assert scores[j] == pytest.approx(ours.score, abs=1e-4)
        assert mask_iou(masks[j], ours.mask) >= 0.999
        r = normalize_map(grid_map)
        full = np.array([agreement(m, r) for m in masks])  # (3,) full-size agreement
        assert abs(full[j] - ours.agreement) <= 0.02
        assert full[j] + scores[j] >= (full + scores).max() - 0.02  # the rule's choice
