"""Samples and their candidates as columns: what the loader reads per batch, without objects.

A `SampleIndex` holds n samples and their m candidates in numpy and Arrow arrays: per sample its
store, ids, size, subset and split, and `cand_start` (n + 1) offsets into the candidate columns
(cand_idx, referent, mask_rle, and `point_start` (m + 1) offsets into flat point columns). Forked
loader workers share these buffers copy-on-write and never touch a reference count in them.
`index[i]` builds the one `Sample` (with its `Candidate`s) that code outside the loader reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SUBSETS = ("H_sem", "H_ref", "D_sem", "D_ref")


@dataclass(frozen=True)
class Candidate:
    """One pseudo-label of a sample."""

    cand_idx: int
    mask_rle: str  # COCO RLE counts at the sample's (height, width)
    points: tuple[tuple[float, float, int], ...]  # (x, y, label), x / width, y / height
    referent: int  # c


@dataclass(frozen=True)
class Sample:
    """One (image, expression) pair of one store."""

    store: int  # index of its store in the list given to `collect_samples`
    sample_id: str
    image_sha256: str
    height: int
    width: int
    subset: str
    split: str
    candidates: tuple[Candidate, ...] = field(default=())

    @property
    def key(self) -> tuple[int, str]:
        """Unique across stores."""
        return (self.store, self.sample_id)

    def referent(self) -> Candidate | None:
        """The candidate with c = 1, if any."""
        return next((c for c in self.candidates if c.referent == 1), None)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)


def _strings(column: Any) -> pa.Array:
    """One contiguous large_string array (64-bit offsets: a RefCOCO table's RLEs pass 2 GiB)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.cast(pa.large_string())


@dataclass(frozen=True, eq=False)
class SampleIndex(Sequence):
    """n samples (per-sample columns) and their m candidates (per-candidate columns)."""

    store: np.ndarray  # (n,) int16
    sample_id: pa.Array  # (n,) large_string
    image_sha256: pa.Array  # (n,) large_string
    height: np.ndarray  # (n,) int32
    width: np.ndarray  # (n,) int32
    subset: np.ndarray  # (n,) int8, index into SUBSETS
    split: pa.Array  # (n,) large_string
    cand_start: np.ndarray  # (n + 1,) int64: sample i's candidates are [start[i], start[i+1])
    cand_idx: np.ndarray  # (m,) int32
    referent: np.ndarray  # (m,) int8, c
    mask_rle: pa.Array  # (m,) large_string, COCO RLE counts at the sample's size
    point_start: np.ndarray  # (m + 1,) int64 into the point columns
    point_xy: np.ndarray  # (p, 2) float32, x / width, y / height
    point_label: np.ndarray  # (p,) int8

    @classmethod
    def from_store(
        cls,
        store: int,
        samples: pa.Table,
        rows: np.ndarray,
        cands: pa.Table,
        owner: np.ndarray,
        cand_idx: np.ndarray,
        referent: np.ndarray,
    ) -> SampleIndex:
        """The index of `samples`' `rows` (in that order) of one store; `cands` are its
        candidates with a mask, `owner` each one's row in `samples` (-1: none)."""
        slot = np.full(samples.num_rows + 1, -1, np.int64)
        slot[rows] = np.arange(len(rows))
        pos = slot[owner]  # owner -1 reads the extra -1
        chosen = np.flatnonzero(pos >= 0)
        chosen = chosen[np.argsort(pos[chosen], kind="stable")]  # by sample, table order inside
        picked = samples.take(pa.array(rows, pa.int64()))
        mine = cands.take(pa.array(chosen, pa.int64()))
        if "points" in mine.column_names and mine.num_rows:
            points = mine.column("points").combine_chunks()
            lengths = pc.fill_null(pc.list_value_length(points), 0).to_numpy()
            flat = pc.list_flatten(points)
            xy = np.stack(
                [flat.field("x").to_numpy(zero_copy_only=False),
                 flat.field("y").to_numpy(zero_copy_only=False)], axis=1,
            ).astype(np.float32)  # fmt: skip
            labels = flat.field("label").to_numpy(zero_copy_only=False).astype(np.int8)
        else:
            lengths, xy, labels = np.zeros(len(chosen), np.int64), np.zeros((0, 2)), np.zeros(0)
        subset = picked.column("subset").to_numpy(zero_copy_only=False)
        return cls(
            store=np.full(len(rows), store, np.int16),
            sample_id=_strings(picked.column("sample_id")),
            image_sha256=_strings(picked.column("image_sha256")),
            height=picked.column("height").to_numpy().astype(np.int32),
            width=picked.column("width").to_numpy().astype(np.int32),
            subset=np.array([SUBSETS.index(s) for s in subset], np.int8).reshape(-1),
            split=_strings(picked.column("split")),
            cand_start=_offsets(np.bincount(pos[chosen], minlength=len(rows))),
            cand_idx=cand_idx[chosen].astype(np.int32),
            referent=referent[chosen].astype(np.int8),
            mask_rle=_strings(mine.column("mask_rle")),
            point_start=_offsets(lengths),
            point_xy=np.asarray(xy, np.float32).reshape(-1, 2),
            point_label=np.asarray(labels, np.int8),
        )

    @classmethod
    def concat(cls, parts: Sequence[SampleIndex]) -> SampleIndex:
        """The samples of `parts` one after the other (one part per store)."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]

        def joined(name: str) -> Any:
            values = [getattr(p, name) for p in parts]
            if isinstance(values[0], np.ndarray):
                return np.concatenate(values)
            return pa.concat_arrays(values)

        def offsets(name: str, sizes: list[int]) -> np.ndarray:
            shift = np.cumsum([0, *sizes[:-1]])
            return np.concatenate(
                [[0]] + [getattr(p, name)[1:] + s for p, s in zip(parts, shift, strict=True)]
            ).astype(np.int64)

        return cls(
            **{name: joined(name) for name in ("store", "sample_id", "image_sha256", "height",
                                               "width", "subset", "split", "cand_idx",
                                               "referent", "mask_rle", "point_xy",
                                               "point_label")},
            cand_start=offsets("cand_start", [len(p.cand_idx) for p in parts]),
            point_start=offsets("point_start", [len(p.point_label) for p in parts]),
        )  # fmt: skip

    @classmethod
    def empty(cls) -> SampleIndex:
        """No samples."""
        none = pa.array([], pa.large_string())
        return cls(
            np.zeros(0, np.int16), none, none, np.zeros(0, np.int32), np.zeros(0, np.int32),
            np.zeros(0, np.int8), none, np.zeros(1, np.int64), np.zeros(0, np.int32),
            np.zeros(0, np.int8), none, np.zeros(1, np.int64), np.zeros((0, 2), np.float32),
            np.zeros(0, np.int8),
        )  # fmt: skip

    def take(self, positions: Sequence[int] | np.ndarray) -> SampleIndex:
        """The samples at `positions`, in that order."""
        pos = np.asarray(positions, np.int64)
        starts, ends = self.cand_start[pos], self.cand_start[pos + 1]
        cands = _ranges(starts, ends)
        p_starts, p_ends = self.point_start[cands], self.point_start[cands + 1]
        points = _ranges(p_starts, p_ends)
        index = pa.array(pos, pa.int64())
        return SampleIndex(
            self.store[pos], self.sample_id.take(index), self.image_sha256.take(index),
            self.height[pos], self.width[pos], self.subset[pos], self.split.take(index),
            _offsets(ends - starts), self.cand_idx[cands], self.referent[cands],
            self.mask_rle.take(pa.array(cands, pa.int64())), _offsets(p_ends - p_starts),
            self.point_xy[points], self.point_label[points],
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("SampleIndex: use take(positions) for several samples")
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        cands = tuple(self.candidate(c) for c in range(self.cand_start[i], self.cand_start[i + 1]))
        return Sample(
            int(self.store[i]),
            self.sample_id[i].as_py(),
            self.image_sha256[i].as_py(),
            int(self.height[i]),
            int(self.width[i]),
            SUBSETS[self.subset[i]],
            self.split[i].as_py(),
            cands,
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def candidate(self, c: int) -> Candidate:
        """The candidate at column position `c`."""
        a, b = self.point_start[c], self.point_start[c + 1]
        points = tuple(
            (float(x), float(y), int(label))
            for (x, y), label in zip(self.point_xy[a:b], self.point_label[a:b], strict=True)
        )
        return Candidate(
            int(self.cand_idx[c]), self.mask_rle[c].as_py(), points, int(self.referent[c])
        )

    def keys(self) -> list[tuple[int, str]]:
        """(store, sample_id) of every sample, in order."""
        return list(zip(self.store.tolist(), self.sample_id.to_pylist(), strict=True))

    def subset_counts(self) -> dict[str, int]:
        """Samples per subset."""
        counts = np.bincount(self.subset, minlength=len(SUBSETS))
        return {name: int(n) for name, n in zip(SUBSETS, counts, strict=True)}

    def image_groups(self) -> np.ndarray:
        """(n,) int64: one code per (store, image), numbered in order of first appearance."""
        keys = pc.binary_join_element_wise(
            pa.array(self.store.astype(str), pa.large_string()),
            self.image_sha256,
            pa.scalar(":", pa.large_string()),
        )
        return pc.index_in(keys, value_set=pc.unique(keys)).to_numpy().astype(np.int64)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[i], ends[i]) as one int64 array."""
    lengths = ends - starts
    if not len(lengths) or not lengths.sum():
        return np.zeros(0, np.int64)
    first = np.repeat(starts - _offsets(lengths)[:-1], lengths)
    return (first + np.arange(lengths.sum())).astype(np.int64)
