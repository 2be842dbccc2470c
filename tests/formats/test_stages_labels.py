"""The label stages (encode → attention → masks → points) on the real refer_sample, real vit_t SAM.

Invariants on small arrays first; then one module-scoped build of refcoco with gt-mask relevance
that the other tests read; then determinism, the CLIP plumbing through the real CLI, and ImageNet
(no ground truth) under an oracle source.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image
from pycocotools import mask as mask_utils
from segment_anything import SamPredictor

from pipeline.core.errors import ConfigError
from pipeline.core.rle import decode_rle, encode_rle
from pipeline.data.records import SourceRecord
from pipeline.data.registry import open_dataset
from pipeline.labelling import points
from pipeline.labelling.grid import mask_to_grid
from pipeline.labelling.relevance import box_to_grid
from pipeline.models.encoders import encoder_config, sam_for
from pipeline.models.options import ModelOptions
from pipeline.models.runtime import reproducible_threads
from pipeline.models.weights import RANDOM_INIT
from pipeline.scoring.metrics import RisMeter
from pipeline.stages import attention, encode
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.stages.registry import LABEL_STAGES
from pipeline.stages.spec import StageContext
from pipeline.store import shards
from pipeline.store.embeddings import store_embeddings
from pipeline.store.reader import LabelStore
from pipeline.store.validate import validate
from tests.helpers import CLI, IMAGENET_SAMPLES, REFER_SAMPLE, SAM_VIT_T, needs_sam, tree_bytes

GRID = 28
BATCH = 2
PARAMS = {
    "ingest": {"shard_size": 8},  # refcoco sample: 18 samples on 3 images → several shards
    "encode": {"sam_variant": "vit_t", "sam_checkpoint": str(SAM_VIT_T), "batch_size": BATCH},
    "attention": {"grid": GRID},
    "masks": {},
    "points": {"m": 16, "seed": 0},
}
MODELS = ModelOptions(relevance="gt-mask")


# ------------------------------------------------------------------------------- invariants


def test_box_to_grid_matches_mask_pooling_and_area() -> None:
    mask = np.zeros((50, 70), dtype=bool)
    mask[10:31, 5:48] = True  # integer box x=5, y=10, w=43, h=21
    box_map = box_to_grid((5.0, 10.0, 43.0, 21.0), mask.shape, 8)
    np.testing.assert_allclose(box_map, mask_to_grid(mask, 8), atol=1e-12)
    # a sub-pixel box keeps its exact area: Σ fraction × cell area = w × h
    frac = box_to_grid((3.3, 2.7, 20.5, 9.25), (50, 70), 7)
    np.testing.assert_allclose(frac.sum() * (50 / 7) * (70 / 7), 20.5 * 9.25)


def test_rle_round_trip_and_box() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.7
    counts, bbox = encode_rle(mask)
    assert isinstance(counts, str)
    np.testing.assert_array_equal(decode_rle(counts, 37, 53), mask)
    ys, xs = np.nonzero(mask)
    assert bbox == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert encode_rle(np.zeros((4, 5), bool))[1] == [0.0, 0.0, 0.0, 0.0]


def test_points_are_seeded_per_candidate_and_labelled_by_the_mask() -> None:
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:25, 10:40] = True
    bbox = [10.0, 5.0, 30.0, 20.0]
    a = points.sample_points(mask, bbox, 16, points.candidate_rng(0, "s/1", 0))
    b = points.sample_points(mask, bbox, 16, points.candidate_rng(0, "s/1", 0))
    c = points.sample_points(mask, bbox, 16, points.candidate_rng(0, "s/1", 1))
    assert a == b and a != c and len(a) == 16
    assert all(10 / 60 <= p["x"] <= 40 / 60 and 5 / 40 <= p["y"] <= 25 / 40 for p in a)
    assert all(p["label"] == 1 for p in a)  # the box is the mask here
    assert points.sample_points(mask, [0.0, 0.0, 0.0, 0.0], 16, np.random.default_rng(0)) == []


def _context(models: ModelOptions) -> StageContext:
    return StageContext(store=Path("store"), dataset="refcoco", data_root=Path(), models=models)


def test_command_line_options_override_params() -> None:
    section = {"sam_variant": "vit_b", "clip": False}
    opts = ModelOptions(sam="vit_t", sam_checkpoint=Path("w.pth"), relevance="clip")
    assert encode.apply_options(section, _context(opts)) == {
        "sam_variant": "vit_t",
        "sam_checkpoint": "w.pth",
        "clip": True,
    }
    assert attention.apply_options({"source": "gt-box"}, _context(opts)) == {"source": "clip"}
    assert attention.apply_options({"source": "gt-box"}, _context(ModelOptions())) == {
        "source": "gt-box"
    }


def test_missing_weights_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--sam-checkpoint"):
        encode.read_config({"sam_checkpoint": None})
    with pytest.raises(ConfigError, match="no such file"):
        encode.read_config({"sam_checkpoint": str(tmp_path / "nope.pth")})
    cfg = encode.read_config({"sam_checkpoint": None, "allow_random_weights": True})
    assert cfg["weights"] == {"sam": RANDOM_INIT}
    with pytest.raises(ConfigError, match="source"):
        attention.read_config({"source": "gt-polygon"})


# ------------------------------------------------------------------------ one real build


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """refcoco on refer_sample, gt-mask relevance, real vit_t; SAM encoder forwards counted."""
    if not SAM_VIT_T.is_file():
        pytest.skip(f"{SAM_VIT_T} not present")
    sam = sam_for(encoder_config(PARAMS["encode"]))  # the instance the stage uses
    batches: list[int] = []
    hook = sam.model.image_encoder.register_forward_hook(
        lambda module, inputs, output: batches.append(int(inputs[0].shape[0]))
    )
    out = tmp_path_factory.mktemp("labels") / "refcoco"
    try:
        build("refcoco", REFER_SAMPLE, out, PARAMS, InProcessExecutor(), models=MODELS)
    finally:
        hook.remove()
    return {"store": out, "batches": batches, "sam": sam}


def _shard_tables(store: Path, table: str) -> list[Path]:
    return sorted((store / table).glob("part-*.parquet"))


def _ground_truth(samples: list[dict]) -> dict[str, np.ndarray]:
    dataset = open_dataset("refcoco", REFER_SAMPLE)
    fields = [f.name for f in dataclasses.fields(SourceRecord)]
    return {
        s["sample_id"]: dataset.ground_truth(SourceRecord(**{f: s[f] for f in fields})).mask
        for s in samples
    }


@pytest.mark.slow
def test_encode_runs_each_image_once(built: dict) -> None:
    store = LabelStore(built["store"])
    images = set(store.table("samples").column("image_sha256").to_pylist())
    table = store.table("encode")
    assert table.num_rows == len(images) == len(set(table.column("image_sha256").to_pylist()))
    assert sum(built["batches"]) == len(images)  # images through SAM's image encoder
    per_shard = [shards.read_parquet(p).num_rows for p in _shard_tables(built["store"], "encode")]
    assert len(per_shard) > 1  # the test covers several shards
    assert len(built["batches"]) == sum(math.ceil(n / BATCH) for n in per_shard)


@pytest.mark.slow
def test_embeddings_are_float16_and_match_set_image(built: dict) -> None:
    store = LabelStore(built["store"])
    path = _shard_tables(built["store"], "encode")[0]
    rows = shards.read_parquet(path).to_pylist()
    cache, keys = store_embeddings(store.root, store.manifest["provenance"])
    emb = cache.rows(keys["sam"], [r["image_sha256"] for r in rows])
    assert emb.shape == (len(rows), 256, 64, 64) and emb.dtype == np.float16
    assert cache.root == (built["store"].parent / "_embeddings").resolve()
    for r in rows:
        assert max(r["input_height"], r["input_width"]) == 1024
        assert r["input_height"] == int(r["height"] * 1024 / max(r["height"], r["width"]) + 0.5)
    # batched encoding == SamPredictor.set_image on the image alone (up to float16)
    sample = next(
        s
        for s in store.table("samples").to_pylist()
        if s["image_sha256"] == rows[-1]["image_sha256"]
    )
    predictor = SamPredictor(built["sam"].model)
    predictor.set_image(np.asarray(Image.open(REFER_SAMPLE / sample["image_path"]).convert("RGB")))
    single = predictor.features[0].numpy()
    np.testing.assert_allclose(emb[len(rows) - 1].astype(np.float32), single, atol=2e-2, rtol=1e-2)
    assert tuple(predictor.input_size) == (rows[-1]["input_height"], rows[-1]["input_width"])


@pytest.mark.slow
def test_a_second_dataset_encodes_only_images_no_store_has(built: dict) -> None:
    """RefCOCO+ beside RefCOCO (largely the same COCO images): its encode runs only the images
    RefCOCO's store lacks through SAM, and its store reads the others from RefCOCO's packs."""
    sam = built["sam"]
    batches: list[int] = []
    hook = sam.model.image_encoder.register_forward_hook(
        lambda module, inputs, output: batches.append(int(inputs[0].shape[0]))
    )
    out = built["store"].parent / "refcoco+"
    try:
        build("refcoco+", REFER_SAMPLE, out, PARAMS, InProcessExecutor(),
              stages=("ingest", "encode"), models=MODELS)  # fmt: skip
    finally:
        hook.remove()
    first, second = LabelStore(built["store"]), out
    shared = set(first.table("samples").column("image_sha256").to_pylist())
    mine = {
        r["image_sha256"]
        for r in shards.read_parquet(_shard_tables(second, "encode")[0]).to_pylist()
    }
    for path in _shard_tables(second, "encode")[1:]:
        mine |= set(shards.read_parquet(path).column("image_sha256").to_pylist())
    assert mine & shared  # the sample's refcoco+ expressions share refcoco's images
    assert sum(batches) == len(mine - shared)  # only images refcoco lacks go through SAM
    cache, keys = store_embeddings(first.root, first.manifest["provenance"])
    owner = {h: cache.entry(keys["sam"], h).pack.parent.parent.name for h in mine}
    assert owner == {h: "refcoco" if h in shared else "refcoco+" for h in mine}


@pytest.mark.slow
def test_gt_mask_maps_are_the_referent_pooled(built: dict) -> None:
    store = LabelStore(built["store"])
    samples = store.table("samples").to_pylist()
    gt = _ground_truth(samples)
    n = 0
    for path in _shard_tables(built["store"], "attention"):
        rows = shards.read_parquet(path).to_pylist()
        maps = store.arrays("attention", path.stem)["relevance"][...]
        assert maps.shape == (len(rows), GRID, GRID) and maps.dtype == np.float16
        for row in rows:
            assert row["relevance_source"] == "gt-mask"
            mask = gt[row["sample_id"]]
            grid_map = maps[row["array_row"]].astype(np.float64)
            h, w = mask.shape
            # mass = the referent's area, and the peak cell lies on the referent
            assert grid_map.sum() * (h / GRID) * (w / GRID) == pytest.approx(mask.sum(), rel=1e-2)
            i, j = np.unravel_index(np.argmax(grid_map), grid_map.shape)
            cell = mask[
                int(i * h / GRID) : int((i + 1) * h / GRID),
                int(j * w / GRID) : int((j + 1) * w / GRID),
            ]
            assert cell.mean() == pytest.approx(grid_map[i, j], abs=1e-2) and cell.any()
            n += 1
    assert n == store.table("phrases").num_rows
    # one whole-expression map per sample (what CLIP + SAM prompts with): the referent too
    sentence = store.sentence_relevance()
    assert set(sentence) == set(gt)
    for sample_id, grid_map in sentence.items():
        h, w = gt[sample_id].shape
        area = grid_map.astype(np.float64).sum() * (h / GRID) * (w / GRID)
        assert area == pytest.approx(gt[sample_id].sum(), rel=1e-2)


@pytest.mark.slow
def test_masks_rle_round_trip_at_original_size(built: dict) -> None:
    store = LabelStore(built["store"])
    sizes = {s["sample_id"]: (s["height"], s["width"]) for s in store.table("samples").to_pylist()}
    masks = store.table("masks").to_pylist()
    assert len(masks) == store.table("phrases").num_rows
    for row in masks:
        h, w = sizes[row["sample_id"]]
        mask = decode_rle(row["mask_rle"], h, w)
        assert mask.shape == (h, w) and mask.any()
        counts, bbox = encode_rle(mask)
        assert counts == row["mask_rle"]
        np.testing.assert_allclose(row["bbox"], bbox)
        assert 0.0 <= row["relevance_score"] <= 1.0 and 0.0 < row["sam_score"] <= 1.5


@pytest.mark.slow
def test_gt_mask_pseudo_labels_reach_the_ground_truth(built: dict) -> None:
    store = LabelStore(built["store"])
    samples = store.table("samples").to_pylist()
    gt = _ground_truth(samples)
    masks = {(m["sample_id"], m["cand_idx"]): m for m in store.table("masks").to_pylist()}
    meter = RisMeter()
    for s in samples:
        rle = {"size": [s["height"], s["width"]], "counts": masks[(s["sample_id"], 0)]["mask_rle"]}
        gt_rle = mask_utils.encode(np.asfortranarray(gt[s["sample_id"]].astype(np.uint8)))
        meter.add_rle(rle, gt_rle)
    summary = meter.summarize()
    assert summary["n"] == len(samples)
    assert summary["mIoU"] > 55.0, summary


@pytest.mark.slow
def test_points_in_unit_square_labelled_by_the_mask(built: dict) -> None:
    store = LabelStore(built["store"])
    sizes = {s["sample_id"]: (s["height"], s["width"]) for s in store.table("samples").to_pylist()}
    masks = {(m["sample_id"], m["cand_idx"]): m for m in store.table("masks").to_pylist()}
    rows = store.table("points").to_pylist()
    assert len(rows) == len(masks)
    for row in rows:
        h, w = sizes[row["sample_id"]]
        m = masks[(row["sample_id"], row["cand_idx"])]
        mask = decode_rle(m["mask_rle"], h, w)
        x0, y0, bw, bh = m["bbox"]
        assert len(row["points"]) == PARAMS["points"]["m"]
        for p in row["points"]:
            x, y = p["x"] * w, p["y"] * h  # back to pixels
            assert 0.0 <= p["x"] <= 1.0 and 0.0 <= p["y"] <= 1.0
            assert x0 - 1e-3 <= x <= x0 + bw + 1e-3 and y0 - 1e-3 <= y <= y0 + bh + 1e-3
            near_edge = min(x % 1, 1 - x % 1, y % 1, 1 - y % 1) < 1e-3  # float32 rounding
            if not near_edge:
                assert p["label"] == int(mask[min(int(y), h - 1), min(int(x), w - 1)])
    labels = [p["label"] for r in rows for p in r["points"]]
    assert 0 < sum(labels) < len(labels)  # both positives and negatives occur


@pytest.mark.slow
def test_store_validates_with_arrays_and_models(built: dict) -> None:
    assert validate(built["store"]) == []
    manifest = json.loads((built["store"] / "manifest.json").read_text())
    zarr_paths = {s["path"] for s in manifest["shards"] if s.get("kind") == "zarr"}
    assert {p.split("/")[0] for p in zarr_paths} == {"attention"}  # embeddings: in the cache
    assert manifest["provenance"]["embeddings"]["cache"] == "../_embeddings"
    assert manifest["provenance"]["embeddings"]["sam"].startswith("sam-")
    assert manifest["models"]["sam"] == {
        "variant": "vit_t",
        "weights": built["sam"].weights_id,
    }
    assert [s["stage"] for s in manifest["stages"]][-4:] == list(LABEL_STAGES)
    encode_cfg = next(s["config"] for s in manifest["stages"] if s["stage"] == "encode")
    assert encode_cfg["weights"]["sam"] == built["sam"].weights_id


@pytest.mark.slow
def test_same_inputs_give_same_label_bytes(built: dict, tmp_path: Path) -> None:
    again = tmp_path / "refcoco"
    build("refcoco", REFER_SAMPLE, again, PARAMS, InProcessExecutor(), models=MODELS)
    for table in LABEL_STAGES:
        assert tree_bytes(again / table) == tree_bytes(built["store"] / table), table


# ----------------------------------------------------------------- other sources, CLI


@needs_sam
@pytest.mark.slow
def test_clip_relevance_with_random_tiny_clip_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "refcoco"
    args = ["build", "-d", "refcoco", "--data-root", str(REFER_SAMPLE), "--out", str(out)]
    args += ["--splits", "val", "--sam", "vit_t", "--sam-checkpoint", str(SAM_VIT_T)]
    args += ["--relevance", "clip", "--clip-model", "ppt-tiny-vit", "--allow-random-weights"]
    result = subprocess.run([CLI, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert validate(out) == []
    store = LabelStore(out)
    assert store.manifest["models"]["clip"] == {"model": "ppt-tiny-vit", "weights": RANDOM_INIT}
    path = _shard_tables(out, "encode")[0]
    cache, keys = store_embeddings(store.root, store.manifest["provenance"])
    digests = shards.read_parquet(path).column("image_sha256").to_pylist()
    dense = cache.rows(keys["clip"], digests)
    assert dense.shape == (len(digests), 28, 28, 32)  # 448 / 16, D = 32
    table = store.table("attention")
    assert set(table.column("relevance_source").to_pylist()) == {"clip"}
    assert store.table("masks").num_rows == store.table("phrases").num_rows
    assert store.table("points").num_rows == store.table("phrases").num_rows


@needs_sam
@pytest.mark.slow
def test_oracle_relevance_rejects_samples_without_ground_truth(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    root.mkdir()
    classes = json.loads((IMAGENET_SAMPLES / "classes.json").read_text())[:2]
    (root / "classes.json").write_text(json.dumps(classes))
    for c in classes:
        shutil.copy(IMAGENET_SAMPLES / c["file"], root / c["file"])
    out = tmp_path / "labels"
    build("imagenet-mini", root, out, PARAMS, InProcessExecutor(), models=MODELS)
    assert validate(out) == []
    store = LabelStore(out)
    rejects = store.rejects().to_pylist()
    assert [r["stage"] for r in rejects] == ["attention", "attention", "augment"]
    assert all("--relevance clip" in r["reason"] for r in rejects[:2])
    assert "0 D_sem sample(s)" in rejects[2]["reason"]  # no masks: nothing to compose
    for table in ("attention", "masks", "points"):
        assert store.table(table).num_rows == 0
    group = zarr.open_group(str(out / "attention" / "part-00000.zarr"), mode="r")
    assert group["relevance"].shape == (0, GRID, GRID)


def test_models_never_run_single_threaded() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Dask worker (OMP_NUM_THREADS=1)
    try:
        with reproducible_threads():
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_eval_labels_cli_matches_a_direct_recomputation(built: dict, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    cli = str(Path(sys.executable).with_name("ppt-labels"))
    result = subprocess.run(
        [
            cli,
            "eval-labels",
            "--labels",
            str(built["store"]),
            "--data-root",
            str(REFER_SAMPLE),
            "--metrics-out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    keys = {"mIoU", "oIoU", "P@0.3", "P@0.5", "P@0.7", "n"}
    assert set(metrics) == {"H_sem_referent", "best_candidate"}
    assert all(set(row) == keys for row in metrics.values())
    assert "best_candidate" in result.stdout

    store = LabelStore(built["store"])
    samples = store.samples().to_pylist()
    gt = _ground_truth(samples)
    by_sample: dict[str, list[dict]] = {}
    for cand in store.candidates().to_pylist():
        by_sample.setdefault(cand["sample_id"], []).append(cand)
    best, referent = RisMeter(), RisMeter()
    for s in samples:
        truth = gt[s["sample_id"]]
        ious = []
        for cand in by_sample[s["sample_id"]]:
            pred = mask_utils.decode(
                {"size": [s["height"], s["width"]], "counts": cand["mask_rle"].encode()}
            ).astype(bool)
            ious.append((np.logical_and(pred, truth).sum(), np.logical_or(pred, truth).sum()))
            if s["subset"] == "H_sem" and cand["referent"] == 1:
                referent.add_counts(*ious[-1])
        best.add_counts(*max(ious, key=lambda c: c[0] / c[1]))
    for name, meter in (("best_candidate", best), ("H_sem_referent", referent)):
        expected = meter.summarize()
        for key in keys:
            assert metrics[name][key] == pytest.approx(expected[key]), (name, key)
    assert metrics["H_sem_referent"]["n"] > 0
