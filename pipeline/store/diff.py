"""What changed between two label stores, or between two Select rounds of one store.

Stores: per table present in either, the rows added, removed and changed, rows matched by the
table's key (`TABLE_KEYS`: sample_id, (sample_id, cand_idx), image_sha256 or composite_id) and
compared on every column. Rounds: the H_ref pairs that appear in one round only, and those whose
chosen candidate or kept flag changed.

A side is named by a path: a store directory, or `<store>/rounds/<k>` for one of its rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.store.reader import LabelStore
from pipeline.store.rounds import ROUNDS_DIR, selection_rows

# table → the columns that identify one of its rows
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "samples": ("sample_id",),
    "encode": ("image_sha256",),
    "augment": ("composite_id",),
}
CANDIDATE_KEY = ("sample_id", "cand_idx")  # every other table: one row per candidate
EXAMPLES = 5  # keys of each kind kept for the user to look at


@dataclass
class TableDiff:
    """Rows of one table (or round) in A only, in B only, and in both but different."""

    name: str
    rows_a: int
    rows_b: int
    added: list[Any] = field(default_factory=list)  # keys in B only
    removed: list[Any] = field(default_factory=list)  # keys in A only
    changed: dict[Any, list[str]] = field(default_factory=dict)  # key → columns that differ

    @property
    def same(self) -> bool:
        """No row added, removed or changed."""
        return not (self.added or self.removed or self.changed)


def round_of(path: Path) -> tuple[Path, int] | None:
    """(store root, k) when `path` is `<store>/rounds/<k>`, else None."""
    path = Path(path)
    if path.parent.name == ROUNDS_DIR and path.name.isdigit():
        return path.parent.parent, int(path.name)
    return None


def diff_rows(
    name: str, a: list[dict[str, Any]], b: list[dict[str, Any]], key: tuple[str, ...]
) -> TableDiff:
    """Compare two lists of rows matched on the columns `key`."""

    def index(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
        return {tuple(r[k] for k in key) if len(key) > 1 else r[key[0]]: r for r in rows}

    ia, ib = index(a), index(b)
    out = TableDiff(name, len(a), len(b))
    out.added = sorted(set(ib) - set(ia))
    out.removed = sorted(set(ia) - set(ib))
    for k in sorted(set(ia) & set(ib)):
        columns = sorted(set(ia[k]) | set(ib[k]))
        differ = [c for c in columns if ia[k].get(c) != ib[k].get(c)]
        if differ:
            out.changed[k] = differ
    return out


def diff_stores(a: Path, b: Path) -> list[TableDiff]:
    """Per table of either store, what B added, removed and changed relative to A."""
    sa, sb = LabelStore(a), LabelStore(b)
    out = []
    for name in dict.fromkeys([*sa.tables, *sb.tables]):
        rows_a = sa.table(name).to_pylist() if name in sa.tables else []
        rows_b = sb.table(name).to_pylist() if name in sb.tables else []
        out.append(diff_rows(name, rows_a, rows_b, TABLE_KEYS.get(name, CANDIDATE_KEY)))
    return out


def diff_rounds(a: Path, b: Path) -> TableDiff:
    """The pairs of round B that round A lacks, the reverse, and those whose chosen candidate or
    kept flag changed (confidence and overlap always move between rounds: not compared)."""
    ra, rb = round_of(a), round_of(b)
    if ra is None or rb is None:
        raise ConfigError(f"{a} and {b}: name two rounds as <store>/rounds/<k>, or two stores")
    keep = ("sample_id", "cand_idx", "kept")
    rows_a = [{k: r[k] for k in keep} for r in selection_rows(*ra)]
    rows_b = [{k: r[k] for k in keep} for r in selection_rows(*rb)]
    return diff_rows(f"round {ra[1]} → {rb[1]}", rows_a, rows_b, ("sample_id",))


def diff_paths(a: Path, b: Path) -> list[TableDiff]:
    """`diff_rounds` when both paths are rounds, `diff_stores` when both are stores."""
    rounds = (round_of(a) is not None, round_of(b) is not None)
    if rounds == (True, True):
        return [diff_rounds(a, b)]
    if rounds != (False, False):
        raise ConfigError(
            f"{a} and {b}: compare two stores or two rounds (<store>/rounds/<k>), not one of each"
        )
    return diff_stores(a, b)
