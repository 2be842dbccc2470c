"""Stage records: `<table>/_stage.json`, the completion mark a finished stage writes last.

A stage record lists every shard the stage wrote (rows, sha256, rejects, arrays), the stage's
config and its fingerprint. Downstream stages read only records, never a directory listing, so
a shard left over from another plan is never read. (The store's own completion mark is
manifest.json, written by `pipeline.store.finalize.finalize`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import StoreError
from pipeline.store.schemas import STAGE_TABLES

STAGE_RECORD = "_stage.json"
REJECTS_DIR = "rejects"


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
        return json.loads(path.read_text())
    except ValueError as exc:
        raise StoreError(f"{path}: unreadable stage record ({exc}); re-run the stage") from None


def record_of_shard(shard: str | Path) -> dict[str, Any]:
    """The record of the stage that wrote `shard` (its `_stage.json`, which must exist)."""
    path = Path(shard).parent / STAGE_RECORD
    record = read_record_file(path)
    if record is None:
        raise StoreError(f"{path}: missing stage record; re-run the stage")
    return record
