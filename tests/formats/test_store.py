"""The label store: complete, valid, resumable, deterministic, and loud about damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zarr

from pipeline.core.errors import StoreError
from pipeline.data.registry import open_dataset
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.embeddings import CACHE_ENV
from pipeline.store.lock import LOCK_FILE
from pipeline.store.reader import LabelStore
from pipeline.store.schemas import SCHEMA_VERSION
from pipeline.store.validate import validate
from tests.helpers import SMALL_PARAMS, TINY_PARAMS, tree_bytes
from trainer.data.sam_embeddings import SamEmbeddings


def test_store_has_one_sample_per_record(synthetic_store: Path, synthetic_root: Path) -> None:
    records, _ = open_dataset("synthetic", synthetic_root).records()
    store = LabelStore(synthetic_store)
    samples = store.samples()
    assert samples.num_rows == len(records) > 0
    assert sorted(samples.column("sample_id").to_pylist()) == sorted(r.sample_id for r in records)
    assert validate(synthetic_store) == []
    manifest = store.manifest
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["stats"]["samples"] == len(records)
    # the refer files, and the phrase ground truth beside them (one table per split)
    phrase_truth = {f"synthetic/phrases_{s}.json" for s in ("train", "val", "test")}
    assert set(manifest["input_sha256"]) == {
        "synthetic/refs(unc).p",
        "synthetic/instances.json",
        *phrase_truth,
    }
    assert len(manifest["shards"]) >= 2 * 3 * 2  # several shards per table, each with rejects


def test_subsets_follow_candidate_counts(synthetic_store: Path) -> None:
    store = LabelStore(synthetic_store)
    samples = store.samples().to_pylist()
    candidates = store.candidates().to_pylist()
    per_sample: dict[str, list[dict]] = {}
    for c in candidates:
        per_sample.setdefault(c["sample_id"], []).append(c)
    assert {s["subset"] for s in samples} == {"H_sem", "H_ref"}
    for s in samples:
        cands = per_sample[s["sample_id"]]
        assert [c["cand_idx"] for c in cands] == list(range(len(cands)))
        assert s["n_candidates"] == len(cands) >= 1
        expected = "H_sem" if len(cands) == 1 else "H_ref"
        assert s["subset"] == expected
        assert all(c["referent"] == (1 if expected == "H_sem" else 0) for c in cands)
        assert all(c["phrase"] in s["expression"] for c in cands)


def test_shards_keep_images_whole(synthetic_store: Path) -> None:
    seen: dict[str, str] = {}
    for path in sorted((synthetic_store / "samples").glob("part-*.parquet")):
        for image in pq.read_table(path, columns=["image_sha256"]).column(0).to_pylist():
            assert seen.setdefault(image, path.name) == path.name


def test_rerun_is_a_noop(store_copy: Path, synthetic_root: Path) -> None:
    before = {
        p: p.stat().st_mtime_ns
        for p in store_copy.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }
    build("synthetic", synthetic_root, store_copy, SMALL_PARAMS, InProcessExecutor())
    after = {
        p: p.stat().st_mtime_ns
        for p in store_copy.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }
    assert after == before  # nothing rewritten, nothing added


def test_changed_params_redo_only_downstream(store_copy: Path, synthetic_root: Path) -> None:
    ingest_before = tree_bytes(store_copy / "samples")
    mtimes = {p: p.stat().st_mtime_ns for p in (store_copy / "samples").rglob("*")}
    params = {**SMALL_PARAMS, "phrases": {"max_candidates": 1}}
    build("synthetic", synthetic_root, store_copy, params, InProcessExecutor())
    assert {p: p.stat().st_mtime_ns for p in (store_copy / "samples").rglob("*")} == mtimes
    assert tree_bytes(store_copy / "samples") == ingest_before
    samples = LabelStore(store_copy).samples()
    assert set(samples.column("n_candidates").to_pylist()) == {1}
    assert validate(store_copy) == []


def test_same_inputs_give_same_bytes(tmp_path: Path, tiny_store: Path, tiny_root: Path):
    again = tmp_path / "again"
    build("synthetic", tiny_root, again, TINY_PARAMS, InProcessExecutor())
    assert tree_bytes(again) == tree_bytes(tiny_store)


def test_validate_names_each_problem(store_copy: Path) -> None:
    shard = store_copy / "phrases" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    (store_copy / "split" / "part-00000.parquet").unlink()
    shutil.copy(
        store_copy / "samples" / "part-00000.parquet", store_copy / "samples" / "part-09999.parquet"
    )
    problems = validate(store_copy)
    text = "\n".join(problems)
    assert "phrases/part-00001.parquet: sha256" in text
    assert "split/part-00000.parquet: listed in manifest.json but missing" in text
    assert "samples/part-09999.parquet: shard not listed" in text
    assert len(problems) == 3


def test_unknown_schema_version_is_refused(store_copy: Path) -> None:
    path = store_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="schema_version 99"):
        LabelStore(store_copy)
    assert "schema_version 99" in validate(store_copy)[0]


def test_a_moved_embedding_cache_is_named_and_found_through_the_env(
    store_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = tmp_path / "elsewhere"
    (store_copy.parent / "_embeddings").rename(moved)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    problems = validate(store_copy)
    assert len(problems) == 1 and "embedding cache" in problems[0] and CACHE_ENV in problems[0]
    with pytest.raises(StoreError, match="embedding cache"):
        SamEmbeddings(LabelStore(store_copy))
    monkeypatch.setenv(CACHE_ENV, str(moved))
    assert validate(store_copy) == []
    emb = SamEmbeddings(LabelStore(store_copy))
    digest = LabelStore(store_copy).table("encode").column("image_sha256")[0].as_py()
    assert emb[digest].shape == (256, 64, 64)


def test_older_schema_version_names_the_rebuild(store_copy: Path) -> None:
    path = store_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = SCHEMA_VERSION - 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError) as refused:
        LabelStore(store_copy)
    line = str(refused.value)
    assert "\n" not in line
    assert (
        f"`ppt-labels build --dataset synthetic --data-root DATA_ROOT --out {store_copy}`" in line
    )
    assert validate(store_copy) == [line]


def test_arrays_are_one_file_per_array_per_shard(synthetic_store: Path) -> None:
    store = LabelStore(synthetic_store)
    groups = [
        synthetic_store / e["path"] for e in store.manifest["shards"] if e.get("kind") == "zarr"
    ]
    assert {g.parent.name for g in groups} == {"attention"}  # embeddings: in the cache's packs
    packs = sorted((synthetic_store.parent / "_embeddings").glob("*/sam-*/pack-*.zarr"))
    assert packs and len(packs) == len(list(synthetic_store.glob("encode/part-*.parquet")))
    for path in groups + packs:
        group = zarr.open_group(str(path), mode="r")
        for name, array in group.arrays():
            chunk_files = [p for p in (path / name).rglob("*") if p.is_file()]
            chunk_files = [p for p in chunk_files if p.name != "zarr.json"]
            assert len(chunk_files) <= 1, (path, name, chunk_files)  # none when the array is empty
            if array.ndim > 1 and array.shape[0] > 1:
                assert array.chunks[0] == 1 < array.shards[0] == array.shape[0]  # one row a chunk
                whole = array[...]
                assert (array[array.shape[0] - 1] == whole[-1]).all()


def test_store_without_manifest_is_incomplete(store_copy: Path) -> None:
    (store_copy / "manifest.json").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        LabelStore(store_copy)


def test_deleted_shard_is_rebuilt_on_rerun(store_copy: Path, synthetic_root: Path) -> None:
    reference = tree_bytes(store_copy)
    (store_copy / "phrases" / "part-00000.parquet").unlink()
    (store_copy / "phrases" / "_stage.json").unlink()
    build("synthetic", synthetic_root, store_copy, SMALL_PARAMS, InProcessExecutor())
    assert tree_bytes(store_copy) == reference


def test_unchanged_inputs_skip_planning_and_changes_are_seen(tmp_path: Path, monkeypatch) -> None:
    """A no-op ingest re-run never parses the dataset (RefCOCO's instances.json: 35 s); a
    restored image, a changed image and a changed annotation file each plan again."""
    from pipeline.data.refer import ReferDataset
    from tests.helpers import REFER_SAMPLE

    root = tmp_path / "data"
    shutil.copytree(REFER_SAMPLE, root)
    store = tmp_path / "store"
    image = root / open_dataset("refcoco", root).records()[0][0].image_path
    hidden = image.rename(tmp_path / image.name)  # its records are rejected
    params = {"ingest": {"shard_size": 8}}

    def ingest() -> int:
        build("refcoco", root, store, params, InProcessExecutor(), stages=("ingest",))
        return json.loads((store / "samples" / "_stage.json").read_text())["rows"]

    rows = ingest()
    real_records = ReferDataset.records
    monkeypatch.setattr(ReferDataset, "records", lambda *a, **k: pytest.fail("planned again"))
    assert ingest() == rows  # no-op: not planned
    hidden.rename(image)  # the missing image is back: planning must see it
    monkeypatch.setattr(ReferDataset, "records", real_records)
    more = ingest()
    assert more > rows
    monkeypatch.setattr(ReferDataset, "records", lambda *a, **k: pytest.fail("planned again"))
    assert ingest() == more
    instances = root / "refcoco" / "instances.json"
    instances.write_text(instances.read_text() + "\n")  # same JSON, other bytes: re-planned
    monkeypatch.setattr(ReferDataset, "records", real_records)
    assert ingest() == more
