"""Select (DESIGN §6): the model picks the referent among an H_ref pair's candidates.

For each H_ref (image, expression) pair the model's most confident mask is compared with every
candidate pseudo-label (IoU at the original size); the best-overlapping candidate becomes the
referent (c = 1) and the pair is kept when that overlap reaches the threshold, else dropped.

Each round is written into the label store it came from, so it can be inspected and shared
(layout, lock and integrity: `pipeline.store.rounds`):

    <store>/rounds/<k>/selection.parquet   one row per H_ref pair (`SELECTION` schema)
    <store>/rounds/<k>/report.json         the round's numbers (`select_report`)

Where the store carries phrase ground truth (the
synthetic world), the report says how right the round was: `accuracy`, the share of kept pairs
whose chosen candidate is the referent's own phrase (truth role "referent"); `random_accuracy`,
what a uniformly random pick among the same pairs' candidates would score; `first_accuracy`,
what always picking the first candidate (in sentence order) would score: where the referent's
phrase usually comes first (the synthetic world's grammar: 98 % of its H_ref pairs), that rule,
not chance, is the bar a model must clear; and `kept_share`.
The truth is read for this report only; the selection itself never sees it.

Under data parallelism each rank predicts its share of the pairs; the rows are gathered on every
rank (all return the same selection) and rank 0 alone writes the round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import pyarrow as pa
import torch

from pipeline.core.rle import decode_rle
from pipeline.models.frozen import FrozenSam
from pipeline.scoring.metrics import mask_iou
from pipeline.store.reader import LabelStore
from pipeline.store.rounds import SELECTION, write_round
from trainer.data.samples import Sample
from trainer.loop.distributed import barrier, gather_objects, is_main_process
from trainer.loop.engine import predict_masks
from trainer.network.prompt_model import PointPromptModel

log = logging.getLogger(__name__)


class SelectResult(NamedTuple):
    """What a Select round returns: the kept pairs per store, and the reports per store name."""

    kept: dict[int, dict[str, int]]
    reports: dict[str, dict[str, Any]]


def choose(
    mask: Any, sample: Sample, confidence: float, threshold: float, round_index: int
) -> dict[str, Any]:
    """The selection row of one pair given the model's (H, W) mask."""
    overlaps = [
        mask_iou(mask, decode_rle(c.mask_rle, sample.height, sample.width))
        for c in sample.candidates
    ]
    best = max(range(len(overlaps)), key=overlaps.__getitem__)  # first of equal overlaps
    return {
        "sample_id": sample.sample_id,
        "cand_idx": sample.candidates[best].cand_idx,
        "confidence": confidence,
        "overlap": overlaps[best],
        "kept": overlaps[best] >= threshold,
        "threshold": threshold,
        "round": round_index,
    }


def select_report(
    rows: Sequence[Mapping[str, Any]],
    samples: Mapping[tuple[int, str], Sample],
    roles: Mapping[tuple[int, str, int], str | None],
    store: int,
) -> dict[str, Any]:
    """The numbers of one store's round (module docstring); accuracies only with truth roles."""
    kept = [r for r in rows if r["kept"]]
    report: dict[str, Any] = {
        "pairs": len(rows),
        "kept": len(kept),
        "kept_share": len(kept) / len(rows) if rows else None,
    }
    with_truth = {(i, sid) for i, sid, _ in roles}  # once: a scan per row is quadratic at scale
    known = [r for r in rows if (store, r["sample_id"]) in with_truth]
    if not known:
        return report

    def hit(r: Mapping[str, Any]) -> bool:
        return roles.get((store, r["sample_id"], r["cand_idx"])) == "referent"

    def chance(r: Mapping[str, Any]) -> float:
        cands = samples[(store, r["sample_id"])].candidates
        return sum(roles.get((store, r["sample_id"], c.cand_idx)) == "referent" for c in cands) / (
            len(cands) or 1
        )

    def first(r: Mapping[str, Any]) -> bool:
        cands = samples[(store, r["sample_id"])].candidates
        lead = min((c.cand_idx for c in cands), default=-1)
        return roles.get((store, r["sample_id"], lead)) == "referent"

    kept_known = [r for r in known if r["kept"]]
    report.update(
        accuracy=sum(map(hit, kept_known)) / len(kept_known) if kept_known else None,
        random_accuracy=sum(map(chance, kept_known)) / len(kept_known) if kept_known else None,
        first_accuracy=sum(map(first, kept_known)) / len(kept_known) if kept_known else None,
        accuracy_all=sum(map(hit, known)) / len(known),
        random_accuracy_all=sum(map(chance, known)) / len(known),
    )
    return report


def truth_roles(stores: Sequence[LabelStore]) -> dict[tuple[int, str, int], str | None]:
    """(store index, sample_id, cand_idx) → truth role, for stores with phrase ground truth."""
    out: dict[tuple[int, str, int], str | None] = {}
    for i, store in enumerate(stores):
        table = store.candidates()
        if "truth_role" not in table.column_names:
            continue
        cols = table.select(["sample_id", "cand_idx", "truth_role"]).to_pydict()
        for sid, idx, role in zip(
            cols["sample_id"], cols["cand_idx"], cols["truth_role"], strict=True
        ):
            if role is not None:
                out[(i, sid, int(idx))] = role
    return out


def selection_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """One round's rows as its table, in sample order."""
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["sample_id"]), schema=SELECTION)


@torch.no_grad()
def select(
    model: PointPromptModel,
    loader: Iterable[Mapping[str, Any]],
    samples: Sequence[Sample],
    stores: Sequence[LabelStore],
    sam: FrozenSam,
    device: torch.device,
    threshold: float,
    round_index: int,
    amp: bool = True,
) -> SelectResult:
    """Run one Select round over the H_ref `samples` that `loader` yields; write it per store.

    Returns:
        kept: store index → {sample_id: chosen cand_idx} of the kept pairs (`collect_samples`'
        `selections`); reports: store name → the round's report (module docstring).
    """
    by_key = {s.key: s for s in samples}
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for p in predict_masks(model, loader, sam, device, amp):
        rows[p.key] = choose(p.mask, by_key[p.key], p.score, threshold, round_index)
    # every rank's pairs (a sample a rank repeated to fill an empty share is one key)
    rows = {k: v for part in gather_objects(rows) for k, v in part.items()}
    per_store: dict[int, list[dict[str, Any]]] = {}
    for (store, _), row in rows.items():
        per_store.setdefault(store, []).append(row)
    is_main = is_main_process()  # one rank writes the round; every rank keeps its selection
    roles = truth_roles(stores)
    out: dict[int, dict[str, int]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for store, store_rows in sorted(per_store.items()):
        report = {"round": round_index, **select_report(store_rows, by_key, roles, store)}
        if is_main:
            write_round(stores[store].root, round_index, selection_table(store_rows), report)
        kept = {r["sample_id"]: r["cand_idx"] for r in store_rows if r["kept"]}
        out[store] = kept
        reports[stores[store].root.name] = report
        if report.get("accuracy") is not None:
            log.info(
                "Select round %d: accuracy %.1f%% on kept pairs (random pick %.1f%%, "
                "first candidate %.1f%%)",
                round_index,
                100 * report["accuracy"],
                100 * report["random_accuracy"],
                100 * report["first_accuracy"],
            )
        log.info(
            "Select round %d on %s: %d of %d H_ref pairs kept (overlap ≥ %.2f)",
            round_index,
            stores[store].root,
            len(kept),
            len(store_rows),
            threshold,
        )
    barrier()  # no rank trains on, or reads, a round before it is written
    return SelectResult(out, reports)
