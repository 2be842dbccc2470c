"""Self-repair: a byte flip or a truncation in every kind of file a store holds is named by
validate, never trusted by a re-run, and repaired to the reference bytes (`tiny_store`).

Kinds: a table's data shard, its rejects shard, a Zarr chunk, a Zarr group's zarr.json, a stage
record, the manifest, and a Select round's selection and report. Stores are repaired in-process
(`repair`, what `labels validate --repair` runs, and `build`, what a re-run does); one case goes
through the CLI as a user would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.core.errors import StoreError
from pipeline.stages.build import build, repair
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.reader import LabelStore
from pipeline.store.rounds import write_round
from pipeline.store.validate import validate, verify_store
from tests.helpers import CLI, TINY_PARAMS, copy_store, tree_bytes
from trainer.loop.select import selection_table

pytestmark = pytest.mark.slow  # each case rebuilds a shard (SAM for the encode ones)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE: dict[str, Callable[[Path], None]] = {"flip": _flip, "truncate": _truncate}


def _one(store: Path, pattern: str) -> Path:
    found = sorted(p for p in store.glob(pattern) if p.is_file())
    assert found, f"no {pattern} in {store}"
    return found[-1]


# kind → a file of that kind in the tiny store (the cheapest stage that has one)
KINDS: dict[str, str] = {
    "data shard": "masks/part-00001.parquet",
    "rejects shard": "phrases/rejects/part-00000.parquet",
    "zarr chunk": "attention/part-00000.zarr/relevance/c/**/*",
    "zarr.json": "attention/part-00000.zarr/relevance/zarr.json",
    "stage record": "points/_stage.json",
    "manifest": "manifest.json",
}


@pytest.mark.parametrize("mode", sorted(DAMAGE))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damage_is_named_and_the_rerun_repairs_it(
    tmp_path: Path, tiny_root: Path, tiny_store: Path, kind: str, mode: str
) -> None:
    store = tmp_path / "store"
    copy_store(tiny_store, store)
    victim = _one(store, KINDS[kind])
    DAMAGE[mode](victim)
    rel = victim.relative_to(store).as_posix()
    problems = validate(store)
    named = rel.split(".zarr/")[0] + ".zarr" if ".zarr/" in rel else rel  # a group is one shard
    assert any(named in p for p in problems), (rel, problems)
    with pytest.raises(StoreError, match="labels validate"):
        verify_store(store)  # readers refuse it, naming the way out
    # the re-run (a build with the same params) or `validate --repair` brings the bytes back
    if mode == "flip":
        build("synthetic", tiny_root, store, TINY_PARAMS, InProcessExecutor())
    else:
        repair(store, tiny_root, InProcessExecutor())
    assert validate(store) == []
    assert tree_bytes(store) == tree_bytes(tiny_store), f"{kind} {mode}: {rel}"


def test_temporaries_of_a_killed_writer_are_gone_after_the_rerun(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    """A kill between a temporary's write and its rename leaves `.NAME.tmp-PID` beside the file
    it was to become (found by the random kills of tests/e2e/test_faults.py: a build killed while
    writing phrases' stage record): the re-run that finishes the stage, and finalize, remove it."""
    store = tmp_path / "store"
    copy_store(tiny_store, store)
    record, manifest = store / "phrases" / "_stage.json", store / "manifest.json"
    leftovers = [  # what the killed writer (pid 4242) left, its target not yet renamed in place
        store / "phrases" / "._stage.json.tmp-4242",
        store / "phrases" / ".part-00001.parquet.tmp-4242",
        store / "phrases" / "rejects" / ".part-00000.parquet.tmp-4242",
        store / ".manifest.json.tmp-4242",
    ]
    for leftover, source in zip(leftovers, [record, record, record, manifest], strict=True):
        leftover.write_bytes(source.read_bytes())
    record.unlink()
    manifest.unlink()
    assert validate(store)  # incomplete, never valid
    build("synthetic", tiny_root, store, TINY_PARAMS, InProcessExecutor())
    assert not any(p.exists() for p in leftovers)
    assert tree_bytes(store) == tree_bytes(tiny_store)


@pytest.mark.parametrize("mode", sorted(DAMAGE))
def test_damaged_embedding_pack_is_named_and_encoded_again(
    tmp_path: Path, tiny_root: Path, tiny_store: Path, mode: str
) -> None:
    """The embedding cache lies outside the store: a damaged pack is named by validate, refused
    by readers, and a re-run (or repair) of the store's encode stage encodes its images again."""
    store = copy_store(tiny_store, tmp_path / tiny_store.name)  # its partition keeps its name
    victim = _one(tmp_path / "_embeddings", "*/sam-*/pack-*.zarr/sam_embedding/c/**/*")
    DAMAGE[mode](victim)
    pack = next(p for p in victim.parents if p.suffix == ".zarr")
    problems = validate(store)
    assert any("damaged pack" in p and pack.name in p for p in problems), problems
    with pytest.raises(StoreError, match="labels validate"):
        verify_store(store)
    if mode == "flip":
        build("synthetic", tiny_root, store, TINY_PARAMS, InProcessExecutor())
    else:
        repair(store, tiny_root, InProcessExecutor())
    assert validate(store) == []
    assert tree_bytes(store) == tree_bytes(tiny_store)
    assert tree_bytes(tmp_path / "_embeddings") == tree_bytes(tiny_store.parent / "_embeddings")


@pytest.mark.parametrize("mode", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["selection.parquet", "report.json"])
def test_damaged_select_round_is_named_and_removed_by_repair(
    tmp_path: Path, tiny_root: Path, tiny_store: Path, name: str, mode: str
) -> None:
    store = tmp_path / "store"
    copy_store(tiny_store, store)
    samples = LabelStore(store).samples().to_pylist()
    rows = [{"sample_id": s["sample_id"], "cand_idx": 0, "confidence": 0.5, "overlap": 0.9,
             "kept": True, "threshold": 0.5, "round": 1} for s in samples]  # fmt: skip
    write_round(store, 1, selection_table(rows), {"round": 1})
    assert validate(store) == []
    DAMAGE[mode](store / "rounds" / "1" / name)
    problems = validate(store)
    assert len(problems) == 1 and problems[0].startswith("rounds/1/"), problems
    verify_store(store, rounds=False)  # training rewrites rounds: it may go on
    repair(store, tiny_root, InProcessExecutor())
    assert validate(store) == []
    assert not (store / "rounds" / "1").exists()
    assert tree_bytes(store) == tree_bytes(tiny_store)


def test_cli_validate_repair_as_a_user_runs_it(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    store = tmp_path / "store"
    copy_store(tiny_store, store)
    _truncate(store / "masks" / "part-00000.parquet")
    _flip(_one(store, "encode/_stage.json"))
    check = subprocess.run([CLI, "labels", "validate", str(store)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "masks/part-00000.parquet" in check.stderr and "encode/_stage.json" in check.stderr
    fixed = subprocess.run(
        [CLI, "labels", "validate", str(store), "--repair", "--data-root", str(tiny_root)],
        capture_output=True,
        text=True,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "is valid" in fixed.stdout
    assert tree_bytes(store) == tree_bytes(tiny_store)
