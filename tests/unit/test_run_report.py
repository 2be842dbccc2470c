"""The run report's page: every section, tables from the run's files, escaped text, inline PNGs."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import ConfigError
from pipeline.reports.gallery import GalleryItem, gallery_png
from pipeline.reports.run_files import ablation_rows, phase_spans, read_run
from pipeline.reports.run_report import SECTION_IDS, render_report
from tests.helpers import REPO

ABLATION = REPO / "bench" / "results" / "ablation-world0" / "ablation.json"
CURVES = [
    {"epoch": 1, "phase": "semantic", "loss": 2.0, "loss_map_dice": 0.8, "loss_point_l1": 0.0},
    {"epoch": 2, "phase": "ris_pre", "loss": 1.5, "loss_map_dice": 0.6},
    {"epoch": 3, "phase": "ris", "loss": 1.2, "loss_map_dice": 0.5, "mIoU": 41.5,
     "select": {"synthetic": {"round": 1, "pairs": 10, "kept": 7, "kept_share": 0.7}}},
]  # fmt: skip
METRICS = {
    "eval": {"mIoU": 41.5, "oIoU": 33.25, "P@0.3": 50.0, "P@0.5": 40.0, "P@0.7": 20.0, "n": 12,
             "failures": {"hit": 40.0, "part": 8.25, "loose": 0.0, "other object": 43.5,
                          "background": 8.25, "empty": 0.0, "n": 12}},
    "eval_splits": ["test"],
    "epochs": 3,
    "select": {"synthetic": {"1": {"round": 1, "pairs": 10, "kept": 7, "kept_share": 0.7,
                                   "accuracy": 0.5714, "random_accuracy": 0.45}}},
}  # fmt: skip


def _run(tmp_path: Path) -> Path:
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "curves.json").write_text(json.dumps(CURVES))
    return tmp_path


def _item() -> GalleryItem:
    image = np.full((40, 60, 3), 90, dtype=np.uint8)
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 10:30] = True
    truth = np.zeros_like(mask)
    truth[10:30, 20:40] = True
    return GalleryItem("synthetic", "s/1", "test", "the <red> circle & co", image, mask,
                       np.array([[0.3, 0.5], [0.9, 0.1]]), np.array([True, False]), 0.8, truth,
                       "ground truth")  # fmt: skip


def _pngs(page: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(d))) for d in found]


def test_page_has_every_section_and_the_run_numbers(tmp_path: Path) -> None:
    run = read_run(_run(tmp_path), ABLATION)
    page = render_report(run, [_item()], [("checkpoint", "last.pt")])
    for ident in SECTION_IDS:
        assert f'<section id="{ident}">' in page, ident
    assert "<td>41.5</td>" in page and "<td>33.25</td>" in page  # metrics table
    assert "failures: other object (%)</td><td>43.5</td>" in page  # one row per class
    row1 = json.loads(ABLATION.read_text())["1"]["mIoU"]  # the committed table's row 1
    assert "CLIP + SAM (no training)" in page and f"{row1['mean']:.1f} ± {row1['std']:.1f}" in page
    assert "<td>70.0</td>" in page and "<td>57.1</td>" in page and "<td>45.0</td>" in page
    assert "the &lt;red&gt; circle &amp; co" in page and "<red>" not in page
    assert "IoU 33.3%" in page  # 200 px overlap of a 600 px union
    curves, gallery = _pngs(page)
    assert curves.size[0] > 600 and gallery.size == (250 + 8 + 250, 167)  # 60 × 40 at 250 px

    without = render_report(read_run(tmp_path), [])
    assert '<section id="ablation">' not in without and "No held-out sample" in without


def test_gallery_draws_points_in_their_colours() -> None:
    item = _item()
    panel = np.asarray(Image.open(io.BytesIO(gallery_png(item, side=300))).convert("RGB"))
    # 300 px across a 60 px image: scale 5; positive (0.3, 0.5) → (90, 100), negative → (270, 20)
    assert tuple(panel[100, 90]) == (0, 200, 60)
    assert tuple(panel[20, 270]) == (230, 20, 20)
    reference = panel[:, 308:]
    assert tuple(reference[100, 150]) != tuple(reference[100, 60])  # truth tinted, not outside


def test_missing_files_and_phases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.json"):
        read_run(tmp_path)
    with pytest.raises(ConfigError, match="no such run directory"):
        read_run(tmp_path / "none")
    assert phase_spans([*CURVES, {"epoch": 4, "phase": "ris"}]) == [
        ("semantic", 1, 1), ("ris_pre", 2, 2), ("ris", 3, 4)
    ]  # fmt: skip


def test_one_seed_row_shows_no_spread() -> None:
    # a row run with one seed has an unknown spread, not a zero one: its cells carry the mean only
    table = {
        "5": {"name": "full", "mIoU": {"mean": 33.0, "std": 0.49, "per_seed": [33.5, 32.5]},
              "n": {"mean": 539.0, "std": 0.0, "per_seed": [539, 539]},
              "seeds": {"0": {}, "1": {}}},
        "7": {"name": "w/o D_ref", "mIoU": {"mean": 32.8, "std": None, "per_seed": [32.8]},
              "n": {"mean": 539.0, "std": None, "per_seed": [539]}, "seeds": {"0": {}}},
    }  # fmt: skip
    rows = {r["row"]: r for r in ablation_rows(table)}
    assert rows["5"]["mIoU"] == "33.0 ± 0.5" and rows["5"]["seeds"] == "2"
    assert rows["7"]["mIoU"] == "32.8" and rows["7"]["seeds"] == "1" and rows["7"]["n"] == "539"
