"""Validating a label store: every listed shard present with its sha256 and row count, nothing
unlisted, every stage record present (`ppt-labels labels validate`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.store.reader import MANIFEST, LabelStore
from pipeline.store.stage_record import STAGE_RECORD


def validate(root: Path) -> list[str]:
    """Every problem found in the store at `root` (empty when it is valid)."""
    root = Path(root)
    try:
        store = LabelStore(root)
    except StoreError as exc:
        return [str(exc)]
    problems = []
    listed = set()
    for entry in store.manifest.get("shards", []):
        path = root / entry["path"]
        listed.add(entry["path"])
        if not path.exists():
            problems.append(f"{entry['path']}: listed in {MANIFEST} but missing")
            continue
        if entry.get("kind") == "zarr":
            if hashing.sha256_tree(path) != entry["sha256"]:
                problems.append(f"{entry['path']}: Zarr arrays differ from {MANIFEST} (sha256)")
            continue
        digest = hashing.sha256_file(path)
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
        if not (root / table / STAGE_RECORD).exists():
            problems.append(f"{table}/{STAGE_RECORD}: missing")
    return problems
