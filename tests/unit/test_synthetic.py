"""The synthetic refer-layout world: formats, determinism, unambiguous sentences, atomicity, and
(with parts, overlap and textures, its defaults) visible-area ground truth and phrase truth."""

from __future__ import annotations

import json
import pickle
import pickletools
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

import pipeline.data.synthetic.generator as synthetic
from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.synthetic.expressions import Expression, describe
from pipeline.data.synthetic.generator import (
    SyntheticConfig,
    from_params,
    generate_synthetic,
    plan_dataset,
)
from pipeline.data.synthetic.scenes import (
    COLOURS,
    SHAPES,
    Scene,
    SceneObject,
    polygon_area,
    shape_polygon,
)

# pycocotools' decode still passes copy=False to numpy 2; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Easy scenes (no parts, no overlap): every shape's pixels are exactly its polygon's.
SMALL = SyntheticConfig(n_images=12, seed=5, part_prob=0.0, overlap_prob=0.0, n_object_images=4)
REF_KEYS = {"sent_ids", "file_name", "ann_id", "ref_id", "image_id", "split", "sentences",
            "category_id"}  # fmt: skip
SENT_KEYS = {"tokens", "raw", "sent", "sent_id"}


def files(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def obj(shape: str, colour: str, cx: float, cy: float, r: float = 20.0) -> SceneObject:
    poly = shape_polygon(shape, cx, cy, r, 0.0)
    return SceneObject(shape, colour, cx, cy, r, poly, polygon_area(poly))


def satisfying(e: Expression, scene: Scene) -> list[int]:
    """Objects that arguably satisfy e (the referent must also satisfy it clearly)."""
    return [i for i in range(len(scene.objects)) if e.holds(scene, i, strict=False)]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_small")
    generate_synthetic(root, SMALL)
    return root


def test_same_config_gives_identical_bytes(tmp_path: Path, small_root: Path) -> None:
    again = generate_synthetic(tmp_path / "again", SMALL)
    assert not again.reused
    assert files(tmp_path / "again") == files(small_root)
    other = generate_synthetic(
        tmp_path / "other", SyntheticConfig(n_images=12, seed=6, n_object_images=4)
    )
    assert (
        files(tmp_path / "other")["synthetic/instances.json"]
        != files(small_root)["synthetic/instances.json"]
    )
    assert other.n_images == 12


def test_refs_pickle_is_plain_refer_format(small_root: Path) -> None:
    raw = (small_root / "synthetic" / "refs(unc).p").read_bytes()
    # A restricted unpickler accepts it: no globals, no object construction.
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ"}
    with (small_root / "synthetic" / "refs(unc).p").open("rb") as f:
        refs = pickle.load(f)
    coco = json.loads((small_root / "synthetic" / "instances.json").read_text())
    anns = {a["id"]: a for a in coco["annotations"]}
    images = {im["id"]: im for im in coco["images"]}
    assert len(refs) > 0
    for key in ("ref_id", "ann_id"):
        assert len({r[key] for r in refs}) == len(refs)
    sent_ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    assert len(set(sent_ids)) == len(sent_ids)
    for r in refs:
        assert set(r) == REF_KEYS
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        assert all(set(s) == SENT_KEYS and s["tokens"] == s["raw"].split() for s in r["sentences"])
        assert anns[r["ann_id"]]["image_id"] == r["image_id"]
        assert anns[r["ann_id"]]["category_id"] == r["category_id"]
        assert (
            r["file_name"] == f"{Path(images[r['image_id']]['file_name']).stem}_{r['ann_id']}.png"
        )
    # The written sentences are exactly the planned, checked ones.
    planned = [t for p in plan_dataset(SMALL) for j in sorted(p.refs) for _, t in p.refs[j]]
    assert [s["raw"] for r in refs for s in r["sentences"]] == planned


def test_polygons_match_rendered_pixels(small_root: Path) -> None:
    coco = json.loads((small_root / "synthetic" / "instances.json").read_text())
    assert {c["name"] for c in coco["categories"]} == set(SHAPES)
    assert len({im["id"] for im in coco["images"]}) == len(coco["images"]) == SMALL.n_images
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        assert a["iscrowd"] == 0 and len(a["bbox"]) == 4 and a["area"] > 0
        by_image.setdefault(a["image_id"], []).append(a)
    n_checked = 0
    for p, im in zip(plan_dataset(SMALL), coco["images"], strict=True):
        image = Image.open(small_root / "images" / "synthetic" / im["file_name"])
        assert image.mode == "RGB" and image.size == (im["width"], im["height"])
        pixels = np.asarray(image)
        objects = np.zeros(pixels.shape[:2], bool)
        yy, xx = np.mgrid[0 : im["height"], 0 : im["width"]]
        for o, a in zip(p.scene.objects, by_image[im["id"]], strict=True):
            rle = mask_utils.merge(
                mask_utils.frPyObjects(a["segmentation"], im["height"], im["width"])
            )
            gt = mask_utils.decode(rle).astype(bool)
            # Objects never overlap, so the pixels of its colour near its centre are the object.
            near = (xx - o.cx) ** 2 + (yy - o.cy) ** 2 <= (o.radius + 3) ** 2
            drawn = (pixels == COLOURS[o.colour]).all(-1) & near
            assert np.array_equal(gt, drawn), a["id"]  # painted through the same rasteriser
            assert abs(float(mask_utils.area(rle)) - a["area"]) / a["area"] < 0.1
            objects |= gt
            n_checked += 1
        assert pixels[~objects].std(axis=0).min() > 5  # a textured background, not a flat one
    assert n_checked == len(coco["annotations"]) > SMALL.n_images


def test_every_sentence_is_unambiguous_and_names_the_class() -> None:
    n_refs = 0
    for seed in range(25):
        for p in plan_dataset(SyntheticConfig(n_images=40, seed=seed)):
            for j, sentences in p.refs.items():
                n_refs += 1
                o = p.scene.objects[j]
                assert sentences, "objects without expressions must not become refs"
                for e, text in sentences:
                    assert e.holds(p.scene, j, strict=True), text
                    assert satisfying(e, p.scene) == [j], text
                    assert o.shape in text.split(), text
                    assert text in {e.text(w) for w in range(3)}
                assert len({t for _, t in sentences}) == len(sentences)
                assert sentences[0][0].complexity == min(e.complexity for e, _ in sentences)
    assert n_refs > 2500


def test_predicates_reject_ambiguous_descriptions() -> None:
    # Two red circles and a blue square between them on one row.
    scene = Scene(256, 256, (obj("circle", "red", 40, 128), obj("circle", "red", 216, 128),
                             obj("square", "blue", 128, 128)))  # fmt: skip
    assert satisfying(Expression("circle", "red"), scene) == [0, 1]
    assert not Expression("circle", "red").refers_to(scene, 0)
    left = Expression("circle", "red", "extreme", "left")
    assert left.refers_to(scene, 0) and not left.refers_to(scene, 1)
    right_of = Expression("circle", None, "relation", "right of", ("square", "blue"))
    assert right_of.refers_to(scene, 1) and satisfying(right_of, scene) == [1]
    assert not Expression("circle", None, "relation", "above", ("square", None)).refers_to(scene, 0)
    for e, text in describe(scene, 0, np.random.default_rng(0), 4):
        assert e.kind != "plain" and e.refers_to(scene, 0), text
    # Nearly the same x: "on the left" would be a guess, so it is never said.
    close = Scene(256, 256, (obj("star", "green", 60, 50), obj("star", "green", 66, 200)))
    assert not any(Expression("star", None, "extreme", "left").refers_to(close, i) for i in (0, 1))
    assert Expression("star", None, "extreme", "top").refers_to(close, 0)
    # Alone in its class, a shape on the right is never "the ... on the left".
    alone = Scene(256, 256, (obj("triangle", "red", 200, 128), obj("circle", "red", 40, 128)))
    assert not Expression("triangle", None, "extreme", "left").refers_to(alone, 0)
    assert Expression("triangle", None, "extreme", "right").refers_to(alone, 0)


def test_scenes_have_distractors_relations_and_all_splits() -> None:
    plans = plan_dataset(SyntheticConfig())
    refs = [(p, j) for p in plans for j in p.refs]
    shared = [
        any(q.shape == p.scene.objects[j].shape or q.colour == p.scene.objects[j].colour
            for k, q in enumerate(p.scene.objects) if k != j)
        for p, j in refs
    ]  # fmt: skip
    assert np.mean(shared) > 0.75  # about 0.58 if shapes drew class and colour independently
    kinds = {e.kind for p, j in refs for e, _ in p.refs[j]}
    assert kinds == {"plain", "extreme", "size", "region", "relation"}
    n_phrases = [e.n_noun_phrases for p, j in refs for e, _ in p.refs[j]]
    assert 0.05 < np.mean(np.array(n_phrases) == 2) < 0.95
    for p, j in refs:
        for e, text in p.refs[j]:
            if e.n_noun_phrases == 2:
                assert sum(w in SHAPES for w in text.split()) == 2, text
    assert len(refs) >= 0.9 * sum(len(p.scene.objects) for p in plans)
    assert {p.split for p, _ in refs} == {"train", "val", "test"}
    assert sum(p.split == "train" for p in plans) == 84  # 70% of 120 images
    assert sorted(p.split for p in plan_dataset(SyntheticConfig(n_images=3))) == [
        "test",
        "train",
        "val",
    ]
    assert {o.colour for p in plans for o in p.scene.objects} == set(COLOURS)
    assert {o.shape for p in plans for o in p.scene.objects} == set(SHAPES)


def test_complete_dataset_is_reused_and_other_config_replaces_it(tmp_path: Path) -> None:
    first = generate_synthetic(tmp_path, SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    start = time.perf_counter()
    again = generate_synthetic(tmp_path, SMALL)
    assert again.reused and time.perf_counter() - start < 0.5
    assert (again.n_refs, again.refs_per_split) == (first.n_refs, first.refs_per_split)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == stamps
    # A missing image makes the dataset incomplete: it is regenerated.
    next((tmp_path / "images" / "synthetic").glob("*.png")).unlink()
    assert not generate_synthetic(tmp_path, SMALL).reused
    other = SyntheticConfig(n_images=5, seed=1, n_object_images=2)
    assert not generate_synthetic(tmp_path, other).reused
    assert len(list((tmp_path / "images" / "synthetic").glob("*.png"))) == 5
    marker = json.loads((tmp_path / "synthetic" / "config.json").read_text())
    assert marker["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "images",
        "synthetic",
        "synthetic-objects",
    ]


def test_interrupted_run_leaves_the_old_dataset_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_synthetic(tmp_path, SMALL)
    before = files(tmp_path)
    calls = []

    def crash(*args: object) -> Image.Image:
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("killed")
        return Image.new("RGB", (8, 8))

    monkeypatch.setattr(synthetic, "render_scene", crash)
    with pytest.raises(RuntimeError):
        generate_synthetic(tmp_path, SyntheticConfig(n_images=12, seed=9))
    assert files(tmp_path) == before  # no temp folder left, nothing half-replaced
    with pytest.raises(RuntimeError):
        generate_synthetic(tmp_path / "fresh", SMALL)
    assert list((tmp_path / "fresh").iterdir()) == []


def test_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "mine.txt").write_text("keep")
    with pytest.raises(DatasetError, match=r"config\.json"):
        generate_synthetic(tmp_path, SMALL)
    assert (tmp_path / "synthetic" / "mine.txt").read_text() == "keep"


def test_from_params_validates() -> None:
    assert from_params({"n_images": 7, "seed": 2}) == SyntheticConfig(n_images=7, seed=2)
    assert from_params({}) == SyntheticConfig()
    with pytest.raises(ConfigError, match="n_imgs"):
        from_params({"n_imgs": 7})
    with pytest.raises(ConfigError, match="n_images"):
        from_params({"n_images": "many"})
    with pytest.raises(ConfigError, match="sum to 1"):
        from_params({"train_frac": 0.9})
    with pytest.raises(ConfigError, match="min_objects"):
        from_params({"min_objects": 6, "max_objects": 3})
