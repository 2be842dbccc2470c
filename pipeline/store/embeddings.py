"""The embedding cache: each distinct image through each frozen encoder once, for every store.

SAM's image embedding is 2 MB an image in float16; RefCOCO, RefCOCO+ and RefCOCOg share most of
their COCO images, so the stores do not hold embeddings themselves: they point into one cache
(params.yaml encode.cache; by default `_embeddings` beside the store, so the stores in one
directory share it) by image sha256 and encoder key.

    <cache>/<partition>/<encoder key>/pack-<id>.zarr     one row array: sam_embedding | clip_dense
    <cache>/<partition>/<encoder key>/pack-<id>.parquet  its index: image_sha256 → row, sizes

- Encoder key: "<kind>-<16 hex>", a digest of the encoder's identity (SAM variant and checkpoint
  sha256; CLIP architecture, checkpoint sha256, input side, v-v blocks). Other weights are another
  key, never a mix.
- Partition: the directory one writer owns, named after the store that wrote it (one DVC output
  per encode stage; DVC refuses two stages writing one output). Lookups read every partition, so
  an image that any store encoded with this encoder is never encoded again.
- Pack: what one encode shard added. Its id is a digest of its image sha256s, so the same images
  make the same pack. The Zarr group is written first, the index last with the group's tree
  sha256 in its footer, each atomically: an index file marks a complete pack, and `verify`
  checks the group against it.

Stores record image sha256s and encoder keys, not packs, so a store's bytes do not depend on which
store encoded an image first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.store import shards
from pipeline.store.stage_record import record_of_shard

CACHE_ENV = "PPT_EMBEDDINGS"  # another place for every store's cache (a shared copy)
ARRAY_OF = {"sam": "sam_embedding", "clip": "clip_dense"}  # encoder kind → its row array

PACK_INDEX = pa.schema(
    [
        ("image_sha256", pa.string()),
        ("row", pa.int32()),  # row of the image in the pack's array
        ("height", pa.int32()),  # original image size
        ("width", pa.int32()),
        ("input_height", pa.int32()),  # SAM's resized input before padding (0 for CLIP)
        ("input_width", pa.int32()),
    ]
)


def encoder_key(kind: str, identity: dict[str, Any]) -> str:
    """The cache key of an encoder: its kind and a digest of what makes its outputs."""
    if kind not in ARRAY_OF:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {sorted(ARRAY_OF)}")
    return f"{kind}-{hashing.fingerprint(kind, identity)[:16]}"


@dataclass(frozen=True)
class Entry:
    """Where one image's row is: a pack's Zarr group and row, plus the image's sizes."""

    pack: Path  # the pack's Zarr group
    row: int
    height: int
    width: int
    input_height: int
    input_width: int


class EmbeddingCache:
    """The cache rooted at `root`: lookups across every partition, writes into one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._index: dict[str, dict[str, Entry]] = {}  # encoder key → image sha256 → entry
        self._read: dict[str, set[Path]] = {}  # encoder key → pack indexes read so far
        self._groups: dict[Path, Any] = {}

    def index(self, key: str) -> dict[str, Entry]:
        """image sha256 → entry for every complete pack of `key`, in every partition.

        Incremental: a pack index is read once per cache object; a later call reads only packs
        written since (so a process reads a RefCOCO-size cache's few hundred indexes once).
        """
        index = self._index.setdefault(key, {})
        seen = self._read.setdefault(key, set())
        for path in sorted(self.root.glob(f"*/{key}/pack-*.parquet")):
            if path in seen:
                continue
            table = shards.read_parquet(path, PACK_INDEX).to_pylist()
            group = path.with_suffix(".zarr")
            for r in table:  # the first pack (by partition, then id) that holds an image wins
                index.setdefault(
                    r["image_sha256"],
                    Entry(group, r["row"], r["height"], r["width"], r["input_height"],
                          r["input_width"]),
                )  # fmt: skip
            seen.add(path)
        return index

    def missing(self, key: str, images: list[str]) -> list[str]:
        """The images of `images` that no pack of `key` holds, in the given order."""
        index = self.index(key)
        return [h for h in images if h not in index]

    def write_pack(
        self,
        partition: str,
        key: str,
        rows: dict[str, list[int]],
        data: np.ndarray,
        attrs: dict[str, Any],
    ) -> Path:
        """Store `data` (one row per image of `rows["image_sha256"]`) as a pack of `key` in
        `partition`; `rows` holds PACK_INDEX's columns but "row". Returns the index path."""
        kind = key.split("-", 1)[0]
        digest = hashing.fingerprint(key, sorted(rows["image_sha256"]))[:16]
        directory = self.root / partition / key
        directory.mkdir(parents=True, exist_ok=True)
        group = directory / f"pack-{digest}.zarr"
        zarr_sha = shards.write_zarr({ARRAY_OF[kind]: data}, {**attrs, "encoder": key}, group)
        table = pa.table({**rows, "row": list(range(len(data)))}, schema=PACK_INDEX)
        index = group.with_suffix(".parquet")
        shards.write_parquet(table, index, PACK_INDEX, fp=zarr_sha)  # footer: the group's sha
        return index

    def group(self, entry: Entry) -> Any:
        """The Zarr group of `entry`'s pack, opened read-only once per cache object."""
        import zarr

        if entry.pack not in self._groups:
            self._groups[entry.pack] = zarr.open_group(str(entry.pack), mode="r")
        return self._groups[entry.pack]

    def row(self, key: str, image: str) -> np.ndarray:
        """One image's row of `key`'s array (SAM: (256, 64, 64) f16; CLIP: (G, G, D) f16)."""
        entry = self.entry(key, image)
        return np.asarray(self.group(entry)[ARRAY_OF[key.split("-", 1)[0]]][entry.row])

    def rows(self, key: str, images: list[str]) -> np.ndarray:
        """Rows of `images`, stacked in order: one read per pack, not one per image."""
        kind = key.split("-", 1)[0]
        entries = [self.entry(key, h) for h in images]
        by_pack: dict[Path, list[int]] = {}
        for i, entry in enumerate(entries):
            by_pack.setdefault(entry.pack, []).append(i)
        out: np.ndarray | None = None
        for positions in by_pack.values():
            array = self.group(entries[positions[0]])[ARRAY_OF[kind]]
            got = array.get_orthogonal_selection(([entries[i].row for i in positions],))
            if out is None:
                out = np.empty((len(images), *array.shape[1:]), array.dtype)
            out[positions] = got
        if out is None:
            raise StoreError("no images asked for")
        return out

    def entry(self, key: str, image: str) -> Entry:
        """The entry of `image` under `key`; a clear error when the cache lacks it. The cache is
        listed again only on a miss (packs written since), not on every lookup."""
        index = self._index.get(key, {})
        if image not in index:
            index = self.index(key)
        if image not in index:
            raise StoreError(
                f"{self.root}: no {key} embedding of image {image[:12]}…: the embedding cache is "
                "missing or incomplete (fetch it with `dvc pull`, or re-run the store's encode "
                "stage: `ppt-labels build`, or `labels validate --repair`)"
            )
        return index[image]

    def verify(
        self, key: str, images: list[str], file_hash: Callable[[Path], str] = hashing.sha256_file
    ) -> list[str]:
        """Problems: images the cache lacks, and damaged packs that hold them."""
        index = self.index(key)
        problems = [f"image {h[:12]}… has no {key} embedding" for h in images if h not in index]
        for pack in self.damaged(key, images, file_hash):
            problems.append(
                f"{pack}: its bytes differ from its index (a damaged pack: a re-run of store "
                f"{pack.parent.parent.name!r}'s encode stage encodes its images again)"
            )
        return problems

    def damaged(
        self, key: str, images: list[str], file_hash: Callable[[Path], str] = hashing.sha256_file
    ) -> list[Path]:
        """Packs holding `images` whose Zarr bytes differ from their index's record (each pack
        hashed once, however many images it holds)."""
        index = self.index(key)
        packs = sorted({index[h].pack for h in images if h in index})
        return [
            pack
            for pack in packs
            if shards.read_fingerprint(pack.with_suffix(".parquet"))
            != hashing.sha256_tree(pack, file_hash)
        ]

    def drop(self, key: str, pack: Path) -> None:
        """Delete a pack (index first: without it the group is never read) and forget the
        index, so the next lookup reads the packs that remain."""
        pack.with_suffix(".parquet").unlink(missing_ok=True)
        shutil.rmtree(pack, ignore_errors=True)
        self._index.pop(key, None)
        self._read.pop(key, None)
        self._groups.pop(pack, None)


_OPEN: dict[Path, EmbeddingCache] = {}  # one object per cache root per process: indexes read once


def cache_at(root: Path) -> EmbeddingCache:
    """The cache at `root`, shared by every reader of this process."""
    root = Path(root).resolve()
    if root not in _OPEN:
        _OPEN[root] = EmbeddingCache(root)
    return _OPEN[root]


def store_embeddings(
    store: Path, provenance: dict[str, Any]
) -> tuple[EmbeddingCache, dict[str, str]]:
    """The cache and encoder keys ({"sam": key, "clip"?: key}) a store's encode stage recorded.

    The cache path is recorded relative to the store, so a store and its cache moved together
    (as `dvc pull` places them) still find each other; PPT_EMBEDDINGS names another place.
    """
    info = provenance.get("embeddings")
    if info is None:
        raise StoreError(
            f"{store}: its encode stage records no embedding cache (written by an older "
            "ppt-labels): rebuild it with `ppt-labels build`"
        )
    root = Path(os.environ.get(CACHE_ENV) or os.path.normpath(Path(store) / info["cache"]))
    if not root.is_dir():
        raise StoreError(
            f"{root}: the embedding cache of {store} is missing: fetch it (`dvc pull {root}`), "
            f"or point {CACHE_ENV} at a copy"
        )
    return cache_at(root), {kind: info[kind] for kind in ARRAY_OF if kind in info}


def shard_embeddings(encode_shard: str | Path) -> tuple[EmbeddingCache, dict[str, str]]:
    """The cache and encoder keys behind one shard of a store's encode table (for stages)."""
    record = record_of_shard(encode_shard)
    return store_embeddings(Path(encode_shard).parent.parent, record.get("provenance", {}))
