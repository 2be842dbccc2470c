"""The real CLI end to end on the real refer sample data, and its errors on bad input."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.store.reader import LabelStore
from tests.helpers import CLI, REFER_SAMPLE


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([CLI, *args], capture_output=True, text=True)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def pairs(refs_file: Path, splits: set[str] | None = None) -> int:
    refs = pickle.loads(refs_file.read_bytes())  # trusted local test data
    return sum(len(r["sentences"]) for r in refs if splits is None or r["split"] in splits)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "refs"),
    [
        ("refcoco", "refcoco/refs(unc).p"),
        ("refcocog", "refcocog/refs(umd).p"),
        # refcoco+ and refcocog-google: the images and instances of refcoco and refcocog with
        # another refs file; tests/formats/test_refer.py loads both, and
        # tests/formats/test_stages_labels.py ingests and encodes refcoco+ beside refcoco (kept
        # out here for the suite's time budget)
    ],
)
def test_build_validate_rerun_damage_on_refer_sample(
    tmp_path: Path, dataset: str, refs: str
) -> None:
    out = tmp_path / dataset
    run("build", "--dataset", dataset, "--data-root", str(REFER_SAMPLE), "--out", str(out))
    assert "is valid" in run("labels", "validate", str(out)).stdout
    samples = LabelStore(out).samples()
    assert samples.num_rows == pairs(REFER_SAMPLE / refs)
    again = run("build", "--dataset", dataset, "--data-root", str(REFER_SAMPLE), "--out", str(out))
    assert "up to date" in again.stderr
    assert "computed" not in again.stderr
    (out / "phrases" / "part-00000.parquet").write_bytes(b"garbage")  # damage: validate says so
    result = run("labels", "validate", str(out), ok=False)
    assert result.returncode == 1
    assert "phrases/part-00000.parquet" in result.stderr


@pytest.mark.slow
def test_splits_stats_and_show(tmp_path: Path) -> None:
    out = tmp_path / "refcoco"
    root = str(REFER_SAMPLE)
    run("build", "-d", "refcoco", "--data-root", root, "--out", str(out), "--splits", "testB")
    samples = LabelStore(out).samples()
    assert set(samples.column("split").to_pylist()) == {"testB"}
    assert samples.num_rows == pairs(REFER_SAMPLE / "refcoco/refs(unc).p", {"testB"})
    card = tmp_path / "card.json"
    printed = run("stats", "--labels", str(out), "--json", str(card)).stdout
    assert "dataset card" in printed
    assert json.loads(card.read_text())["samples"] == samples.num_rows
    png = tmp_path / "show.png"
    run("show", "--labels", str(out), "--data-root", root, "--out", str(png), "--n", "4")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _broken_copy(tmp_path: Path) -> Path:
    root = tmp_path / "refer"
    shutil.copytree(REFER_SAMPLE, root)
    return root


def test_missing_refs_file_is_one_line_error(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    (root / "refcoco" / "refs(unc).p").unlink()
    result = run(
        "build", "-d", "refcoco", "--data-root", str(root), "--out", str(tmp_path / "o"), ok=False
    )
    assert result.returncode == 2
    assert "refs(unc).p" in result.stderr
    assert "Traceback" not in result.stderr


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Evil()], protocol=2))
    result = run(
        "build", "-d", "refcoco", "--data-root", str(root), "--out", str(tmp_path / "o"), ok=False
    )
    assert result.returncode == 2
    assert "refusing" in result.stderr.lower() or "refus" in result.stderr.lower()
    assert not marker.exists()


def test_corrupt_image_is_rejected_not_fatal(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    images = root / "images" / "mscoco" / "images" / "train2014"
    victim = images / "COCO_train2014_000000000154.jpg"
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated JPEG
    out = tmp_path / "o"
    run("build", "-d", "refcoco", "--data-root", str(root), "--out", str(out))
    store = LabelStore(out)
    rejects = store.rejects().to_pylist()
    assert rejects and all("000000000154" in r["file"] for r in rejects)
    assert all(r["stage"] == "ingest" and "cannot be read" in r["reason"] for r in rejects)
    kept = store.samples().column("image_path").to_pylist()
    assert not any("000000000154" in p for p in kept)
    assert len(kept) + len(rejects) == pairs(REFER_SAMPLE / "refcoco/refs(unc).p")


def test_unknown_dataset_and_split_are_clear(tmp_path: Path) -> None:
    result = run("build", "-d", "nope", "--data-root", str(REFER_SAMPLE), ok=False)
    assert result.returncode == 2 and "refcoco" in result.stderr
    result = run(
        "build",
        "-d",
        "refcoco",
        "--data-root",
        str(REFER_SAMPLE),
        "--splits",
        "trian",
        "--out",
        str(tmp_path / "o"),
        ok=False,
    )
    assert result.returncode == 2 and "trian" in result.stderr
