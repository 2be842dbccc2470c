"""Composites: transformed pseudo-labels are exact, expressions true and unambiguous, bytes stable.

Sources are small synthetic ellipses on noise with exact masks, plus a few real ImageNet sample
images whose centred-ellipse masks are test fixtures standing in for pseudo-labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.core.config import from_section
from pipeline.core.errors import ConfigError
from pipeline.core.rle import encode_rle
from pipeline.labelling.composites.plan import GRIDS, CompositeConfig, plan_composites
from pipeline.labelling.composites.render import (
    Composite,
    SourceObject,
    decode,
    make_fusion,
    make_mosaic,
    render_composite,
    tiles,
)
from pipeline.labelling.composites.text import ABSOLUTE, ExpressionSpec, centre, satisfies
from pipeline.labelling.points import sample_points
from tests.helpers import (
    IMAGENET_SAMPLES,
    assert_words_match_geometry,
    boundary_pixels,
    check_labels,
)


def make_source(sample_id: str, image: np.ndarray, mask: np.ndarray, name: str) -> SourceObject:
    """A source with the points stage's own point draw (16 points in the box, mask labels)."""
    counts, bbox = encode_rle(mask)
    rng = np.random.default_rng(len(sample_id))
    pts = [(p["x"], p["y"], p["label"]) for p in sample_points(mask, bbox, 16, rng)]
    return SourceObject(sample_id, image, counts, name, pts)


def ellipse_mask(h: int, w: int, cy: float, cx: float, ay: float, ax: float) -> np.ndarray:
    """(h, w) bool ellipse; centre and semi-axes as fractions of h, w."""
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy * h) / (ay * h)) ** 2 + ((xx - cx * w) / (ax * w)) ** 2 <= 1


def synthetic_source(rng: np.random.Generator, sample_id: str, name: str) -> SourceObject:
    """A coloured ellipse on noise, 64–128 px, with its exact mask."""
    h, w = (int(v) for v in rng.integers(64, 129, size=2))
    mask = ellipse_mask(h, w, *rng.uniform(0.3, 0.7, 2), *rng.uniform(0.15, 0.4, 2))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[mask] = rng.integers(0, 256, 3, dtype=np.uint8)
    return make_source(sample_id, image, mask, name)


def sources(seed: int, n: int, names: tuple[str, ...] = ("cat", "dog")) -> list[SourceObject]:
    """n synthetic sources; few class names, so same-class objects (ambiguity) are common."""
    rng = np.random.default_rng(seed)
    return [synthetic_source(rng, f"s{i}", names[int(rng.integers(len(names)))]) for i in range(n)]


def scaled_mask(src: SourceObject, box: tuple[int, int, int, int], hw: tuple[int, int]):
    """The source mask resized (nearest) into `box` of an empty (H, W) canvas, recomputed here."""
    x, y, w, h = box
    small = decode(src.mask_rle, src.image.shape[:2]).astype(np.uint8)
    out = np.zeros(hw, bool)
    out[y : y + h, x : x + w] = np.asarray(Image.fromarray(small).resize((w, h), Image.NEAREST))
    return out


@pytest.mark.parametrize("size", [(448, 448), (200, 300), (97, 131)])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_mosaic_masks_keep_their_scaled_area(grid: str, size: tuple[int, int]) -> None:
    # Bound, measured over 2,700 objects at these canvas sizes: nearest-neighbour resampling
    # moves at most 0.44 × the transformed mask's boundary pixels (≤ 1.9% of the area at 448²,
    # ≤ 6% on tiny 97×131 canvases); the test allows half the boundary plus 2 pixels.
    cfg = CompositeConfig(out_size=size)
    rng = np.random.default_rng(7)
    for trial in range(20):
        srcs = sources(trial, GRIDS[grid][0] * GRIDS[grid][1])
        comp = make_mosaic(srcs, grid, cfg, rng)
        if comp is None:
            continue
        check_labels(comp, cfg.position_margin)
        for obj, src, tile in zip(comp.objects, srcs, tiles(grid, size), strict=True):
            x, y, w, h = obj.paste_box
            tx, ty, tw, th = tile
            assert tx <= x and ty <= y and x + w <= tx + tw and y + h <= ty + th
            mask = decode(obj.mask_rle, obj.size)
            src_mask = decode(src.mask_rle, src.image.shape[:2])
            expected = src_mask.sum() * (w * h) / src_mask.size
            assert abs(mask.sum() - expected) <= 0.5 * boundary_pixels(mask) + 2
            assert np.array_equal(mask, scaled_mask(src, obj.paste_box, size))
            assert len(obj.points) == len(src.points)  # letterboxing crops nothing


def test_fusion_host_is_scaled_mask_minus_inset() -> None:
    cfg = CompositeConfig(out_size=(160, 200))
    made = 0
    for trial in range(40):
        host, inset = sources(100 + trial, 2)
        comp = make_fusion(host, inset, cfg, np.random.default_rng(trial))
        if comp is None:
            continue
        made += 1
        check_labels(comp, cfg.relation_margin)
        host_obj, inset_obj = comp.objects
        x, y, w, h = inset_obj.paste_box
        expected = scaled_mask(host, host_obj.paste_box, cfg.out_size)
        expected[y : y + h, x : x + w] = False
        assert np.array_equal(decode(host_obj.mask_rle, host_obj.size), expected)
        inset_mask = scaled_mask(inset, inset_obj.paste_box, cfg.out_size)
        assert np.array_equal(decode(inset_obj.mask_rle, inset_obj.size), inset_mask)
        _, _, hw, hh = host_obj.paste_box
        assert max(w / hw, h / hh) <= cfg.fusion_scale[1] + 0.02
    assert made >= 20


def test_fusion_drops_a_host_the_inset_hides() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    host = make_source("host", image, ellipse_mask(100, 100, 0.5, 0.5, 0.1, 0.1), "cat")
    inset = synthetic_source(rng, "inset", "dog")
    cfg = CompositeConfig(out_size=128)
    assert make_fusion(host, inset, cfg, rng, placement="center", scale=0.5) is None
    assert make_fusion(host, inset, cfg, rng, placement="top_left", scale=0.3) is not None


def test_same_class_mosaic_names_quadrants() -> None:
    cfg = CompositeConfig(out_size=256)
    srcs = sources(3, 4, names=("cat",))
    for referent in range(4):
        comp = make_mosaic(srcs, "2x2", cfg, np.random.default_rng(referent), referent)
        assert comp is not None
        assert comp.expression_spec.relation in {
            "top left",
            "top right",
            "bottom left",
            "bottom right",
        }
        assert comp.expression == ABSOLUTE[comp.expression_spec.relation].format(subject="cat")


def test_satisfies_counts_near_middle_objects_as_ambiguous() -> None:
    comp = make_mosaic(
        sources(5, 2, names=("cat",)), "1x2", CompositeConfig(), np.random.default_rng(0), 0
    )
    assert comp is not None
    left = comp.objects[0]
    spec = ExpressionSpec("left", "cat")
    assert satisfies(spec, comp.objects, 0.05) == [0]
    assert satisfies(spec, comp.objects, 0.6) == [0, 1]  # both loosely "left": not emittable
    assert satisfies(ExpressionSpec("left", "dog"), comp.objects, 0.05) == []
    assert centre(left)[0] < 0.5


def solid_source(sample_id: str, rgb: tuple[int, int, int], name: str) -> SourceObject:
    """An ellipse of one colour on uniform noise, 96 x 96."""
    rng = np.random.default_rng(len(sample_id))
    mask = ellipse_mask(96, 96, 0.5, 0.5, 0.35, 0.3)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    image[mask] = rgb
    return make_source(sample_id, image, mask, name)


def test_colour_words_tell_same_class_tiles_apart() -> None:
    red, blue = solid_source("a", (210, 30, 40), "cat"), solid_source("bb", (30, 60, 210), "cat")
    plain = CompositeConfig(out_size=128)
    coloured = CompositeConfig(out_size=128, colour_words=True)
    seen = set()
    for seed in range(12):
        comp = make_mosaic([red, blue], "1x2", coloured, np.random.default_rng(seed), 0)
        assert comp is not None
        assert [o.colour for o in comp.objects] == ["red", "blue"]
        assert comp.expression in ("the red cat on the left", "the red cat")
        check_labels(comp, coloured.position_margin)
        assert_words_match_geometry(comp, coloured.position_margin)
        seen.add(comp.expression)
    assert seen == {"the red cat on the left", "the red cat"}  # both options are drawn
    comp = make_mosaic([red, blue], "1x2", plain, np.random.default_rng(0), 0)
    assert comp is not None and comp.expression == "the cat on the left"
    assert [o.colour for o in comp.objects] == [None, None]
    # two red cats: the colour does not tell them apart, so no "plain" expression
    twin = solid_source("ccc", (220, 40, 30), "cat")
    for seed in range(6):
        comp = make_mosaic([red, twin], "1x2", coloured, np.random.default_rng(seed), 1)
        assert comp is not None and comp.expression == "the red cat on the right"
    fusion = make_fusion(blue, red, coloured, np.random.default_rng(0), "center", 0.4, 1)
    assert fusion is not None
    assert fusion.expression in ("the red cat in front of the blue cat",)
    check_labels(fusion, coloured.relation_margin)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_expressions_agree_with_geometry(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = CompositeConfig(
        out_size=(int(rng.integers(96, 200)), int(rng.integers(96, 200))),
        colour_words=bool(seed % 2),  # odd seeds: colour words (random colours, some unnamed)
    )
    grid = list(GRIDS)[seed % 3]
    srcs = sources(seed, 4)
    mosaic = make_mosaic(srcs[: GRIDS[grid][0] * GRIDS[grid][1]], grid, cfg, rng)
    fusion = make_fusion(srcs[0], srcs[1], cfg, rng)
    for comp, margin in ((mosaic, cfg.position_margin), (fusion, cfg.relation_margin)):
        if comp is not None:
            check_labels(comp, margin)
            assert_words_match_geometry(comp, margin)


def fingerprint(comp: Composite | None) -> tuple:
    """Everything a composite writes, as comparable bytes."""
    if comp is None:
        return (None,)
    objs = tuple((o.mask_rle, o.bbox, o.points, o.referent, o.paste_box) for o in comp.objects)
    return comp.image.tobytes(), comp.expression, comp.referent_index, objs


def test_plan_and_render_are_deterministic() -> None:
    pool = {s.sample_id: s for s in sources(11, 8)}
    cfg = CompositeConfig(out_size=128, n_mosaic=12, n_fusion=12, seed=4)
    plan = plan_composites(list(pool), cfg)
    assert plan == plan_composites(list(reversed(pool)), cfg)  # input order does not matter
    assert [s.kind for s in plan] == ["mosaic"] * 12 + ["fusion"] * 12
    fewer = plan_composites(
        list(pool), CompositeConfig(out_size=128, n_mosaic=12, n_fusion=3, seed=4)
    )
    assert fewer == plan[:15]  # each kind draws from its own stream
    assert plan != plan_composites(list(pool), CompositeConfig(n_mosaic=12, n_fusion=12, seed=5))
    first = [fingerprint(render_composite(s, pool.__getitem__, cfg)) for s in plan]
    again = [fingerprint(render_composite(s, pool.__getitem__, cfg)) for s in plan]
    assert first == again
    assert sum(f != (None,) for f in first) >= 18


def test_plan_refuses_too_few_sources() -> None:
    with pytest.raises(ValueError, match="too few"):
        plan_composites(["a"], CompositeConfig(n_mosaic=0, n_fusion=1))
    with pytest.raises(ValueError, match="unique"):
        plan_composites(["a", "a"], CompositeConfig())
    specs = plan_composites(["a", "b"], CompositeConfig(n_mosaic=5, n_fusion=0))
    assert {s.layout for s in specs} <= {"1x2", "2x1"}  # 2x2 needs four sources


def test_config_from_params() -> None:
    cfg = from_section(CompositeConfig, {"out_size": 320, "grids": ["2x2"]}, "augment")
    assert cfg.out_size == (320, 320) and cfg.grids == ("2x2",)
    with pytest.raises(ConfigError, match="3x3"):
        from_section(CompositeConfig, {"grids": ["3x3"]}, "augment")
    with pytest.raises(ConfigError, match="fusion_scale"):
        from_section(CompositeConfig, {"fusion_scale": [0.5, 1.2]}, "augment")


def test_real_imagenet_images() -> None:
    # The centred ellipse is a test fixture standing in for a pseudo-mask, not a pseudo-label.
    classes = json.loads((IMAGENET_SAMPLES / "classes.json").read_text())[:4]
    srcs = []
    for entry in classes:
        image = np.asarray(Image.open(IMAGENET_SAMPLES / entry["file"]).convert("RGB"))
        mask = ellipse_mask(*image.shape[:2], 0.5, 0.5, 0.3, 0.3)
        srcs.append(make_source(entry["wnid"], image, mask, entry["openclip_name"]))
    cfg = CompositeConfig()
    rng = np.random.default_rng(0)
    mosaic = make_mosaic(srcs, "2x2", cfg, rng, referent=3)
    assert mosaic is not None and mosaic.image.shape == (448, 448, 3)
    check_labels(mosaic, cfg.position_margin)
    assert mosaic.expression.startswith(f"the {classes[3]['openclip_name']} ")
    fusion = make_fusion(
        srcs[0], srcs[1], cfg, rng, placement="bottom_right", scale=0.4, referent=1
    )
    assert fusion is not None
    check_labels(fusion, cfg.relation_margin)
    assert fusion.expression.startswith(f"the {classes[1]['openclip_name']} ")
