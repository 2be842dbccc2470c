"""Training samples from label stores: each (image, expression) pair and its E pseudo-labels.

`collect_samples` turns stores into `Sample`s filtered by subset and split; H_ref samples take
their referent from a Select round when one is given (`selections`: the chosen candidate gets
c = 1, the others 0, dropped pairs leave), else keep the store's c = 0 ("unknown"). Candidates
whose mask is missing (rejected by a quality gate) are not targets; samples left with none are
skipped and counted in the log. `trainer.data.dataset` turns samples into tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.store.reader import LabelStore

log = logging.getLogger(__name__)

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


def collect_samples(
    stores: Sequence[LabelStore],
    subsets: Collection[str],
    splits: Collection[str] | None = None,
    selections: Mapping[int, Mapping[str, int]] | None = None,
    require_targets: bool = True,
) -> list[Sample]:
    """The samples of `stores` in `subsets` (and `splits`, all when None).

    Args:
        stores: label stores; a sample's `store` is its index here.
        subsets: any of H_sem, H_ref, D_sem, D_ref.
        splits: keep only these splits (None: every split).
        selections: store index → {sample_id: chosen cand_idx} of its latest Select round. With
            one, that store's H_ref samples are the kept pairs only, c = 1 on the chosen one.
        require_targets: drop samples none of whose candidates has a mask (training); eval keeps
            them (it scores the prediction against ground truth, not the targets).
    """
    unknown = set(subsets) - set(SUBSETS)
    if unknown:
        raise ValueError(f"unknown subsets {sorted(unknown)}: choose from {', '.join(SUBSETS)}")
    out: list[Sample] = []
    for index, store in enumerate(stores):
        # after a Select round, a store it has no entry for has no kept H_ref pair
        selection = None if selections is None else selections.get(index, {})
        by_sample: dict[str, list[dict[str, Any]]] = {}
        columns = [
            c
            for c in ("sample_id", "cand_idx", "mask_rle", "points", "referent")
            if c in store.candidates().column_names
        ]
        for cand in store.candidates().select(columns).to_pylist():
            by_sample.setdefault(cand["sample_id"], []).append(cand)
        skipped = 0
        for s in store.samples().to_pylist():
            subset = s.get("subset")
            if subset not in subsets or (splits is not None and s["split"] not in splits):
                continue
            chosen = None
            if subset == "H_ref" and selection is not None:
                chosen = selection.get(s["sample_id"])
                if chosen is None:
                    continue  # dropped by Select
            cands = []
            for c in by_sample.get(s["sample_id"], []):
                if not c.get("mask_rle"):
                    continue  # rejected by a quality gate: no target
                referent = int(c.get("referent") or 0)
                if chosen is not None:
                    referent = int(c["cand_idx"] == chosen)
                points = tuple((p["x"], p["y"], int(p["label"])) for p in c.get("points") or [])
                cands.append(Candidate(int(c["cand_idx"]), c["mask_rle"], points, referent))
            if require_targets and not cands:
                skipped += 1
                continue
            out.append(
                Sample(
                    index,
                    s["sample_id"],
                    s["image_sha256"],
                    int(s["height"]),
                    int(s["width"]),
                    subset,
                    s["split"],
                    tuple(cands),
                )
            )
        if skipped:
            log.info("%s: %d samples skipped, no candidate has a mask", store.root, skipped)
    return out


def subset_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Samples per subset (for the log and for skipping empty stages)."""
    counts = dict.fromkeys(SUBSETS, 0)
    for s in samples:
        counts[s.subset] += 1
    return counts
