"""Verifying what a re-run skips: every shard a stage record lists, against its recorded sha256.

A finished stage is only "up to date" when each listed data shard, rejects shard and Zarr group
still has the sha256 its `_stage.json` recorded; a damaged or missing one is recomputed (and only
that one). Hashing a RefCOCO-size store on every no-op re-run would read tens of GB, so, as DVC's
state database does, a per-machine cache remembers each file's sha256 under its stat key (device,
inode, size, mtime_ns, ctime_ns): an unchanged file is not read again, and any write to a file
changes its ctime, which no user tool can set back, so a damaged file is always re-read.
`ppt-labels labels validate` hashes everything without the cache.

The cache lives in `$PPT_LABELS_CACHE` (default `~/.cache/ppt-labels`), one small JSON per store;
it is an optimisation only: deleting it costs one full re-hash.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.core import hashing
from pipeline.store.stage_record import REJECTS_DIR

log = logging.getLogger(__name__)

CACHE_ENV = "PPT_LABELS_CACHE"


def cache_dir() -> Path:
    """Where the per-machine hash caches live."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ppt-labels")


class HashCache:
    """sha256 of a store's files by stat key; `save()` writes it back (atomically, best effort)."""

    def __init__(self, store: Path) -> None:
        self.store = Path(store).resolve()
        key = hashing.sha256_bytes(str(self.store).encode())[:24]
        self.path = cache_dir() / "hashes" / f"{key}.json"
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.entries = loaded
        except (OSError, ValueError):
            pass  # no cache yet, or a damaged one: hash from scratch

    @staticmethod
    def _stat_key(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def sha256(self, path: Path) -> str:
        """The file's sha256, read from disk only when its stat key changed."""
        rel = os.path.relpath(path, self.store)
        stat_key = self._stat_key(path)
        hit = self.entries.get(rel)
        if hit is not None and hit[:-1] == stat_key:
            return str(hit[-1])
        digest = hashing.sha256_file(path)
        self.entries[rel] = [*stat_key, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        """Write the cache back; a cache that cannot be written is only a lost optimisation."""
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(self.entries, sort_keys=True))
            tmp.replace(self.path)
            self.dirty = False
        except OSError as exc:
            log.debug("hash cache %s not written: %s", self.path, exc)


def damaged_shards(table_dir: Path, record: dict[str, Any], cache: HashCache) -> dict[str, str]:
    """{shard name: what is wrong} for every shard of `record` whose files differ from it."""
    damaged: dict[str, str] = {}
    for entry in record.get("shards", []):
        name = entry["name"]
        problem = shard_problem(table_dir, entry, cache.sha256)
        if problem is not None:
            damaged[name] = problem
    return damaged


def shard_problem(table_dir: Path, entry: dict[str, Any], file_hash: Any) -> str | None:
    """What differs between one recorded shard (data, rejects, arrays) and the disk, or None."""
    name = entry["name"]
    files = [(table_dir / name, entry["sha256"]), (table_dir / REJECTS_DIR / name,
             entry["rejects_sha256"])]  # fmt: skip
    for path, want in files:
        if not path.is_file():
            return f"{path.relative_to(table_dir.parent)} is missing"
        if file_hash(path) != want:
            return f"{path.relative_to(table_dir.parent)} differs from its recorded sha256"
    if entry.get("arrays_sha256"):
        arrays = table_dir / Path(name).with_suffix(".zarr").name
        if not arrays.is_dir():
            return f"{arrays.relative_to(table_dir.parent)} is missing"
        if hashing.sha256_tree(arrays, file_hash) != entry["arrays_sha256"]:
            return f"{arrays.relative_to(table_dir.parent)} differs from its recorded sha256"
    return None
