"""Sharded Parquet writing: explicit schemas, zero-padded ids, temp-then-rename, fingerprints.

Every shard carries, in its Parquet key-value metadata, the fingerprint of the work that produced
it (stage config hash + input shard hashes). A re-run reads only that footer to decide whether the
shard is already done, so resuming never trusts a file just because it exists.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.hashing import sha256_file, sha256_tree

FINGERPRINT_KEY = b"ppt.fingerprint"
SHARD_GLOB = "part-*.parquet"


def shard_name(index: int) -> str:
    """File name of shard `index`: zero-padded so that lexical order is shard order."""
    return f"part-{index:05d}.parquet"


def _replace_atomically(tmp: Path, final: Path) -> None:
    """fsync then rename: a crash leaves either the old file or the new one, never half of one."""
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(final)


def remove_leftovers(directory: Path) -> None:
    """Delete the temporaries (`.NAME.tmp-PID`) a killed writer left in `directory`: call it
    where one writer owns the directory (under the store lock, in a run dir)."""
    for leftover in Path(directory).glob(".*.tmp-*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path, schema: pa.Schema, fp: str) -> str:
    """Write `table` (cast to `schema`) to `path` atomically; returns the file's sha256.

    Compression, row-group size and metadata are fixed so equal tables give equal bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.select(schema.names).cast(schema)
    table = table.replace_schema_metadata({FINGERPRINT_KEY: fp.encode()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=3,
        row_group_size=1 << 16,
        write_statistics=True,
        store_schema=True,
    )
    _replace_atomically(tmp, path)
    return sha256_file(path)


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically with sorted keys and a trailing newline (stable bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=True) + "\n")
    _replace_atomically(tmp, path)


def write_zarr(arrays: dict[str, np.ndarray], attrs: dict[str, Any], path: Path) -> str:
    """Write arrays as one Zarr v3 group at `path` atomically; returns its tree sha256.

    One chunk per leading-axis row (one image's embedding, one phrase's map): readers fetch
    single rows, and fixed chunking plus zstd keep the bytes deterministic.
    """
    import zarr

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    for name, array in sorted(arrays.items()):
        chunks = (1, *array.shape[1:]) if array.ndim and array.shape[0] else None
        group.create_array(name, data=array, chunks=chunks or "auto")
    group.attrs.update(attrs)
    if path.exists():
        shutil.rmtree(path)  # the table shard is still absent or stale, so nothing reads it
    tmp.replace(path)
    return sha256_tree(path)


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint stored in a shard's footer, or None if the file is missing or unreadable."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = metadata.get(FINGERPRINT_KEY)
    return value.decode() if value is not None else None


def read_parquet(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """Read one shard, dropping the writer's metadata so tables concatenate cleanly."""
    table = pq.read_table(path, schema=schema)
    return table.replace_schema_metadata(None)


def remove_stale(directory: Path, keep: set[str]) -> list[str]:
    """Delete shards and temp files in `directory` that are not in `keep`; returns removed names."""
    removed = []
    if not directory.exists():
        return removed
    keep_arrays = {Path(name).with_suffix(".zarr").name for name in keep}
    for path in sorted(directory.iterdir()):
        stale_shard = path.match(SHARD_GLOB) and path.name not in keep
        stale_arrays = path.match("part-*.zarr") and path.name not in keep_arrays
        if stale_shard or stale_arrays or path.name.startswith(".part-"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
    return removed
