"""The pseudo-label of each sample's referent: what an export writes, one `ReferentLabel` each.

H_sem, D_sem and D_ref samples carry their referent from the split stage (c = 1 on one
candidate). H_ref pairs have several candidates and no referent until the trainer's Select picks
one: an export takes the candidate that Select round K chose, and leaves out the pairs that round
dropped or never saw (val / test pairs are not selected). Without rounds, H_ref is left out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.store.reader import LabelStore
from pipeline.store.rounds import read_selection, round_indices

log = logging.getLogger(__name__)

SUBSETS = ("H_sem", "H_ref", "D_sem", "D_ref")


@dataclass(frozen=True)
class ReferentLabel:
    """One sample's referent pseudo-label with the sample facts an export needs."""

    sample_id: str
    image_id: str  # the dataset's own image id
    image_sha256: str
    image_path: str  # POSIX, relative to the store's --data-root
    width: int
    height: int
    split: str
    subset: str  # H_sem | H_ref | D_sem | D_ref
    expression: str
    cand_idx: int  # the referent candidate
    phrase: str  # its noun phrase
    head: str  # the phrase's head lemma: the category an export gives it
    mask_rle: str  # COCO RLE counts at (height, width)
    bbox: tuple[float, float, float, float]  # COCO xywh pixels
    sam_score: float | None
    points: tuple[tuple[float, float, int], ...]  # (x / W, y / H, label)


@dataclass(frozen=True)
class Referents:
    """What `referent_labels` found: the labels, the round they follow and what was left out."""

    labels: list[ReferentLabel]
    round_index: int  # the Select round H_ref follows (0: none)
    left_out: dict[str, int]  # reason → samples


def latest_round(store: LabelStore) -> int:
    """The last Select round written into the store, 0 when there is none."""
    rounds = round_indices(store.root)
    return rounds[-1] if rounds else 0


def referent_labels(
    store: LabelStore, round_index: int | None = None, subsets: Collection[str] | None = None
) -> Referents:
    """The referent pseudo-label of every sample of `subsets` (all by default), sorted by id.

    Args:
        round_index: the Select round whose choices H_ref takes (None: the latest; 0: none, so
            H_ref is left out).
    """
    wanted = set(subsets or SUBSETS)
    unknown = sorted(wanted - set(SUBSETS))
    if unknown:
        raise ConfigError(f"--subset {', '.join(unknown)}: choose among {', '.join(SUBSETS)}")
    if "split" not in store.tables or "masks" not in store.tables:
        raise ConfigError(
            f"{store.root}: the store has no split or masks table (has {', '.join(store.tables)});"
            " build it through the masks stage first"
        )
    k = latest_round(store) if round_index is None else round_index
    chosen = read_selection(store.root, k) if k else {}
    samples = {s["sample_id"]: s for s in store.samples().to_pylist()}
    referent: dict[str, dict[str, Any]] = {}
    for cand in store.candidates().to_pylist():
        sample = samples[cand["sample_id"]]
        if sample["subset"] == "H_ref":
            if chosen.get(cand["sample_id"]) == cand["cand_idx"]:
                referent[cand["sample_id"]] = cand
        elif cand.get("referent") == 1:
            referent[cand["sample_id"]] = cand
    labels, left_out = [], Counter()
    for sid, sample in sorted(samples.items()):
        if sample["subset"] not in wanted:
            continue
        cand = referent.get(sid)
        if cand is None:
            left_out[_why(sample, k)] += 1
        elif not cand.get("mask_rle"):
            left_out["referent without a mask (rejected by the masks stage)"] += 1
        else:
            labels.append(_label(sample, cand))
    for reason, n in sorted(left_out.items()):
        log.info("%s: %d samples left out: %s", store.root, n, reason)
    return Referents(labels, k, dict(left_out))


def _why(sample: dict[str, Any], k: int) -> str:
    if sample["subset"] != "H_ref":
        return f"{sample['subset']} sample without a referent"
    if not k:
        return "H_ref pair, no Select round"
    return f"H_ref pair dropped or not seen by Select round {k}"


def _label(sample: dict[str, Any], cand: dict[str, Any]) -> ReferentLabel:
    points = tuple((p["x"], p["y"], int(p["label"])) for p in cand.get("points") or ())
    return ReferentLabel(
        sample_id=sample["sample_id"],
        image_id=sample["image_id"],
        image_sha256=sample["image_sha256"],
        image_path=sample["image_path"],
        width=int(sample["width"]),
        height=int(sample["height"]),
        split=sample["split"],
        subset=sample["subset"],
        expression=sample["expression"],
        cand_idx=int(cand["cand_idx"]),
        phrase=cand["phrase"],
        head=cand.get("head") or cand["phrase"],
        mask_rle=cand["mask_rle"],
        bbox=tuple(float(v) for v in cand["bbox"]),  # type: ignore[arg-type]
        sam_score=cand.get("sam_score"),
        points=points,
    )
