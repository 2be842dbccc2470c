"""What a training run writes besides checkpoints: per-epoch curves and the Select reports.

curves.csv     one row per epoch: loss terms, lr, mIoU… for `dvc plots show`
curves.json    the same rows as JSON
metrics.json   (written by `runner.train`) with "select": {store: {round: report}}
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.scoring.metrics import SUMMARY_KEYS

CURVE_KEYS = (
    "epoch",
    "phase",
    "stage",
    "round",
    "lr",
    "samples",
    "loss",
    "loss_mask_dice",
    "loss_mask_bce",
    "loss_point_l1",
    "loss_point_bce",
    "loss_map_dice",
    "loss_map_bce",
    "loss_score",
    *SUMMARY_KEYS,
)


def write_curves(history: Sequence[dict[str, Any]], out_dir: Path) -> None:
    """curves.csv (for `dvc plots show`) and curves.json, one row per epoch."""
    keys = [k for k in CURVE_KEYS if any(k in row for row in history)]
    with (out_dir / "curves.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    (out_dir / "curves.json").write_text(json.dumps(list(history), indent=1) + "\n")


def select_reports(history: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{store name: {round: report}} of the Select rounds this run made (`trainer.loop.select`),
    from the curve rows that carry them."""
    out: dict[str, dict[str, Any]] = {}
    for row in history:
        for store, report in (row.get("select") or {}).items():
            out.setdefault(store, {})[str(report["round"])] = report
    return out
