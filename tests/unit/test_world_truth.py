"""The hard synthetic world: visible-area ground truth with parts and overlap, the object-centric
set, and phrase ground truth (spans and denotations) checked on hand-made scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.refer import decode_segmentation
from pipeline.data.synthetic.expressions import Expression, noun_phrases
from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic
from pipeline.data.synthetic.scenes import (
    COLOURS,
    Part,
    Scene,
    SceneObject,
    polygon_area,
    polygon_mask,
    shape_polygon,
    visible_masks,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
HARD = SyntheticConfig(n_images=30, seed=7, n_object_images=6)


def obj(shape: str, colour: str, cx: float, cy: float, r: float = 20.0, part=None):
    poly = shape_polygon(shape, cx, cy, r, 0.0)
    return SceneObject(shape, colour, cx, cy, r, poly, polygon_area(poly), part)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hard-world")
    generate_synthetic(root, HARD)
    return root


def test_phrase_truth_of_hand_made_scenes() -> None:
    scene = Scene(256, 256, (obj("circle", "red", 40, 128), obj("circle", "blue", 216, 128),
                             obj("square", "green", 128, 128)))  # fmt: skip
    expr = Expression("circle", None, "relation", "left of", ("square", "green"))
    assert expr.refers_to(scene, 0)
    text = expr.text(0)
    assert text == "the circle left of the green square"
    phrases = {p.role: p for p in noun_phrases(scene, expr, text, 0)}
    referent, landmark, sentence = phrases["referent"], phrases["landmark"], phrases["sentence"]
    assert text[referent.start : referent.end] == "the circle"
    assert text[referent.head_start : referent.head_end] == "circle"
    assert referent.objects == (0, 1)  # "the circle" alone names both circles
    assert text[landmark.start : landmark.end] == "the green square" and landmark.objects == (2,)
    assert text[landmark.head_start : landmark.head_end] == "square"
    assert (sentence.start, sentence.end, sentence.objects) == (0, len(text), (0,))
    # No article in this wording, a colour in the noun: the span is the noun phrase as written.
    left = Expression("circle", "red", "extreme", "left")
    text = left.text(2)
    assert text == "left red circle"
    (np_, whole) = noun_phrases(scene, left, text, 0)
    assert text[np_.start : np_.end] == "red circle" and np_.objects == (0,)
    assert whole.role == "sentence" and whole.objects == (0,)


def test_parts_lie_inside_and_later_shapes_cover_earlier_ones() -> None:
    part = Part("circle", "yellow", shape_polygon("circle", 100, 100, 8, 0.0))
    a = obj("square", "red", 100, 100, 30, part)
    b = obj("circle", "blue", 135, 100, 20)  # overlaps a's right side
    scene = Scene(200, 200, (a, b))
    vis_a, vis_b = visible_masks(scene)
    full_a = polygon_mask(a.polygon, 200, 200)
    assert vis_b.sum() == polygon_mask(b.polygon, 200, 200).sum()  # on top: whole
    assert 0 < vis_a.sum() < full_a.sum() and not (vis_a & vis_b).any()
    assert (polygon_mask(part.polygon, 200, 200) <= full_a).all()  # the part is inside


def test_written_ground_truth_is_what_the_image_shows(world: Path) -> None:
    coco = json.loads((world / "synthetic" / "instances.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    n_parts = n_occluded = 0
    for image_id, anns in by_image.items():
        im = images[image_id]
        h, w = im["height"], im["width"]
        pixels = np.asarray(Image.open(world / "images" / "synthetic" / im["file_name"]))
        union = np.zeros((h, w), bool)
        for ann in sorted(anns, key=lambda a: a["id"]):
            gt = decode_segmentation(ann["segmentation"], h, w)
            assert gt.any() and not (gt & union).any()  # visible areas never overlap
            union |= gt
            colours = [COLOURS[ann["colour"]]]
            if "part" in ann:
                n_parts += 1
                part = decode_segmentation(ann["part"]["segmentation"], h, w)
                assert (part <= gt).all() and part.any()  # the part belongs to the object
                colours.append(COLOURS[ann["part"]["colour"]])
            painted = np.zeros((h, w), bool)
            for colour in colours:
                painted |= (pixels == colour).all(-1)
            assert (painted[gt]).all(), ann["id"]  # every GT pixel shows the object's colours
            n_occluded += isinstance(ann["segmentation"], dict)
    assert n_parts > 10 and n_occluded > 0


def test_phrase_truth_files_match_sentences(world: Path) -> None:
    import pickle

    with (world / "synthetic" / "refs(unc).p").open("rb") as f:
        refs = pickle.load(f)
    sentences = {s["sent_id"]: (r, s["sent"]) for r in refs for s in r["sentences"]}
    tables = [world / "synthetic" / f"phrases_{split}.json" for split in ("train", "val", "test")]
    rows = [row for path in tables for row in json.loads(path.read_text())]
    assert {r["sent_id"] for r in rows} == set(sentences)
    for row in rows:
        ref, text = sentences[row["sent_id"]]
        assert text[row["start"] : row["end"]] == row["phrase"]
        assert row["start"] <= row["head_start"] < row["head_end"] <= row["end"]
        if row["role"] == "sentence":
            assert row["ann_ids"] == [ref["ann_id"]]
        if row["role"] == "referent":
            assert ref["ann_id"] in row["ann_ids"]


def test_object_centric_set(world: Path) -> None:
    coco = json.loads((world / "synthetic-objects" / "instances.json").read_text())
    assert len(coco["images"]) == len(coco["annotations"]) == HARD.n_object_images
    with (world / "synthetic-objects" / "refs(unc).p").open("rb") as f:
        import pickle

        refs = pickle.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for ref, ann in zip(refs, coco["annotations"], strict=True):
        im = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        assert [s["sent"] for s in ref["sentences"]] == [
            f"the {names[ann['category_id']]} in the middle"
        ]
        assert ann["area"] > 0.12 * im["height"] * im["width"]  # one large shape
        assert ref["split"] == "train"
