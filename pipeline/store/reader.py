"""Reading a complete label store: the samples and candidates views over its per-stage tables.

Layout (DESIGN §2, one directory per stage so each is its own DVC output):

    labels/<dataset>/
      manifest.json                 written last; lists every shard with rows and sha256
      samples/part-NNNNN.parquet    ingest          (+ rejects/part-NNNNN.parquet, _stage.json)
      phrases/part-NNNNN.parquet    phrases
      split/part-NNNNN.parquet      split

`LabelStore` joins the per-stage tables into the samples and candidates views of DESIGN §2 and
refuses stores without a manifest or of an unknown schema version.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import pipeline
from pipeline.core.errors import StoreError
from pipeline.store import schemas, shards
from pipeline.store.stage_record import REJECTS_DIR

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KNOWN_SCHEMA_VERSIONS = {schemas.SCHEMA_VERSION}


class LabelStore:
    """Read access to a complete label store."""

    def __init__(self, root: Path, manifest: dict[str, Any] | None = None) -> None:
        """Open the store at `root`; `manifest` is given only by `finalize` before writing it."""
        self.root = Path(root)
        path = self.root / MANIFEST
        if manifest is not None:
            self.manifest = manifest
            return
        if not path.exists():
            raise StoreError(
                f"{self.root}: no {MANIFEST}; the store is incomplete (a build was interrupted "
                "or is running): re-run `ppt-labels build` on it"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except ValueError as exc:
            raise StoreError(f"{path}: not valid JSON ({exc})") from None
        version = self.manifest.get("schema_version")
        if isinstance(version, int) and version < min(KNOWN_SCHEMA_VERSIONS):
            dataset = self.manifest.get("dataset", "NAME")
            raise StoreError(
                f"{path}: schema_version {version} is an older layout than this ppt-labels "
                f"({pipeline.__version__}) reads ({sorted(KNOWN_SCHEMA_VERSIONS)}; version 4 "
                "keeps image embeddings in a cache shared by stores); rebuild the store: "
                f"`ppt-labels build --dataset {dataset} --data-root DATA_ROOT --out {self.root}` "
                "(or `dvc repro`)"
            )
        if version not in KNOWN_SCHEMA_VERSIONS:
            raise StoreError(
                f"{path}: schema_version {version!r} is not one this ppt-labels "
                f"({pipeline.__version__}) reads ({sorted(KNOWN_SCHEMA_VERSIONS)}); "
                "upgrade ppt-labels or rebuild the store"
            )

    @property
    def tables(self) -> list[str]:
        """Table directories present in this store, in stage order."""
        return [s["table"] for s in self.manifest["stages"]]

    def table(self, name: str) -> pa.Table:
        """All shards of table `name` listed in the manifest, concatenated in shard order."""
        if name not in self.tables:
            raise StoreError(f"{self.root}: no table {name!r} (has {', '.join(self.tables)})")
        schema = schemas.TABLES.get(name)
        parts = [shards.read_parquet(self.root / p, schema) for p in self._table_shards(name)]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def _table_shards(self, name: str) -> list[str]:
        """Paths (relative to the root) of table `name`'s Parquet shards, in shard order."""
        return [
            s["path"]
            for s in self.manifest["shards"]
            if s["path"].startswith(f"{name}/part-") and s.get("kind") != "zarr"
        ]

    def arrays(self, table: str, shard: str) -> Any:
        """The Zarr group of one shard of `table` (e.g. "part-00000"), opened read-only."""
        import zarr

        path = self.root / table / f"{shard}.zarr"
        if not path.exists():
            raise StoreError(f"{path}: no arrays for shard {shard} of table {table!r}")
        return zarr.open_group(str(path), mode="r")

    def sentence_relevance(self) -> dict[str, np.ndarray]:
        """Each sample's whole-expression relevance map, (G, G) float16, by sample_id.

        The attention stage writes them; {} for a store without (an older store: rebuild its
        attention stage).
        """
        out: dict[str, np.ndarray] = {}
        for entry in self.manifest["shards"]:
            path = entry["path"]
            if entry.get("kind") != "zarr" or path.split("/")[0] != "attention":
                continue
            group = self.arrays(path.split("/")[0], Path(path).stem)
            if "sentence_relevance" not in group:
                continue
            maps = group["sentence_relevance"][...]  # (n, G, G) f16: a shard's worth
            out.update(zip(group.attrs["sentence_ids"], maps, strict=True))
        return out

    def phrase_relevance(self, sample_ids: list[str], k: int) -> np.ndarray:
        """(n, k, G, G) float16: the relevance maps of each sample's first k candidates, in
        candidate order (the phrases' order in the sentence); zeros where a sample has fewer.

        Read one attention shard at a time into the output, so memory stays that of the output.
        """
        row = {s: i for i, s in enumerate(sample_ids)}
        out: np.ndarray | None = None
        for path in self._table_shards("attention"):
            table = shards.read_parquet(self.root / path, schemas.ATTENTION).to_pydict()
            maps = self.arrays("attention", Path(path).stem)["relevance"][...]  # (n, G, G) f16
            if out is None:
                out = np.zeros((len(sample_ids), k, *maps.shape[1:]), np.float16)
            for sid, cand, at in zip(
                table["sample_id"], table["cand_idx"], table["array_row"], strict=True
            ):
                if sid in row and cand < k:
                    out[row[sid], cand] = maps[at]
        if out is None:
            raise StoreError(f"{self.root}: no attention stage, so no phrase relevance maps")
        return out

    def rejects(self) -> pa.Table:
        """Every stage's rejects in one table."""
        paths = [s["path"] for s in self.manifest["shards"] if f"/{REJECTS_DIR}/" in s["path"]]
        parts = [shards.read_parquet(self.root / p, schemas.REJECTS) for p in paths]
        return pa.concat_tables(parts) if parts else schemas.REJECTS.empty_table()

    def candidates(self) -> pa.Table:
        """One row per (sample, candidate): the phrase, and every per-candidate column present."""
        table = self.table("phrases")
        for name in self.tables:
            if name in ("samples", "phrases"):
                continue
            other = self.table(name)
            if "cand_idx" in other.column_names:
                table = _left_join(table, other, ["sample_id", "cand_idx"])
        return table.sort_by([("sample_id", "ascending"), ("cand_idx", "ascending")])

    def samples(self) -> pa.Table:
        """One row per sample, with its subset and candidate count when the split stage ran."""
        table = self.table("samples")
        if "split" in self.tables:
            split = self.table("split")
            first = split.filter(pc.equal(split.column("cand_idx"), 0))
            table = table.join(first.select(["sample_id", "subset", "n_candidates"]), "sample_id")
        return table.sort_by("sample_id")

    def stats(self) -> dict[str, Any]:
        """Counts for the dataset card: samples, images, splits, subsets, candidates, rejects."""
        samples = self.samples()
        stats: dict[str, Any] = {
            "samples": samples.num_rows,
            "images": len(set(samples.column("image_sha256").to_pylist())),
            "splits": dict(sorted(Counter(samples.column("split").to_pylist()).items())),
            "rejects": self.rejects().num_rows,
        }
        if "subset" in samples.column_names:
            stats["subsets"] = dict(sorted(Counter(samples.column("subset").to_pylist()).items()))
            hist = Counter(min(n, 3) for n in samples.column("n_candidates").to_pylist())
            stats["candidates_per_sample"] = {
                ("3+" if k == 3 else str(k)): v for k, v in sorted(hist.items())
            }
        if "phrases" in self.tables:
            stats["candidates"] = self.table("phrases").num_rows
        return stats


def _left_join(left: pa.Table, right: pa.Table, keys: list[str]) -> pa.Table:
    """`left` ⟕ `right` on `keys`, by row index: Arrow's hash join refuses nested columns."""
    right_keys = zip(*(right.column(k).to_pylist() for k in keys), strict=True)
    index = {key: i for i, key in enumerate(right_keys)}
    left_keys = zip(*(left.column(k).to_pylist() for k in keys), strict=True)
    take = pa.array([index.get(key) for key in left_keys], pa.int64())
    for name in right.column_names:
        if name not in keys and name not in left.column_names:
            left = left.append_column(right.schema.field(name), right.column(name).take(take))
    return left
