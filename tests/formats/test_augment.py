"""The augment stage and the composite (D_ref) store, on a real D_sem store of ImageNet samples.

Every emitted composite is checked against its D_sem sources: one referent; each mask is its
source's mask resized into the pasted box (minus a fusion inset), inside the composite, with the
scaled area; points labelled by their mask; position words true of the geometry (over many
seeds); the same seed gives the same bytes. Then the composite store: E candidates per sample,
one referent, labels transferred unchanged, validate, eval-labels, and `show`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.core import hashing
from pipeline.core.rle import decode_rle
from pipeline.data.imagenet import class_noun
from pipeline.data.registry import open_dataset
from pipeline.labelling.composites.colour import colour_term
from pipeline.labelling.composites.plan import CompositeConfig
from pipeline.labelling.composites.render import Composite, CompositeObject
from pipeline.labelling.composites.text import RELATIVE, ExpressionSpec
from pipeline.scoring.label_eval import evaluate_labels
from pipeline.stages.executor import InProcessExecutor
from pipeline.stages.registry import STAGES
from pipeline.stages.runner import run_stage
from pipeline.stages.spec import StageContext
from pipeline.store import shards
from pipeline.store.reader import LabelStore
from pipeline.store.validate import validate
from tests.helpers import (
    CLI,
    IMAGENET_PARAMS,
    IMAGENET_SAMPLES,
    assert_words_match_geometry,
    boundary_pixels,
    check_labels,
    copy_store,
    tree_bytes,
)

pytestmark = pytest.mark.slow


def table_rows(store: Path, table: str) -> list[dict]:
    """Every row of a table of `store`, read from its shards (the store manifest is gone while a
    stage re-runs)."""
    paths = sorted((store / table).glob("part-*.parquet"))
    return [row for path in paths for row in shards.read_parquet(path).to_pylist()]


def augment_rows(store: Path) -> list[dict]:
    """Every row of the augment table of `store`."""
    return table_rows(store, "augment")


def as_composite(row: dict, store: Path, colours: dict[str, str | None] | None = None) -> Composite:
    """A stored composite as the library's `Composite`, its image read back from the store;
    `colours`: each source's colour word (`source_colours`) when the stage named colours."""
    colours = colours or {}
    with Image.open(store / row["image_path"]) as image:
        pixels = np.asarray(image.convert("RGB"))
    hw = (row["height"], row["width"])
    objects = [
        CompositeObject(
            o["source_sample_id"],
            o["phrase"],
            o["mask_rle"],
            hw,
            tuple(o["bbox"]),
            tuple((p["x"], p["y"], p["label"]) for p in o["points"]),
            tuple(o["paste_box"]),
            o["referent"],
            colours.get(o["source_sample_id"]),
        )
        for o in row["objects"]
    ]
    ref = row["referent"]
    relative = row["relation"] in RELATIVE
    anchor = class_noun(objects[1 - ref].class_name) if relative else None
    anchor_colour = objects[1 - ref].colour if relative else None
    spec = ExpressionSpec(row["relation"], class_noun(objects[ref].class_name), anchor,
                          objects[ref].colour, anchor_colour)  # fmt: skip
    return Composite(pixels, row["kind"], objects, row["expression"], ref, spec)


def source_masks(store: Path) -> dict[str, np.ndarray]:
    """sample_id → its D_sem mask at the source image's size."""
    size = {s["sample_id"]: (s["height"], s["width"]) for s in table_rows(store, "samples")}
    masks = table_rows(store, "masks")
    return {m["sample_id"]: decode_rle(m["mask_rle"], *size[m["sample_id"]]) for m in masks}


def source_colours(store: Path, sources: dict[str, np.ndarray], min_share: float) -> dict:
    """sample_id → the colour word of its D_sem pseudo-label, read again from the source image."""
    out = {}
    for sample in table_rows(store, "samples"):
        if sample["sample_id"] in sources:
            with Image.open(IMAGENET_SAMPLES / sample["image_path"]) as image:
                pixels = np.asarray(image.convert("RGB"))
            out[sample["sample_id"]] = colour_term(pixels, sources[sample["sample_id"]], min_share)
    return out


def check_row(
    row: dict, store: Path, sources: dict[str, np.ndarray], colours: dict | None = None
) -> None:
    """Every invariant of one stored composite against its D_sem sources (and, when the stage
    named colours, their colour words)."""
    cfg = CompositeConfig()
    margin = cfg.position_margin if row["kind"] == "mosaic" else cfg.relation_margin
    comp = as_composite(row, store, colours)
    assert comp.image.shape[:2] == (row["height"], row["width"])
    check_labels(comp, margin)  # one referent, masks inside, points labelled by the mask
    assert_words_match_geometry(comp, margin)
    assert hashing.sha256_file(store / row["image_path"]) == row["image_sha256"]
    for i, obj in enumerate(row["objects"]):
        x, y, w, h = obj["paste_box"]
        src = sources[obj["source_sample_id"]]
        resized = Image.fromarray(src.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)
        expected = np.zeros((row["height"], row["width"]), bool)
        expected[y : y + h, x : x + w] = np.asarray(resized) > 0
        if row["kind"] == "fusion" and i == 0:  # the host, under its inset
            ix, iy, iw, ih = row["objects"][1]["paste_box"]
            expected[iy : iy + ih, ix : ix + iw] = False
        mask = decode_rle(obj["mask_rle"], row["height"], row["width"])
        assert np.array_equal(mask, expected)
        if row["kind"] == "mosaic" or i == 1:  # nothing covers it: area = source area × scale
            scaled = src.sum() * (w * h) / src.size
            assert abs(mask.sum() - scaled) <= 0.5 * boundary_pixels(mask) + 2


def test_every_composite_is_exact_and_unambiguous(imagenet_labels: dict[str, Path]) -> None:
    store = imagenet_labels["sem"]
    rows = augment_rows(store)
    sources = source_masks(store)
    assert rows and {r["kind"] for r in rows} == {"mosaic", "fusion"}
    assert any(len(r["objects"]) == 4 for r in rows)  # a 2x2
    for row in rows:
        check_row(row, store, sources)
    rejects = [r for r in LabelStore(store).rejects().to_pylist() if r["stage"] == "augment"]
    assert len(rows) + len(rejects) == 4 + 3  # n_mosaic + n_fusion: each emitted or rejected


@pytest.fixture(scope="module")
def sem_copy(imagenet_labels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("sem") / "imagenet-mini"
    copy_store(imagenet_labels["sem"], dest)
    return dest


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**31 - 1))
def test_words_agree_with_geometry_over_seeds(sem_copy: Path, seed: int) -> None:
    # odd seeds name colours: a low share, so that these photos' objects get words
    named = {"colour_words": True, "colour_min_share": 0.3} if seed % 2 else {}
    augment = {"n_mosaic": 4, "n_fusion": 4, "seed": seed, **named}
    ctx = StageContext(sem_copy, "imagenet-mini", IMAGENET_SAMPLES, {**IMAGENET_PARAMS,
                       "augment": augment})  # fmt: skip
    run_stage(STAGES["augment"], ctx, InProcessExecutor())
    sources = source_masks(sem_copy)
    colours = source_colours(sem_copy, sources, 0.3) if named else None
    for row in augment_rows(sem_copy):
        check_row(row, sem_copy, sources, colours)


def test_colour_words_from_the_photos(sem_copy: Path) -> None:
    """The stage names the colours its sources' pixels give, and some of these photos get one."""
    augment = {"n_mosaic": 4, "n_fusion": 4, "seed": 1, "colour_words": True,
               "colour_min_share": 0.3}  # fmt: skip
    ctx = StageContext(sem_copy, "imagenet-mini", IMAGENET_SAMPLES, {**IMAGENET_PARAMS,
                       "augment": augment})  # fmt: skip
    run_stage(STAGES["augment"], ctx, InProcessExecutor())
    sources = source_masks(sem_copy)
    colours = source_colours(sem_copy, sources, 0.3)
    assert any(colours.values()), colours
    rows = augment_rows(sem_copy)
    for row in rows:
        check_row(row, sem_copy, sources, colours)  # the expression is the spec's, colours too
    named = [r for r in rows if colours[r["objects"][r["referent"]]["source_sample_id"]]]
    assert named, "no composite's referent has a colour word"


def test_same_seed_same_bytes(imagenet_labels: dict[str, Path], tmp_path: Path) -> None:
    first = imagenet_labels["sem"] / "augment"
    store = tmp_path / "imagenet-mini"
    copy_store(imagenet_labels["sem"], store)
    shutil.rmtree(store / "augment")
    ctx = StageContext(store, "imagenet-mini", IMAGENET_SAMPLES, IMAGENET_PARAMS)
    run_stage(STAGES["augment"], ctx, InProcessExecutor())
    assert hashing.sha256_tree(store / "augment") == hashing.sha256_tree(first)
    assert tree_bytes(store / "augment") == tree_bytes(first)


def test_composite_store_reads_like_any_other(imagenet_labels: dict[str, Path]) -> None:
    sem, ref = imagenet_labels["sem"], imagenet_labels["ref"]
    assert validate(ref) == []
    store = LabelStore(ref)
    rows = {f"imagenet-mini-ref/{r['composite_id']}": r for r in augment_rows(sem)}
    samples = store.samples().to_pylist()
    assert {s["sample_id"] for s in samples} == set(rows)
    assert {s["subset"] for s in samples} == {"D_ref"}
    assert all(s["source"] == rows[s["sample_id"]]["kind"] for s in samples)
    by_sample: dict[str, list[dict]] = {}
    for cand in store.candidates().to_pylist():
        by_sample.setdefault(cand["sample_id"], []).append(cand)
    for sample_id, cands in by_sample.items():
        objects = rows[sample_id]["objects"]
        assert [c["cand_idx"] for c in cands] == list(range(len(objects)))
        assert sum(c["referent"] for c in cands) == 1
        for cand, obj in zip(cands, objects, strict=True):
            assert cand["n_candidates"] == len(objects)
            assert (cand["phrase"], cand["referent"]) == (obj["phrase"], obj["referent"])
            assert cand["mask_rle"] == obj["mask_rle"] and cand["points"] == obj["points"]
    assert store.table("encode").num_rows == len({r["image_sha256"] for r in rows.values()})
    # The pasted objects are the composite's truth: the sentence denotes the referent, the
    # referent's noun every object of its class; the attention stage maps each whole expression.
    dataset = open_dataset("imagenet-mini-ref", sem)
    for sample_id, row in rows.items():
        truths = {t.role: t for t in dataset.phrase_truth(sample_id)}
        assert truths["sentence"].ann_ids == (row["referent"],)
        noun = row["objects"][row["referent"]]["phrase"]
        same = tuple(i for i, o in enumerate(row["objects"]) if o["phrase"] == noun)
        assert truths["referent"].ann_ids == same and row["referent"] in same
        referent = next(c for c in by_sample[sample_id] if c["referent"])
        assert referent["truth_role"] == "referent" and referent["denotes"] == list(same)
    assert set(store.sentence_relevance()) == set(rows)
    metrics = evaluate_labels(ref, sem)  # ground truth = the referent's transferred mask
    assert metrics["best_candidate"]["n"] == len(rows)
    assert metrics["best_candidate"]["mIoU"] == pytest.approx(100.0)  # percent


def test_show_renders_composites(imagenet_labels: dict[str, Path], tmp_path: Path) -> None:
    sem, ref = imagenet_labels["sem"], imagenet_labels["ref"]
    base = [CLI, "show", "--labels", str(ref), "--data-root", str(sem), "--n", "8"]
    result = subprocess.run([*base, "--out", str(tmp_path / "c.png")], capture_output=True)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "c.png") as image:
        assert image.size[0] > 800
    result = subprocess.run([*base, "--out", str(tmp_path / "each")], capture_output=True)
    assert result.returncode == 0, result.stderr
    n = LabelStore(ref).samples().num_rows
    assert len(list((tmp_path / "each").glob("*.png"))) == min(8, n)
