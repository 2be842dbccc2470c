"""bench/ablation.py end to end on a small world: rows 1 and 5, one seed, and row 5 beats row 1
by a clear margin; cached rows resume; bench/label_ceiling.py's ground-truth copy of the world's
scene store.

The world is configs/world-params.yaml with the default world's scenes (SyntheticConfig's scene
options, as params.yaml's main job) at a small size: world seed 3, 40 scenes split 20 / 4 / 16
(108 held-out test sentences), 6 object-centric images, 6 composites planned; row 5 trains a
shorter curriculum (13 epochs). Its first 24 scenes are the session's `synthetic_store` images (the
same seed, one random stream per image), so the world starts from a copy of that store's embedding
cache and encodes 28 images, not 52 (as `tiny_store` does; stores record images and encoder keys,
not which store encoded them). Measured with this code (one seed): row 1 40.1 mIoU, row 5 45.1
(+5.0); world seed 4: row 1 31.5, row 5 46.8 (+15.3); world seed 5: row 1 34.6, row 5 48.9
(+14.3). The assertion asks for +3 (MARGIN): the full table's margin is about +6 on the ablation
world (README, "The evaluation world"), and this world is small enough to build and train in the
suite, so the margin here is an early warning that the method stopped beating CLIP + SAM, not a
measurement of how much it does.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.rle import decode_rle
from pipeline.scoring.failures import CLASSES, object_truths
from pipeline.store.reader import LabelStore
from pipeline.store.validate import verify_store
from tests.helpers import REPO, bench_module

MARGIN = 3.0  # row 5's mIoU over row 1's, at least (the module docstring says why)


def _schedule(path: Path, semantic_epochs: int = 4) -> None:
    """A shorter curriculum (13 epochs, one refinement round), merged over every row's config."""
    path.write_text(
        yaml.safe_dump(
            {
                "curriculum": {
                    "semantic_epochs": semantic_epochs,
                    "ris_epochs_before_select": 3,
                    "ris_epochs": 3,
                    "refinement_rounds": 1,
                    "refinement_epochs": 2,
                },
            }
        )
    )


def _params(path: Path) -> None:
    """configs/world-params.yaml, small, with the default world's scenes: 40 scenes (split
    20 / 4 / 16 for more test sentences), 6 object-centric images, 6 composites."""
    params = yaml.safe_load((REPO / "configs" / "world-params.yaml").read_text())
    params["synthetic"] = {"n_images": 40, "n_object_images": 6, "train_frac": 0.5,
                           "val_frac": 0.1, "test_frac": 0.4}  # fmt: skip
    params["augment"].update(n_mosaic=3, n_fusion=3)
    path.write_text(yaml.safe_dump(params))


def _args(out: Path, *extra: str) -> list[str]:
    return ["--rows", "1,5", "--seeds", "1", "--world-seed", "3", "--params",
            str(out.parent / "params.yaml"), "--out", str(out), "--schedule",
            str(out.parent / "schedule.yaml"), *extra]  # fmt: skip


def _image_shas(store: Path) -> set[str]:
    return set(LabelStore(store).table("encode").column("image_sha256").to_pylist())


def test_row_5_beats_row_1_on_a_small_world_and_resumes(
    tmp_path: Path, synthetic_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _schedule(tmp_path / "schedule.yaml")
    _params(tmp_path / "params.yaml")
    out = tmp_path / "abl"
    shutil.copytree(synthetic_store.parent / "_embeddings", out / "labels" / "_embeddings")
    cmd = [sys.executable, str(REPO / "bench" / "ablation.py"), *_args(out)]  # as a user runs it
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    # the premise of the shared cache above: the small store's scenes are this world's first 24
    assert _image_shas(synthetic_store) < _image_shas(out / "labels" / "synthetic")
    table = json.loads((out / "ablation.json").read_text())
    assert set(table) == {"1", "5"}
    for row in table.values():
        assert row["n"]["mean"] > 0 and 0.0 <= row["mIoU"]["mean"] <= 100.0
        assert len(row["mIoU"]["per_seed"]) == 1
    assert table["5"]["seeds"]["0"]["select"], "row 5 runs Select on the scenes' H_ref"
    assert table["1"]["n"]["mean"] == table["5"]["n"]["mean"] >= 100  # the same test sentences
    row1, row5 = table["1"]["mIoU"]["mean"], table["5"]["mIoU"]["mean"]
    assert row5 - row1 >= MARGIN, f"row 5 {row5:.1f} vs row 1 {row1:.1f} mIoU"
    for row in table.values():  # what each miss hit: every test sample classed, hits = P@0.5
        failures = row["seeds"]["0"]["failures"]
        assert failures["n"] == row["n"]["mean"]
        assert sum(failures[c] for c in CLASSES) == pytest.approx(100.0)
        assert failures["hit"] == pytest.approx(row["P@0.5"]["mean"])
    assert "| row | hit | part |" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").stat().st_size > 0
    assert "| 5 | 4 + domain refinement (full) |" in (out / "ablation.md").read_text()
    # phrase truth beside the refer files; simulated relevance stamped in the store
    assert sorted(p.name for p in (out / "data" / "synthetic").glob("phrases_*.json")) == [
        "phrases_test.json", "phrases_train.json", "phrases_val.json"]  # fmt: skip
    record = json.loads((out / "labels" / "synthetic" / "attention" / "_stage.json").read_text())
    assert record["config"]["source"] == "simulated"

    _check_truth_store(out)

    # the re-runs in this process (the same main(), without an interpreter's start each)
    ablation = bench_module("ablation")
    caplog.set_level(logging.INFO, logger="ablation")
    cached = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert set(cached) == {"row01-seed0.json", "row05-seed0.json"}
    ablation.main(_args(out))  # every (row, seed) cached: nothing runs, same table
    assert {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")} == cached
    assert json.loads((out / "ablation.json").read_text()) == table
    junk = tmp_path / "clip.pt"  # --report loads no model: any file names other weights
    junk.write_bytes(b"another CLIP")
    left_out = "row 5 seed 0: cached for another config; left out"
    caplog.clear()
    ablation.main(_args(out, "--report", "--clip-checkpoint", str(junk)))
    assert left_out in caplog.messages
    assert set(json.loads((out / "ablation.json").read_text())) == {"1"}  # row 1 reads no CLIP
    _schedule(tmp_path / "schedule.yaml", semantic_epochs=5)  # row 5's cache no longer counts
    caplog.clear()
    ablation.main(_args(out, "--report"))
    assert left_out in caplog.messages
    assert set(json.loads((out / "ablation.json").read_text())) == {"1"}


def _check_truth_store(out: Path) -> None:
    """label_ceiling's copy: a sound store whose train H_sem labels, and only those, are truth."""
    copy = bench_module("label_ceiling").truth_store(out)
    verify_store(copy, rounds=False)  # sealed again: the trainer will read it
    before, after = LabelStore(out / "labels" / "synthetic"), LabelStore(copy)
    samples = after.samples().to_pydict()
    split = dict(zip(samples["sample_id"], samples["split"], strict=True))
    cands = after.candidates().to_pydict()
    subset = dict(zip(cands["sample_id"], cands["subset"], strict=True))
    truths = object_truths("synthetic", out / "data")
    old = {(r["sample_id"], r["cand_idx"]): r for r in before.candidates().to_pylist()}
    changed = 0
    for row in after.candidates().to_pylist():
        sid, was = row["sample_id"], old[(row["sample_id"], row["cand_idx"])]
        if split[sid] == "train" and subset[sid] == "H_sem" and was["mask_rle"]:
            h, w, referent, _ = truths[sid]
            assert (decode_rle(row["mask_rle"], h, w) == decode_rle(referent, h, w)).all()
            assert row["sam_score"] == 1.0
            changed += 1
        else:
            assert row["mask_rle"] == was["mask_rle"] and row["sam_score"] == was["sam_score"]
    assert changed > 0
