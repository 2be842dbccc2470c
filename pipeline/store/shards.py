"""Sharded writing: explicit schemas, zero-padded ids, temp-then-rename, fingerprints.

Every shard carries, in its Parquet key-value metadata, the fingerprint of the work that produced
it (stage config hash + input shard hashes). A re-run reads only that footer to decide whether the
shard is already done, so resuming never trusts a file just because it exists.

Arrays (Zarr v3) are written one file per array per shard, not one per row (STYLE 19): a row
array uses Zarr's sharding codec with one inner chunk per row and one shard file holding up to
`SHARD_FILE_BYTES` of rows (so a pipeline shard's array is one file, a few for a shard of large
rows). Sharding rather than one chunk of the whole shard's rows, because readers fetch single
rows (the masks stage one image's embedding, the trainer one sample's features): a sharded read
of a row reads the shard's index (16 bytes a row, at the end of the file) and that row's
compressed bytes, where one whole-shard chunk would decompress every row to return one. File
counts then grow with shards: a RefCOCO-size store (142k sentences, ingest.shard_size 512) is
278 shards × 22 files (Parquet data + rejects of seven stages, two Zarr groups) ≈ 6.1k files,
where a file per row made ≈ 345k (`bench/store_layout.py`).
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
SHARD_FILE_BYTES = 256 << 20  # rows of one array per Zarr shard file, at most (one row at least)


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


def private_dir(out: Path) -> Path:
    """A fresh directory beside `out` that only this process writes (`.NAME.tmp-PID`), for a
    cache that several processes may build at once; `publish_dir` moves it into place. The
    leftovers of writers that died on this host are removed first (a cache directory has no one
    owner, so `remove_leftovers` cannot be used there)."""
    for leftover in out.parent.glob(f".{out.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, out: Path, done: str = "done.json") -> None:
    """Rename a complete `private_dir` to `out`; where another process published first (its
    `done` file is there: the same content), keep that one and drop this one."""
    if out.exists() and not (out / done).exists():
        shutil.rmtree(out, ignore_errors=True)  # incomplete: an older layout's leftover
    try:
        tmp.rename(out)
    except OSError:  # `out` is another process's complete copy
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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


def rows_per_file(shape: tuple[int, ...], dtype: Any, max_bytes: int = SHARD_FILE_BYTES) -> int:
    """Rows of an array of `shape` that one Zarr shard file holds: all of them up to `max_bytes`."""
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, min(shape[0], max_bytes // max(row_bytes, 1)))


def create_row_array(
    group: Any,
    name: str,
    data: np.ndarray | None = None,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    max_bytes: int = SHARD_FILE_BYTES,
) -> Any:
    """Create array `name` in Zarr `group`: one inner chunk per leading-axis row, grouped into
    shard files of `rows_per_file` rows (with `data`, written now; else empty, of shape, dtype).

    A 1-D array (a value per row, read whole) is plain chunks of `rows_per_file` rows: a per-row
    index entry (16 bytes) would outweigh its 4-byte rows. Fill an empty one a whole shard file at
    a time (slices aligned to `rows_per_file`): a partial one is read back and rewritten.
    """
    content = {"data": data} if data is not None else {"shape": shape, "dtype": dtype}
    shape, dtype = (data.shape, data.dtype) if data is not None else (tuple(shape), dtype)
    if not shape or shape[0] == 0:  # a scalar, or no rows: nothing to shard
        return group.create_array(name, **content)
    per_file = rows_per_file(shape, dtype, max_bytes)
    if len(shape) == 1:
        return group.create_array(name, **content, chunks=(per_file,))
    return group.create_array(
        name, **content, chunks=(1, *shape[1:]), shards=(per_file, *shape[1:])
    )


class RowAppender:
    """Fills an empty `create_row_array` array batch by batch, one whole shard file per write
    (a batch that ends inside a file would have that file read back and rewritten per batch)."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.per_file = (array.shards or array.chunks)[0]  # rows of one file
        self.pending: list[np.ndarray] = []
        self.written = 0

    def append(self, rows: np.ndarray) -> None:
        """Queue `rows` (the next rows of the array); write every shard file they complete."""
        self.pending.append(rows)
        if sum(len(p) for p in self.pending) >= self.per_file:
            self._write(whole_files=True)

    def close(self) -> None:
        """Write what is queued (the last, partly filled file)."""
        if self.pending:
            self._write(whole_files=False)

    def _write(self, whole_files: bool) -> None:
        block = np.concatenate(self.pending)
        stop = len(block) - len(block) % self.per_file if whole_files else len(block)
        self.array[self.written : self.written + stop] = block[:stop]
        self.pending = [block[stop:]] if stop < len(block) else []
        self.written += stop


def write_zarr(arrays: dict[str, np.ndarray], attrs: dict[str, Any], path: Path) -> str:
    """Write arrays as one Zarr v3 group at `path` atomically; returns its tree sha256.

    Each array is sharded by `create_row_array` (one file per array, one index entry per row):
    readers fetch single rows, and fixed chunking plus zstd keep the bytes deterministic.
    """
    import zarr

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    for name, array in sorted(arrays.items()):
        create_row_array(group, name, data=array)
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
    """Delete shards in `directory` that are not in `keep`, and every temporary there (a killed
    writer's: `remove_leftovers`, the caller holding the store's lock); returns the names removed
    besides those temporaries."""
    removed = []
    if not directory.exists():
        return removed
    remove_leftovers(directory)
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
