"""Validating a label store (`ppt-labels labels validate`, and every reader before it trains).

A store is valid when: its manifest reads, is of a known schema version and is exactly what its
stage records call for; every stage record is intact (sealed); every listed shard (data, rejects,
Zarr group) is present with its sha256 and row count; nothing unlisted lies among the shards; and
each Select round's selection still has the sha256 its report recorded; and the embedding cache
holds every image of the store, in packs whose bytes match their index. Each problem names the file.

`validate` hashes every file; `verify_store` (what train, eval and show call) uses the
per-machine hash cache of `pipeline.store.verify`, so that only files changed since they were
last hashed are read again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.store.embeddings import store_embeddings
from pipeline.store.finalize import expected_manifest
from pipeline.store.reader import MANIFEST, LabelStore
from pipeline.store.rounds import damaged_rounds
from pipeline.store.stage_record import STAGE_RECORD, read_record_file
from pipeline.store.verify import HashCache

FileHash = Callable[[Path], str]


def validate(
    root: Path, file_hash: FileHash = hashing.sha256_file, rounds: bool = True
) -> list[str]:
    """Every problem found in the store at `root` (empty when it is valid); `rounds`: Select
    rounds too (training, which writes them afresh, does not ask)."""
    root = Path(root)
    try:
        store = LabelStore(root)
    except StoreError as exc:
        return [str(exc)]
    problems = _shard_problems(root, store, file_hash) + _embedding_problems(store, file_hash)
    stages = [s["stage"] for s in store.manifest.get("stages", [])]
    for table in store.tables:
        try:
            if read_record_file(root / table / STAGE_RECORD) is None:
                problems.append(f"{table}/{STAGE_RECORD}: missing")
        except StoreError as exc:
            problems.append(str(exc))
    if not problems:  # the manifest is derived from intact records: it must equal their sum
        try:
            if expected_manifest(root, store.manifest["dataset"], stages) != store.manifest:
                problems.append(f"{MANIFEST}: differs from what the stage records call for")
        except (StoreError, KeyError) as exc:
            problems.append(f"{MANIFEST}: cannot be checked against the stage records ({exc})")
    return problems + (round_problems(root, file_hash) if rounds else [])


def _shard_problems(root: Path, store: LabelStore, file_hash: FileHash) -> list[str]:
    problems = []
    listed = set()
    for entry in store.manifest.get("shards", []):
        path = root / entry["path"]
        listed.add(entry["path"])
        if not path.exists():
            problems.append(f"{entry['path']}: listed in {MANIFEST} but missing")
            continue
        if entry.get("kind") == "zarr":
            if hashing.sha256_tree(path, file_hash) != entry["sha256"]:
                problems.append(f"{entry['path']}: Zarr arrays differ from {MANIFEST} (sha256)")
            continue
        digest = file_hash(path)
        if digest != entry["sha256"]:
            problems.append(
                f"{entry['path']}: sha256 {digest[:12]}… differs from {MANIFEST} "
                f"({entry['sha256'][:12]}…); the file changed after the build"
            )
            continue
        try:
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            problems.append(f"{entry['path']}: unreadable Parquet ({exc})")
            continue
        if rows != entry["rows"]:
            problems.append(f"{entry['path']}: {rows} rows, {MANIFEST} says {entry['rows']}")
    for table in store.tables:
        for path in sorted((root / table).rglob("part-*.*")):
            if path.suffix not in (".parquet", ".zarr"):
                continue
            rel = path.relative_to(root).as_posix()
            if rel not in listed:
                problems.append(f"{rel}: shard not listed in {MANIFEST} (left by another build)")
    return problems


def _embedding_problems(store: LabelStore, file_hash: FileHash) -> list[str]:
    """The store's images the embedding cache lacks, and damaged packs that hold them."""
    if "encode" not in store.tables:
        return []
    try:
        cache, keys = store_embeddings(store.root, store.manifest.get("provenance", {}))
        images = store.table("encode").column("image_sha256").to_pylist()
    except (StoreError, OSError, pa.ArrowInvalid) as exc:
        return [f"encode: {exc}"]
    problems = []
    for key in keys.values():
        problems += [
            f"embedding cache {cache.root}: {p}" for p in cache.verify(key, images, file_hash)
        ]
    return problems


def round_problems(root: Path, file_hash: FileHash = hashing.sha256_file) -> list[str]:
    """Damaged Select rounds, each named by its file."""
    return [
        f"{path.relative_to(root).as_posix()}/{problem}; re-run that round's training "
        "(`labels validate --repair` removes it)"
        for path, problem in damaged_rounds(Path(root), file_hash).items()
    ]


def verify_store(root: Path, rounds: bool = True) -> None:
    """Refuse a store with any problem, naming it: what readers call before they trust a store.
    Only files changed since they were last hashed on this machine are read."""
    cache = HashCache(root)
    problems = validate(root, cache.sha256, rounds)
    cache.save()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreError(
            f"{root}: {problems[0]}{more}; `ppt-labels labels validate {root}` lists them and "
            "`--repair` rebuilds what is damaged"
        )
