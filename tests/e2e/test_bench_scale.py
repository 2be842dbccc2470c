"""bench/scale.py and bench/gpu_check.sh --smoke at small size: the scripts that measure the
RefCOCO-scale targets keep working (their numbers are the note's, not asserted here beyond what
the design guarantees: counts that match the files on disk, no-op re-runs that plan nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, needs_sam


@pytest.mark.slow
def test_scale_bench_small(tmp_path: Path, synthetic_store: Path) -> None:
    out = tmp_path / "scale"
    # --table with the masks unit only, one timed pass (DVC and loader runs are minutes): the
    # projections of the built store's files and bytes to the four stores, and their counts
    cmd = [sys.executable, str(REPO / "bench" / "scale.py"), "--out", str(out),
           "--fraction", "0.0007", "--layout-store", str(synthetic_store), "--table",
           "--units", "masks", "--masks-rounds", "1", "--masks-repeats", "1",
           "--phrase-sentences", "20", "--stages", "ingest,phrases,split"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "scale.json").read_text())
    sentences = report["dataset"]["sentences"]
    assert sentences == round(142_210 * 0.0007)
    new = report["results"]["new"]
    store = out / "new" / "store"
    for stage, table in (("ingest", "samples"), ("phrases", "phrases"), ("split", "split")):
        measured = new["stages"][stage]
        on_disk = [p for p in (store / table).rglob("*") if p.is_file()]
        assert measured["files"] == len(on_disk)
        rows = sum(pq.read_metadata(p).num_rows for p in (store / table).glob("part-*.parquet"))
        assert measured["rows"] == rows > 0
        assert measured["peak_rss_mb"] > 0 and new["noop"][stage]["wall_s"] > 0
    assert new["stages"]["ingest"]["rows"] <= sentences  # unreadable sentences are rejected
    projected = new["projected_files"]
    assert set(projected) >= {"ingest", "encode", "attention", "masks"}
    assert all(v > 0 for v in projected.values())
    table = json.loads((out / "table.json").read_text())
    row, counts, unique = table["rows"]["new"], table["counts"], table["unique_images"]
    assert 0 < row["files"][0] < row["files"][1]  # RefCOCO alone, then the four stores
    assert sum(c["images"] for c in counts.values()) == unique["sum"] > unique["unique"] > 0
    # the shared embedding cache: the four stores hold each distinct image once
    assert row["sam_bytes"][1] == unique["unique"] * row["sam_bytes_per_image"]
    assert 0 < counts["RefCOCO"]["train"] < counts["RefCOCO"]["sentences"] == 142_210
    masks = table["units"]["new"]["masks"]  # the stage's own prompts, SAM's time apart
    assert masks["prompts"] > 0 and masks["candidates"] >= masks["prompts"]
    assert 0 < masks["decoder_s"] < masks["seconds"]
    markdown = (out / "table.md").read_text()
    assert markdown.startswith("| (projected) |")
    assert all(f"| {name} |" in markdown for name in ("files", "attention on disk"))


@needs_sam
@pytest.mark.slow
def test_gpu_check_smoke(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--smoke"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "OUT": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["smoke"] is True
    whats = {r["what"] for r in report["rows"]}
    assert whats == {"encode", "masks", "train"}
    assert all(r["per_s"] > 0 for r in report["rows"])
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check")
