"""Training samples from label stores: cached features and the E pseudo-label targets per sample.

`collect_samples` turns stores into `Sample`s filtered by subset and split; H_ref samples take
their referent from a Select round when one is given (`selections`: the chosen candidate gets
c = 1, the others 0, dropped pairs leave), else keep the store's c = 0 ("unknown"). Candidates
whose mask is missing (rejected by a quality gate) are not targets; samples left with none are
skipped and counted in the log.

`PromptDataset` yields, per sample (shapes without the batch dimension):

    stages         N × (G*G, C_n)   cached CLIP stage features of its image
    words          (T, C_t)         cached word features of its expression, padding trimmed
    sam_embedding  (256, 64, 64)    cached SAM image embedding
    size           (2,)             original (H, W)
    target         masks (E, 256, 256) soft low-res targets in SAM's frame (`lowres_targets`),
                   points (E, M_t, 2) normalised (x, y), point_labels (E, M_t), referent (E,)
    sample_id, key (store index, sample_id)

and `collate` batches them: stages (B, G*G, C_n), words padded to the longest T with text_pad
(B, T) True = padding, sam_embedding (B, 256, 64, 64), size (B, 2), targets a list of B dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from pipeline.rle import decode_rle
from pipeline.store import LabelStore
from trainer.features import ClipCache, SamEmbeddings
from trainer.sam_decoder import lowres_targets

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


def build_target(
    sample: Sample, long_side: int = 1024, masks: bool = True
) -> dict[str, torch.Tensor]:
    """The criterion's target of one sample (module docstring); E = candidates with masks.

    With `masks=False` the low-res masks are left out (a loss that does not read them).
    """
    cands = sample.candidates
    if not cands:
        return {
            "masks": torch.zeros(0, long_side // 4, long_side // 4),
            "points": torch.zeros(0, 1, 2),
            "point_labels": torch.zeros(0, 1),
            "referent": torch.zeros(0, dtype=torch.int64),
        }
    m = min(len(c.points) for c in cands)
    if m == 0:  # no points stored: the mask still trains, one dummy point at its centre
        points = torch.full((len(cands), 1, 2), 0.5)
        labels = torch.ones(len(cands), 1)
    else:
        raw = torch.tensor([c.points[:m] for c in cands], dtype=torch.float32)  # (E, M_t, 3)
        points, labels = raw[..., :2], raw[..., 2]
    target = {
        "points": points,  # (E, M_t, 2)
        "point_labels": labels,  # (E, M_t)
        "referent": torch.tensor([c.referent for c in cands], dtype=torch.int64),  # (E,)
    }
    if masks:
        full = torch.stack(
            [torch.from_numpy(decode_rle(c.mask_rle, sample.height, sample.width)) for c in cands]
        )  # (E, H, W) bool
        target["masks"] = lowres_targets(full, long_side, long_side // 4)  # (E, 256, 256)
    return target


class PromptDataset(Dataset):
    """Samples with their cached features and targets (module docstring).

    Args:
        samples: from `collect_samples`.
        clip_caches: per store, its `ClipCache`.
        sam_embeddings: per store, its `SamEmbeddings`.
        with_targets: build the targets (training); eval needs none.
        target_masks: include the targets' low-res masks (losses that read them).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        clip_caches: Sequence[ClipCache],
        sam_embeddings: Sequence[SamEmbeddings],
        with_targets: bool = True,
        target_masks: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.target_masks = target_masks
        self.clip_caches, self.sam_embeddings = list(clip_caches), list(sam_embeddings)
        self.with_targets = with_targets

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        cache = self.clip_caches[s.store]
        item = {
            "stages": cache.image_stages(s.image_sha256),
            "words": cache.sample_words(s.sample_id),
            "sam_embedding": self.sam_embeddings[s.store][s.image_sha256],
            "size": torch.tensor([s.height, s.width]),
            "sample_id": s.sample_id,
            "key": s.key,
        }
        if self.with_targets:
            item["target"] = build_target(s, masks=self.target_masks)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch `PromptDataset` items: pad words to the longest T (module docstring)."""
    t = max(it["words"].shape[0] for it in items)
    width = items[0]["words"].shape[1]
    words = torch.zeros(len(items), t, width)  # (B, T, C_t)
    pad = torch.ones(len(items), t, dtype=torch.bool)  # (B, T)
    for b, it in enumerate(items):
        n = it["words"].shape[0]
        words[b, :n], pad[b, :n] = it["words"], False
    batch = {
        "stages": [torch.stack(s) for s in zip(*(it["stages"] for it in items), strict=True)],
        "words": words,
        "text_pad": pad,
        "sam_embedding": torch.stack([it["sam_embedding"] for it in items]),  # (B, 256, 64, 64)
        "size": torch.stack([it["size"] for it in items]),  # (B, 2)
        "sample_id": [it["sample_id"] for it in items],
        "key": [it["key"] for it in items],
    }
    if "target" in items[0]:
        batch["targets"] = [it["target"] for it in items]
    return batch
