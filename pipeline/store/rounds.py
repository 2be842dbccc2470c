"""Select rounds in a label store: the layout, reading them, and writing one under the store's lock.

    <store>/rounds/<k>/selection.parquet   one row per H_ref pair (`SELECTION`)
    <store>/rounds/<k>/report.json         the round's numbers, and `selection_sha256`

A round is written by the trainer (`trainer.loop.select`), selection first, then its report, each
temp-then-rename, under the store's write lock; the report records the selection's sha256, so
`ppt-labels labels validate` tells a damaged selection from a sound one. `rounds/` is not a stage
table: the manifest does not list it, so a store stays valid across rounds. Exporting, diffing and
reporting read rounds through this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import StoreError
from pipeline.core.hashing import sha256_file
from pipeline.store import shards
from pipeline.store.lock import store_lock

ROUNDS_DIR = "rounds"
SELECTION_FILE = "selection.parquet"
REPORT_FILE = "report.json"
SELECTION_SHA = "selection_sha256"
SELECTION = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),  # the chosen candidate (best overlap with the model's mask)
        ("confidence", pa.float32()),  # the model's referent probability of its mask
        ("overlap", pa.float32()),  # IoU of the model's mask and the chosen candidate's
        ("kept", pa.bool_()),  # overlap ≥ threshold: the pair trains with c = 1 on cand_idx
        ("threshold", pa.float32()),
        ("round", pa.int32()),
    ]
)


def selection_path(store_root: Path, round_index: int) -> Path:
    """`<store>/rounds/<k>/selection.parquet`."""
    return Path(store_root) / ROUNDS_DIR / str(round_index) / SELECTION_FILE


def write_round(
    store_root: Path, round_index: int, table: pa.Table, report: dict[str, Any]
) -> None:
    """Write round k's selection and report (waits for the store's lock if a build holds it)."""
    path = selection_path(store_root, round_index)
    with store_lock(store_root, wait=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        shards.remove_leftovers(path.parent)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
        shards.write_json({**report, SELECTION_SHA: sha256_file(path)}, path.with_name(REPORT_FILE))


def round_indices(store_root: Path) -> list[int]:
    """The rounds written into a store, ascending (those with a selection table)."""
    rounds = Path(store_root) / ROUNDS_DIR
    if not rounds.is_dir():
        return []
    found = (p.name for p in rounds.iterdir() if (p / SELECTION_FILE).is_file())
    return sorted(int(name) for name in found if name.isdigit())


def selection_rows(store_root: Path, round_index: int) -> list[dict[str, Any]]:
    """Every row of a written round (kept or not), sorted by sample_id."""
    path = selection_path(store_root, round_index)
    if not path.is_file():
        have = round_indices(store_root)
        raise StoreError(
            f"{path}: no Select round {round_index} in {store_root} (rounds present: "
            f"{', '.join(map(str, have)) or 'none'}); training writes them (`ppt-labels train`)"
        )
    return pq.read_table(path, schema=SELECTION).to_pylist()


def read_selection(store_root: Path, round_index: int) -> dict[str, int]:
    """{sample_id: chosen cand_idx} of the kept pairs of a written round."""
    rows = selection_rows(store_root, round_index)
    return {r["sample_id"]: r["cand_idx"] for r in rows if r["kept"]}


def round_report(store_root: Path, round_index: int) -> dict[str, Any] | None:
    """The round's report.json (kept share, accuracy where truth exists), None if absent."""
    path = Path(store_root) / ROUNDS_DIR / str(round_index) / REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def damaged_rounds(
    store_root: Path, file_hash: Callable[[Path], str] = sha256_file
) -> dict[Path, str]:
    """Round dir → what is wrong: a report that does not read, or a selection that differs from
    the sha256 its report recorded (rounds written before reports recorded it are not checked)."""
    out = {}
    for report_path in sorted((Path(store_root) / ROUNDS_DIR).glob(f"*/{REPORT_FILE}")):
        selection = report_path.with_name(SELECTION_FILE)
        try:
            want = json.loads(report_path.read_text()).get(SELECTION_SHA)
        except (ValueError, UnicodeDecodeError, AttributeError):
            out[report_path.parent] = f"{REPORT_FILE}: unreadable Select report"
            continue
        if want is not None and (not selection.is_file() or file_hash(selection) != want):
            out[report_path.parent] = f"{SELECTION_FILE}: differs from its report's sha256"
    return out
