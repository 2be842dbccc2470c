"""Stage records: `<table>/_stage.json`, the completion mark a finished stage writes last.

A stage record lists every shard the stage wrote (rows, sha256, rejects, arrays), the stage's
config and its fingerprint, and seals itself: `record_sha256` is the sha256 of the rest, so a
record damaged on disk is never trusted (it reads as absent to the stage that wrote it, which
writes it again, and as a one-line error to a stage that reads it). Downstream stages read only
records, never a directory listing, so a shard left over from another plan is never read. (The
store's own completion mark is manifest.json, written by `pipeline.store.finalize.finalize`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.store import shards
from pipeline.store.schemas import STAGE_TABLES

STAGE_RECORD = "_stage.json"
REJECTS_DIR = "rejects"
SEAL = "record_sha256"
SHARD_KEYS = ("name", "rows", "sha256", "rejects", "rejects_sha256")


def _seal_of(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != SEAL}
    return hashing.sha256_bytes(hashing.canonical_json(body).encode())


def write_stage_record(table_dir: Path, record: dict[str, Any]) -> None:
    """Write a stage's record, sealed, as the last file of the stage (atomically)."""
    shards.write_json({**record, SEAL: _seal_of(record)}, Path(table_dir) / STAGE_RECORD)


def stage_dir(store: Path, stage: str) -> Path:
    """The directory stage `stage` writes in `store`."""
    if stage not in STAGE_TABLES:
        raise StoreError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_TABLES)}")
    return Path(store) / STAGE_TABLES[stage]


def read_stage_record(store: Path, stage: str) -> dict[str, Any] | None:
    """The record of a finished stage, or None if the stage has not completed."""
    return read_record_file(stage_dir(store, stage) / STAGE_RECORD)


def read_record_file(path: Path) -> dict[str, Any] | None:
    """A `_stage.json` by path (None if absent); an unreadable one is a StoreError."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable stage record ({exc}); re-run the stage") from None
    if not isinstance(record, dict) or SEAL not in record:
        raise StoreError(f"{path}: stage record of another format or version; re-run the stage")
    if record[SEAL] != _seal_of(record):
        raise StoreError(
            f"{path}: damaged stage record (its seal does not match); re-run the stage"
        )
    entries = record.get("shards")
    if not isinstance(entries, list) or not all(
        isinstance(s, dict) and all(k in s for k in SHARD_KEYS) for s in entries
    ):
        raise StoreError(f"{path}: stage record of another format; re-run the stage")
    return record


def record_of_shard(shard: str | Path) -> dict[str, Any]:
    """The record of the stage that wrote `shard` (its `_stage.json`, which must exist)."""
    path = Path(shard).parent / STAGE_RECORD
    record = read_record_file(path)
    if record is None:
        raise StoreError(f"{path}: missing stage record; re-run the stage")
    return record
