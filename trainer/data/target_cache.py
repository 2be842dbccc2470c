"""Low-resolution targets of every candidate mask, computed once per label store.

The criterion compares predicted low-res masks (256², SAM's padded frame) with each pseudo-label
resized the way `trainer.network.soft_sam.lowres_targets` does it: bilinear to SAM's input size,
zero-padded to 1024², averaged over 4 × 4 cells. Doing that per sample per epoch (RLE decode, a
1024² resize per candidate, ≈ 6.6 ms) bounded the loader; here it is done once per store, with
the same resize written as two small separable matrices (`lowres_matrix`), and cached beside the
CLIP feature cache:

    cache_dir/targets-<digest>/targets.arrow   Arrow IPC, one row per candidate with a mask:
        sample_id, cand_idx,
        masks  large_binary  zstd of the (256, 256) float16 soft target
        grid   large_binary  (S, S) float32 area fractions (`mask_to_grid`), only with grid_side
    cache_dir/targets-<digest>/done.json       the key; written last

The key is the store's manifest (which names every shard's content) and the target sizes. A
cache beside the trainer's rather than a pipeline stage: the targets are the trainer's loss
frame (SAM's 1024 input, its 256² logits, the model's point-map grid), not a label, and every
store built before still trains without a rebuild. The file is memory-mapped: loader workers
share its pages, and one target costs a ≈ 40 µs decompression.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from pipeline.core.rle import decode_rle
from pipeline.labelling.grid import mask_to_grid
from pipeline.store.reader import MANIFEST, LabelStore
from pipeline.store.shards import private_dir, publish_dir
from trainer.network.soft_sam import input_size

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the file's meaning changes: older caches are then rebuilt
SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),
        ("masks", pa.large_binary()),
        ("grid", pa.large_binary()),
    ]
)
_CODEC = pa.Codec("zstd", compression_level=3)


def _bilinear(n_in: int, n_out: int) -> sparse.csr_matrix:
    """(n_out, n_in) weights of torch's bilinear resize, align_corners=False, no antialias."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    rows = np.concatenate([np.arange(n_out)] * 2)
    # duplicates (hi == lo at the last input row) are summed by the sparse constructor
    return sparse.csr_matrix(
        (np.concatenate([1.0 - frac, frac]), (rows, np.concatenate([lo, hi]))), (n_out, n_in)
    )


@functools.lru_cache(maxsize=256)
def lowres_matrix(n_in: int, n_resized: int, long_side: int, lowres: int) -> sparse.csr_matrix:
    """(lowres, n_in) operator along one axis: bilinear n_in → n_resized, zero-pad to
    long_side, mean over long_side / lowres cells. `lowres_target` applies it to both axes."""
    cell = long_side // lowres
    cols = np.arange(n_resized)  # the padding's columns are zero: left out
    pool = sparse.csr_matrix((np.full(n_resized, 1.0 / cell), (cols // cell, cols)),
                             (lowres, n_resized))  # fmt: skip
    return (pool @ _bilinear(n_in, n_resized)).astype(np.float32).tocsr()


def lowres_target(mask: np.ndarray, long_side: int = 1024, lowres: int = 256) -> np.ndarray:
    """(H, W) bool mask → (lowres, lowres) float32 soft target, as `lowres_targets` computes it
    (to float32 rounding): the same bilinear resize and cell mean, as R_h · mask · R_wᵀ."""
    h, w = mask.shape
    new_h, new_w = input_size((h, w), long_side)
    rows = lowres_matrix(h, new_h, long_side, lowres)  # (lowres, H)
    cols = lowres_matrix(w, new_w, long_side, lowres)  # (lowres, W)
    x = rows @ mask.astype(np.float32)  # (lowres, W)
    return np.clip((cols @ x.T).T, 0.0, 1.0).astype(np.float32)  # (lowres, lowres)


def target_key(store: LabelStore, grid_side: int, long_side: int, lowres: int) -> dict[str, Any]:
    """Everything the cached targets depend on."""
    return {
        "manifest_sha256": hashlib.sha256((store.root / MANIFEST).read_bytes()).hexdigest(),
        "long_side": int(long_side),
        "lowres": int(lowres),
        "grid_side": int(grid_side),
        "format": FORMAT,
    }


def build_target_cache(
    store: LabelStore, cache_dir: Path, grid_side: int = 0, long_side: int = 1024,
    lowres: int = 256,
) -> Path:  # fmt: skip
    """Compute every candidate mask's targets of `store` once; returns the cache directory.

    A complete cache with the same key is reused as is. Safe when several processes (DDP ranks)
    build it at once: each writes its own temporary directory and the first rename wins.
    """
    key = target_key(store, grid_side, long_side, lowres)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_dir) / f"targets-{digest}"
    if (out / "done.json").exists():
        return out
    sizes = store.samples().select(["sample_id", "height", "width"])
    cands = store.candidates()
    if "mask_rle" not in cands.column_names:
        cands = cands.select(["sample_id", "cand_idx"]).slice(0, 0)
        cands = cands.append_column("mask_rle", pa.array([], pa.string()))
    cands = cands.select(["sample_id", "cand_idx", "mask_rle"])
    cands = cands.filter(pc.fill_null(pc.greater(pc.utf8_length(cands["mask_rle"]), 0), False))
    cands = cands.join(sizes, "sample_id").sort_by([("sample_id", "ascending"),
                                                     ("cand_idx", "ascending")])  # fmt: skip
    masks, grids = [], []
    columns = cands.to_pydict()
    for rle, h, w in zip(columns["mask_rle"], columns["height"], columns["width"], strict=True):
        mask = decode_rle(rle, h, w)
        soft = lowres_target(mask, long_side, lowres).astype(np.float16)
        masks.append(_CODEC.compress(soft.tobytes(), asbytes=True))
        grids.append(
            mask_to_grid(mask, grid_side).astype(np.float32).tobytes() if grid_side else b""
        )
    table = pa.table(
        {"sample_id": columns["sample_id"], "cand_idx": columns["cand_idx"],
         "masks": pa.array(masks, pa.large_binary()), "grid": pa.array(grids, pa.large_binary())},
        schema=SCHEMA,
    )  # fmt: skip
    tmp = private_dir(out)
    with (
        pa.OSFile(str(tmp / "targets.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, SCHEMA) as out_file,
    ):
        out_file.write_table(table, max_chunksize=max(table.num_rows, 1))
    (tmp / "done.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    publish_dir(tmp, out)  # where another process finished first, its cache (the same) stays
    log.info("cached the targets of %d candidates of %s in %s", table.num_rows, store.root, out)
    return out


class TargetCache:
    """Read access to one store's cached targets (`build_target_cache`), memory-mapped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.key = json.loads((self.path / "done.json").read_text())
        self.lowres = int(self.key["lowres"])
        self.grid_side = int(self.key["grid_side"])
        source = pa.memory_map(str(self.path / "targets.arrow"))
        table = pa.ipc.open_file(source).read_all()
        self.ids = table.column("sample_id").combine_chunks()
        self.cand_idx = table.column("cand_idx").to_numpy()
        self._masks = _blobs(table.column("masks"))
        self._grid = _blobs(table.column("grid"))

    def rows(self, sample_ids: pa.Array, cand_idx: np.ndarray) -> np.ndarray:
        """(m,) int64 row of each (sample_id, cand_idx) in the cache; -1 where absent."""

        def keys(ids: pa.Array, idx: np.ndarray) -> pa.Array:
            text = pa.array(idx.astype(str), pa.large_string())
            sep = pa.scalar("\x1f", pa.large_string())
            return pc.binary_join_element_wise(ids.cast(pa.large_string()), text, sep)

        found = pc.index_in(keys(sample_ids, cand_idx), value_set=keys(self.ids, self.cand_idx))
        return pc.fill_null(found, -1).to_numpy().astype(np.int64)

    def mask(self, row: int) -> np.ndarray:
        """(lowres, lowres) float16 soft target of one cached row."""
        offsets, data = self._masks
        raw = _CODEC.decompress(
            data[offsets[row] : offsets[row + 1]], decompressed_size=2 * self.lowres**2,
            asbytes=True,
        )  # fmt: skip
        return np.frombuffer(raw, np.float16).reshape(self.lowres, self.lowres)

    def grid(self, row: int) -> np.ndarray:
        """(S, S) float32 area fractions of one cached row (a cache built with grid_side)."""
        offsets, data = self._grid
        s = self.grid_side
        return np.frombuffer(data[offsets[row] : offsets[row + 1]], np.float32).reshape(s, s)


def _blobs(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n + 1,) int64, data uint8) of a large_binary column, zero-copy."""
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if len(array) == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.uint8)
    _, offsets, data = array.buffers()
    off = np.frombuffer(offsets, np.int64)[array.offset : array.offset + len(array) + 1]
    return off, np.frombuffer(data, np.uint8)
