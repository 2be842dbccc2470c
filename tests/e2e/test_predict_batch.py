"""`ppt-labels predict --images DIR --texts FILE.csv` on the session's tiny run: a mask PNG per
row, one COCO JSON that pycocotools loads, and batched predictions equal to single ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from cli.main import app
from pipeline.scoring.metrics import mask_iou
from pipeline.store.reader import LabelStore
from tests.helpers import SAM_VIT_T, TEST_MODELS
from trainer.inference.predict import load_for_inference
from trainer.inference.predict_images import predict_images

pytestmark = pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"{SAM_VIT_T} not present")


def test_batch_predict_writes_masks_and_coco(
    tmp_path: Path, tiny_run: Path, synthetic_store: Path, synthetic_root: Path
) -> None:
    by_image: dict[str, list[dict]] = {}
    for r in LabelStore(synthetic_store).samples().to_pylist():
        by_image.setdefault(r["image_path"], []).append(r)
    shared = next(rs for rs in by_image.values() if len(rs) >= 2)[:2]  # two texts, one image
    others = [rs[0] for path, rs in by_image.items() if path != shared[0]["image_path"]][:2]
    picked = [*shared, *others]
    images = tmp_path / "images"
    lines = ["image,text"]
    for r in picked:
        name = f"scenes/{Path(r['image_path']).name}"
        (images / "scenes").mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic_root / r["image_path"], images / name)
        lines.append(f'{name},"{r["expression"]}"')
    lines.append(f'{lines[1].split(",")[0]},"the thing, on the left"')  # a comma in the text
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
    assert [a["id"] for a in anns] == [1, 2, 3, 4, 5] and len(coco.getImgIds()) == 3
    queries = [line.split(",", 1) for line in lines[1:]]
    model, clip, sam, cfg = load_for_inference(tiny_run / "last.pt", TEST_MODELS)
    for ann, (name, text) in zip(anns, queries, strict=True):
        image = coco.loadImgs(ann["image_id"])[0]
        assert image["file_name"] == name and ann["text"] == text.strip('"')
        mask = np.asarray(Image.open(out / ann["mask_file"])) > 0
        assert mask.shape == (image["height"], image["width"])
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == int(mask.sum()) and 0.0 <= ann["score"] <= 1.0
        rgb = np.asarray(Image.open(images / name).convert("RGB"))
        cpu = torch.device("cpu")
        single = predict_images(model, clip, sam, cfg, [rgb], [(0, ann["text"])], cpu)[0]
        # Batched == single, up to CLIP's batch composition (float16-rounded features).
        assert (mask.sum() == single.mask.sum() == 0) or mask_iou(single.mask, mask) > 0.99
        assert single.score == pytest.approx(ann["score"], abs=1e-3)
    results = coco.loadRes([{**a, "id": None} for a in anns])  # as detection results
    assert len(results.getAnnIds()) == 5

    texts.write_text(f"{lines[1]}\nscenes/none.png,the dog\n")
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "line 2: image 'scenes/none.png' not found" in missing.output
    both = CliRunner().invoke(app, [*args, "--text", "x"])
    assert both.exit_code == 2 and "--images and --texts" in both.output
