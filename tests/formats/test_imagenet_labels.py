"""ImageNet D_sem labels: the seeded image subset, the centre prior, the quality gates, and the
CLIP source with random weights, on the real sample images with the real vit_t SAM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.data.records import SourceRecord
from pipeline.data.specs import load_spec
from pipeline.labelling.gates import Gates, gate_reason
from pipeline.labelling.relevance import centre_map
from pipeline.stages import ingest, masks
from pipeline.stages.executor import InProcessExecutor
from pipeline.stages.registry import STAGES, build_order
from pipeline.stages.runner import run_stage
from pipeline.stages.spec import StageContext
from pipeline.store.finalize import finalize
from pipeline.store.reader import LabelStore
from pipeline.store.validate import validate
from tests.helpers import CLI, IMAGENET_PARAMS, IMAGENET_SAMPLES, SAM_VIT_T, copy_store


def test_centre_map_is_a_centred_isotropic_gaussian() -> None:
    m = centre_map(28, 0.3)
    assert m.shape == (28, 28) and m.dtype == np.float32
    np.testing.assert_allclose(m, m.T)  # isotropic
    np.testing.assert_allclose(m, m[::-1, ::-1])  # centred
    assert m.max() == m[13:15, 13:15].max() and m[0, 0] < 0.1
    assert centre_map(28, 0.1)[0, 14] < m[0, 14]  # sigma widens it


def _records(n_images: int, per_image: int) -> list[SourceRecord]:
    return [
        SourceRecord(f"s{i}-{j}", f"{i}", f"img{i}.jpg", "train", "x", "imagenet")
        for i in range(n_images)
        for j in range(per_image)
    ]


def test_max_images_keeps_a_seeded_nested_subset_with_whole_images() -> None:
    records = _records(20, 2)
    five = ingest.keep_images(records, 5, seed=0)
    assert len({r.image_path for r in five}) == 5 and len(five) == 10  # all expressions kept
    assert ingest.keep_images(list(reversed(records)), 5, 0) == list(reversed(five))
    eight = {r.image_path for r in ingest.keep_images(records, 8, 0)}
    assert {r.image_path for r in five} <= eight  # a larger count keeps every smaller subset
    assert {r.image_path for r in ingest.keep_images(records, 5, 1)} != {r.image_path for r in five}
    assert ingest.keep_images(records, None, 0) == records
    ctx = StageContext(Path("store"), "imagenet-mini", IMAGENET_SAMPLES, max_images=7)
    assert ingest.apply_options({}, ctx) == {"max_images": 7}
    with pytest.raises(ConfigError, match="max_images"):
        ingest.read_config({"max_images": 0})


def test_gate_reasons_name_the_gate_and_the_key() -> None:
    gates = Gates(0.01, 0.95, 0.05, ("D_sem",))
    assert gate_reason(gates, "D_sem", 0.3, 0.5) is None
    assert "gate min_area_frac" in gate_reason(gates, "D_sem", 0.001, 0.5)
    assert "gate max_area_frac" in gate_reason(gates, "D_sem", 0.99, 0.5)
    assert "masks.min_relevance" in gate_reason(gates, "D_sem", 0.3, 0.01)
    assert gate_reason(gates, "H_ref", 0.001, 0.0) is None  # only the gated subsets
    with pytest.raises(ConfigError, match="max_area_frac"):
        masks.read_config({"min_area_frac": 0.5, "max_area_frac": 0.4})


@pytest.mark.slow
def test_centre_build_gives_d_sem_rows(imagenet_labels: dict[str, Path]) -> None:
    store = LabelStore(imagenet_labels["sem"])
    assert validate(store.root) == []
    cands = store.candidates().to_pylist()
    assert len(cands) == 6 and {c["subset"] for c in cands} == {"D_sem"}
    assert all(c["referent"] == 1 and c["n_candidates"] == 1 for c in cands)
    assert set(store.table("attention").column("relevance_source").to_pylist()) == {"centre"}
    assert store.manifest["stages"][0]["config"]["max_images"] == 6
    for cand in cands:
        if cand["mask_rle"] is not None:  # survived the gates
            assert cand["bbox"][2] > 0 and len(cand["points"]) == 16


@pytest.mark.slow
def test_forced_gates_reject_with_reasons_and_downstream_copes(
    imagenet_labels: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "imagenet-mini"
    copy_store(imagenet_labels["sem"], store)
    params = {**IMAGENET_PARAMS, "masks": {"min_area_frac": 0.2, "max_area_frac": 0.4}}
    ctx = StageContext(store, "imagenet-mini", IMAGENET_SAMPLES, params)
    for name in ("masks", "points", "augment"):
        run_stage(STAGES[name], ctx, InProcessExecutor())
    finalize(store, "imagenet-mini", list(build_order(load_spec("imagenet-mini"))))
    assert validate(store) == []
    labels = LabelStore(store)
    rejects = [r for r in labels.rejects().to_pylist() if r["stage"] == "masks"]
    kept = labels.table("masks").num_rows
    assert rejects and kept + len(rejects) == 6
    assert all(r["reason"].startswith("gate m") and "masks." in r["reason"] for r in rejects)
    assert labels.table("points").num_rows == kept
    missing = [c for c in labels.candidates().to_pylist() if c["mask_rle"] is None]
    assert {f"{c['sample_id']}#0" for c in missing} == {r["record"] for r in rejects}
    # augment uses only the survivors (or reports that too few survived)
    sources = {
        o["source_sample_id"] for row in labels.table("augment").to_pylist() for o in row["objects"]
    }
    assert not sources & {c["sample_id"] for c in missing}


@pytest.mark.slow
def test_clip_relevance_with_random_tiny_clip_on_imagenet(tmp_path: Path) -> None:
    if not SAM_VIT_T.is_file():
        pytest.skip(f"{SAM_VIT_T} not present")
    params = tmp_path / "params.yaml"
    small = {**IMAGENET_PARAMS, "ingest": {"max_images": 6}}
    params.write_text(json.dumps(small))  # JSON is YAML
    out = tmp_path / "imagenet-mini"
    args = ["build", "-d", "imagenet-mini", "--data-root", str(IMAGENET_SAMPLES), "--out", str(out)]
    args += ["--params", str(params), "--max-images", "3"]
    args += ["--relevance", "clip", "--clip-model", "ppt-tiny-vit", "--allow-random-weights"]
    result = subprocess.run([CLI, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert validate(out) == []
    store = LabelStore(out)
    assert store.samples().num_rows == 3  # --max-images overrides params
    assert store.manifest["models"]["clip"]["weights"] == "random-init"
    assert set(store.table("attention").column("relevance_source").to_pylist()) == {"clip"}
    assert (
        store.table("masks").num_rows
        + sum(r["stage"] == "masks" for r in store.rejects().to_pylist())
        == 3
    )
