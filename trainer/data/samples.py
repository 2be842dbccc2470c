"""Training samples from label stores: each (image, expression) pair and its E pseudo-labels.

`collect_samples` turns stores into a `SampleIndex` filtered by subset and split; H_ref samples
take their referent from a Select round when one is given (`selections`: the chosen candidate
gets c = 1, the others 0, dropped pairs leave), else keep the store's c = 0 ("unknown").
Candidates whose mask is missing (rejected by a quality gate) are not targets; samples left with
none are skipped and counted in the log. `trainer.data.dataset` turns samples into tensors.

The index is columns (numpy and Arrow arrays), not a Python object per candidate: at RefCOCO
size (178k candidates, points included) objects cost about 1 GB, and every forked loader worker
copies the pages their reference counts touch. `SampleIndex[i]` still gives one `Sample` object
for the code that wants one (Select, the reference masks of evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store.reader import LabelStore
from trainer.data.sample_index import SUBSETS, Candidate, Sample, SampleIndex

__all__ = ["SUBSETS", "Candidate", "LabelMinimums", "Sample", "SampleIndex", "collect_samples",
           "subset_counts"]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelMinimums:
    """The least a pseudo-label must score to be a training target, per column of the masks
    stage (0: no minimum; a store without the column is not filtered on it). H_ref pairs keep
    every candidate whatever it scores: Select matches against the whole set."""

    sam_score: float = 0.0  # SAM's own predicted IoU (data.min_label_score)
    relevance_score: float = 0.0  # agreement with the map that prompted it (min_label_relevance)

    def active(self) -> list[tuple[str, float]]:
        """(column, minimum) of every minimum above 0."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) > 0]

    def __str__(self) -> str:
        return " and ".join(f"{column} ≥ {least}" for column, least in self.active())


def collect_samples(
    stores: Sequence[LabelStore],
    subsets: Collection[str],
    splits: Collection[str] | None = None,
    selections: Mapping[int, Mapping[str, int]] | None = None,
    require_targets: bool = True,
    minimums: LabelMinimums = LabelMinimums(),
) -> SampleIndex:
    """The samples of `stores` in `subsets` (and `splits`, all when None), in store order and
    each store's sample order.

    Args:
        stores: label stores; a sample's `store` is its index here.
        subsets: any of H_sem, H_ref, D_sem, D_ref.
        splits: keep only these splits (None: every split).
        selections: store index → {sample_id: chosen cand_idx} of its latest Select round. With
            one, that store's H_ref samples are the kept pairs only, c = 1 on the chosen one.
        require_targets: drop samples none of whose candidates has a mask (training); eval keeps
            them (it scores the prediction against ground truth, not the targets).
        minimums: a label scoring lower is no target, as a gated one (`LabelMinimums`).
    """
    unknown = set(subsets) - set(SUBSETS)
    if unknown:
        raise ValueError(f"unknown subsets {sorted(unknown)}: choose from {', '.join(SUBSETS)}")
    parts = []
    for index, store in enumerate(stores):
        # after a Select round, a store it has no entry for has no kept H_ref pair
        selection = None if selections is None else selections.get(index, {})
        part, skipped = _store_part(
            index, store, subsets, splits, selection, require_targets, minimums
        )
        parts.append(part)
        if skipped:
            why = f" with {minimums}" if minimums.active() else ""
            log.info("%s: %d samples skipped, no candidate has a mask%s", store.root, skipped, why)
    return SampleIndex.concat(parts)


def _store_part(
    index: int,
    store: LabelStore,
    subsets: Collection[str],
    splits: Collection[str] | None,
    selection: Mapping[str, int] | None,
    require_targets: bool,
    minimums: LabelMinimums = LabelMinimums(),
) -> tuple[SampleIndex, int]:
    """One store's columns (`collect_samples`) and the count of samples skipped for no mask."""
    samples = store.samples()
    n = samples.num_rows
    if "subset" not in samples.column_names:  # no split stage yet: no sample has a subset
        return SampleIndex.empty(), 0
    subset = samples.column("subset")
    keep = pc.fill_null(pc.is_in(subset, pa.array(list(subsets), pa.string())), False)
    if splits is not None:
        keep = pc.and_(keep, pc.is_in(samples.column("split"), pa.array(list(splits))))
    keep_np = keep.to_numpy(zero_copy_only=False)
    ids = samples.column("sample_id").combine_chunks()

    names = store.candidates().column_names
    wanted = ("sample_id", "cand_idx", "mask_rle", "points", "referent", "subset",
              *(f.name for f in fields(minimums)))  # fmt: skip
    cands = store.candidates().select([c for c in wanted if c in names])
    if "mask_rle" not in names:  # no masks stage: no candidate is a target
        cands = cands.slice(0, 0).append_column("mask_rle", pa.array([], pa.string()))
    # rejected by a quality gate (no mask): no target
    has_mask = pc.fill_null(pc.greater(pc.utf8_length(cands.column("mask_rle")), 0), False)
    for column, least in minimums.active():  # too unsure: no target
        if column in cands.column_names:
            sure = pc.greater_equal(cands.column(column), least)
            sure = pc.or_(sure, pc.equal(cands.column("subset"), "H_ref"))
            has_mask = pc.and_(has_mask, pc.fill_null(sure, False))
    cands = cands.filter(has_mask)
    owner = _positions(cands.column("sample_id"), ids)  # (m,) its sample's row, -1: none
    referent = (
        pc.fill_null(cands.column("referent"), 0).to_numpy(zero_copy_only=False).astype(np.int8)
        if "referent" in names
        else np.zeros(cands.num_rows, np.int8)
    )
    cand_idx = cands.column("cand_idx").to_numpy(zero_copy_only=False).astype(np.int32)

    subset_np = subset.to_numpy(zero_copy_only=False)
    if selection is not None:  # H_ref: the kept pairs only, c = 1 on the chosen candidate
        is_ref = keep_np & (subset_np == "H_ref")
        chosen = np.full(n, -1, np.int64)
        pos = _positions(pa.array(list(selection), pa.string()), ids)
        valid = pos >= 0
        chosen[pos[valid]] = np.fromiter(selection.values(), np.int64, len(selection))[valid]
        keep_np = keep_np & ~(is_ref & (chosen < 0))
        sel = (owner >= 0) & is_ref[np.maximum(owner, 0)]
        referent = np.where(sel, cand_idx == chosen[np.maximum(owner, 0)], referent)
        referent = referent.astype(np.int8)

    counts = np.bincount(owner[owner >= 0], minlength=n)
    skipped = 0
    if require_targets:
        skipped = int((keep_np & (counts == 0)).sum())
        keep_np = keep_np & (counts > 0)
    rows = np.flatnonzero(keep_np)
    part = SampleIndex.from_store(index, samples, rows, cands, owner, cand_idx, referent)
    return part, skipped


def _positions(values: pa.Array | pa.ChunkedArray, among: pa.Array) -> np.ndarray:
    """(len(values),) int64 position of each value in `among`, -1 where absent."""
    return pc.fill_null(pc.index_in(values, value_set=among), -1).to_numpy().astype(np.int64)


def subset_counts(samples: Sequence[Sample] | SampleIndex) -> dict[str, int]:
    """Samples per subset (for the log and for skipping empty stages)."""
    counts = dict.fromkeys(SUBSETS, 0)
    if isinstance(samples, SampleIndex):
        counts.update(samples.subset_counts())
        return counts
    for s in samples:
        counts[s.subset] += 1
    return counts
