"""`ppt-labels eval` (checkpoint and --baseline clip-sam) and `ppt-labels predict` through the CLI.

The checkpoint is the session's tiny real training run on its synthetic store (`tiny_run`); `eval`
builds its own store for the split, so its metrics must equal a direct prediction on the session
store's samples of that split (same images, same SAM, same CLIP cache contents).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from pipeline.scoring.metrics import mask_iou
from pipeline.store.reader import LabelStore
from tests.helpers import SAM_VIT_T, SMALL_PARAMS, TEST_MODELS
from trainer.inference.baselines import score_masks
from trainer.inference.predict import load_for_inference, predict_store

pytestmark = pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"{SAM_VIT_T} not present")

KEYS = {"mIoU", "oIoU", "P@0.3", "P@0.5", "P@0.7", "n"}
# the synthetic world knows every object of an image: eval also says what each miss hit
WORLD_KEYS = {*KEYS, "failures"}


@pytest.fixture(scope="module")
def checkpoint(tiny_run: Path) -> Path:
    """The session's tiny run (conftest `tiny_run`: no dropout, semantic stage only)."""
    return tiny_run / "last.pt"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = {
        **SMALL_PARAMS,
        "encode": {"sam_variant": "vit_t", "sam_checkpoint": str(SAM_VIT_T),
                   "clip_model": "ppt-tiny-vit", "clip_input_size": 224},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_eval_checkpoint_matches_a_direct_prediction(
    tmp_path: Path, checkpoint: Path, params_file: Path, synthetic_store: Path,
    synthetic_root: Path,
) -> None:  # fmt: skip
    metrics_out = tmp_path / "m.json"
    args = ["eval", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--split", "val",
            "--data-root", str(synthetic_root), "--labels", str(tmp_path / "eval"),
            "--metrics-out", str(metrics_out), "--params", str(params_file), "--device", "cpu",
            "--sam-checkpoint", str(SAM_VIT_T), "--allow-random-weights"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_out.read_text())
    assert set(metrics) == WORLD_KEYS
    built = LabelStore(tmp_path / "eval")
    assert set(built.samples().column("split").to_pylist()) == {"val"}

    store = LabelStore(synthetic_store)
    val = [s["sample_id"] for s in store.samples().to_pylist() if s["split"] == "val"]
    assert metrics["n"] == len(val) > 0
    model, clip, sam, cfg = load_for_inference(checkpoint, TEST_MODELS)
    direct = predict_store(model, clip, sam, cfg, store, synthetic_root, tmp_path / "cache",
                           sample_ids=val)  # fmt: skip
    expected = score_masks(direct, store, synthetic_root)
    for key in KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert metrics["failures"] == pytest.approx(expected["failures"], abs=1e-6)
    assert metrics["failures"]["n"] == metrics["n"]
    assert metrics["failures"]["hit"] == pytest.approx(metrics["P@0.5"])  # a hit is IoU ≥ 0.5

    again = CliRunner().invoke(app, args)  # the split's store is reused, same numbers
    assert again.exit_code == 0 and json.loads(metrics_out.read_text()) == metrics


def test_predict_writes_the_mask_eval_would_predict(
    tmp_path: Path, checkpoint: Path, synthetic_store: Path, synthetic_root: Path
) -> None:
    store = LabelStore(synthetic_store)
    row = store.samples().to_pylist()[5]
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    args = ["predict", "--checkpoint", str(checkpoint), "--image",
            str(synthetic_root / row["image_path"]), "--text", row["expression"], "--out",
            str(out), "--overlay", str(overlay), "--device", "cpu", "--sam-checkpoint",
            str(SAM_VIT_T), "--allow-random-weights"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(out)) > 0
    assert mask.shape == (row["height"], row["width"])
    assert Image.open(overlay).size == (row["width"], row["height"])
    model, clip, sam, cfg = load_for_inference(checkpoint, TEST_MODELS)
    stored = predict_store(model, clip, sam, cfg, store, synthetic_root, tmp_path / "cache",
                           sample_ids=[row["sample_id"]])[row["sample_id"]]  # fmt: skip
    # Same weights and encoders; only CLIP's batch composition differs (float16-rounded).
    assert (stored.sum() == 0 and mask.sum() == 0) or mask_iou(mask, stored) > 0.98

    missing = CliRunner().invoke(app, [*args[:3], "--image", str(tmp_path / "nope.jpg"),
                                       *args[5:]])  # fmt: skip
    assert missing.exit_code == 2 and "--image: cannot read" in missing.output


def test_eval_baseline_clip_sam(
    tmp_path: Path, params_file: Path, synthetic_store: Path, synthetic_root: Path
) -> None:
    metrics_out = tmp_path / "b.json"
    args = ["eval", "--baseline", "clip-sam", "--dataset", "synthetic", "--split", "test",
            "--data-root", str(synthetic_root), "--labels", str(tmp_path / "eval"),
            "--metrics-out", str(metrics_out), "--params", str(params_file),
            "--allow-random-weights"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_out.read_text())
    assert set(metrics) == WORLD_KEYS
    assert sum(v for k, v in metrics["failures"].items() if k != "n") == pytest.approx(100.0)
    test_ids = [
        s for s in LabelStore(synthetic_store).samples().to_pylist() if s["split"] == "test"
    ]
    assert metrics["n"] == len(test_ids) > 0
    assert 0.0 <= metrics["mIoU"] <= 100.0
    built = LabelStore(tmp_path / "eval")
    sources = set(built.candidates().column("relevance_source").to_pylist())
    assert sources == {"clip"} and "masks" in built.tables

    both = CliRunner().invoke(app, [*args, "--checkpoint", "x.pt"])
    assert both.exit_code == 2 and "exactly one of --checkpoint and --baseline" in both.output
