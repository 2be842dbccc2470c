"""Sharded row arrays (pipeline.store.shards): a file per shard, not per row; rows read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipeline.store import shards
from tests.helpers import tree_bytes


def _data_files(array_dir: Path) -> list[Path]:
    return sorted(p for p in array_dir.rglob("*") if p.is_file() and p.name != "zarr.json")


def test_rows_fill_files_of_max_bytes_and_read_back_one_by_one(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((11, 3, 5)).astype(np.float16)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    row_bytes = rows[0].nbytes
    array = shards.create_row_array(group, "x", data=rows, max_bytes=4 * row_bytes + 1)
    assert (array.chunks, array.shards) == ((1, 3, 5), (4, 3, 5))
    assert len(_data_files(tmp_path / "g.zarr" / "x")) == 3  # ceil(11 / 4) files, not 11
    for r in range(len(rows)):
        assert np.array_equal(array[r], rows[r])


def test_appended_batches_give_the_bytes_of_one_write(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).standard_normal((10, 4, 4)).astype(np.float16)
    limit = 3 * rows[0].nbytes
    whole = zarr.open_group(str(tmp_path / "whole.zarr"), mode="w", zarr_format=3)
    shards.create_row_array(whole, "x", data=rows, max_bytes=limit)
    batched = zarr.open_group(str(tmp_path / "batched.zarr"), mode="w", zarr_format=3)
    target = shards.create_row_array(
        batched, "x", shape=rows.shape, dtype=rows.dtype, max_bytes=limit
    )
    appender = shards.RowAppender(target)
    for start, stop in ((0, 2), (2, 7), (7, 8), (8, 10)):  # batches across file boundaries
        appender.append(rows[start:stop])
    appender.close()
    assert appender.written == len(rows)
    assert tree_bytes(tmp_path / "batched.zarr") == tree_bytes(tmp_path / "whole.zarr")


def test_one_value_a_row_and_empty_arrays_are_plain_chunks(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    lengths = shards.create_row_array(group, "n", data=np.arange(7, dtype=np.int32))
    assert lengths.shards is None and lengths.chunks == (7,)  # no per-row index for 4-byte rows
    empty = shards.create_row_array(group, "e", data=np.zeros((0, 2, 2), np.float16))
    assert empty.shape == (0, 2, 2)
    assert _data_files(tmp_path / "g.zarr" / "e") == []
