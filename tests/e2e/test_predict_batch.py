"""`ppt-labels predict --images DIR --texts FILE.csv` on the session's tiny run: a mask PNG per
row, one COCO JSON that pycocotools loads, and batched masks equal to what eval predicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from cli.main import app
from pipeline.scoring.metrics import mask_iou
from pipeline.store.reader import LabelStore
from tests.helpers import SAM_VIT_T, TEST_MODELS
from trainer.inference.predict import load_for_inference, predict_store

pytestmark = pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"{SAM_VIT_T} not present")


def test_batch_predict_writes_masks_and_coco(
    tmp_path: Path, tiny_run: Path, synthetic_store: Path, synthetic_root: Path
) -> None:
    store = LabelStore(synthetic_store)
    by_image: dict[str, list[dict]] = {}
    for r in store.samples().to_pylist():
        by_image.setdefault(r["image_path"], []).append(r)
    shared = next(rs for rs in by_image.values() if len(rs) >= 2)[:2]  # two texts, one image
    other = next(rs[0] for path, rs in by_image.items() if path != shared[0]["image_path"])
    picked = [*shared, other]
    images = tmp_path / "images"
    (images / "scenes").mkdir(parents=True)
    lines = ["image,text"]
    for r in picked:
        name = f"scenes/{Path(r['image_path']).name}"
        shutil.copy(synthetic_root / r["image_path"], images / name)
        lines.append(f'{name},"{r["expression"]}"')
    texts = tmp_path / "texts.csv"
    texts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(tiny_run / "last.pt"), "--images", str(images),
            "--texts", str(texts), "--out", str(out), "--batch-size", "2", "--device", "cpu",
            "--sam-checkpoint", str(SAM_VIT_T), "--allow-random-weights"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    coco = COCO(str(out / "predictions.json"))
    anns = coco.loadAnns(sorted(coco.getAnnIds()))
    assert [a["id"] for a in anns] == [1, 2, 3] and len(coco.getImgIds()) == 2
    # What eval predicts for the same samples from the store's cached features: the batches
    # (two texts of one image, then another image) give the same masks, up to CLIP's batch
    # composition (float16-rounded features), as test_eval_cli's single predict does.
    model, clip, sam, cfg = load_for_inference(tiny_run / "last.pt", TEST_MODELS)
    ids, cache = [r["sample_id"] for r in picked], tiny_run / "feature_cache"
    stored = predict_store(model, clip, sam, cfg, store, synthetic_root, cache, sample_ids=ids)
    for ann, row in zip(anns, picked, strict=True):
        image = coco.loadImgs(ann["image_id"])[0]
        assert image["file_name"] == f"scenes/{Path(row['image_path']).name}"
        assert ann["text"] == row["expression"] and 0.0 <= ann["score"] <= 1.0
        mask = np.asarray(Image.open(out / ann["mask_file"])) > 0
        assert mask.shape == (image["height"], image["width"]) == (row["height"], row["width"])
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == int(mask.sum())
        expected = stored[row["sample_id"]]
        assert (mask.sum() == expected.sum() == 0) or mask_iou(mask, expected) > 0.98
    results = coco.loadRes([{**a, "id": None} for a in anns])  # as detection results
    assert len(results.getAnnIds()) == 3

    texts.write_text(f"{lines[1]}\nscenes/none.png,the dog\n")
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "line 2: image 'scenes/none.png' not found" in missing.output
    both = CliRunner().invoke(app, [*args, "--text", "x"])
    assert both.exit_code == 2 and "--images and --texts" in both.output
