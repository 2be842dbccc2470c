"""One self-training round: row 5 retrained on its own predictions as its H_sem labels.

    .venv/bin/python bench/self_training.py --out DIR [--seeds 2]

A diagnostic (never part of a row): does the point generator label its training scenes better
than CLIP + SAM did, and does a second generation trained on those labels do better? For each
optim seed s, row 5 (configs/ablation/row05.yaml) is trained on DIR's stores in
DIR/runs/self-gen1-seed<s> (its own run, not the table's: resumed, or only scored again, when
complete), predicts a mask for every
train-split H_sem sample (its points → SAM, with the maps, as at evaluation), and these replace
the H_sem labels in a copy of the scene store, DIR/labels/synthetic-self-seed<s> (the SAM scores
stay the old labels', so `data.min_label_score` keeps the same samples). Row 5 is then trained
again from scratch on the copy, seed s, and scored on the untouched test split. Prints, per
seed, the labels' hit rate and mIoU against the referent's ground truth (the labels the trainer
keeps) and the two generations' test mIoU; writes DIR/self-training.json.

DIR is a `bench/ablation.py --out` directory (its world and stores are reused; run that first).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from ablation import row_configs, run_dir, run_training  # bench/: the script's own folder
from failure_kinds import SAM
from label_ceiling import relabelled_copy, world_args
from label_signals import h_sem_samples, kept_labels, label_and_truth

from pipeline.core.config import jsonable
from pipeline.core.rle import encode_rle
from pipeline.models.options import ModelOptions
from pipeline.scoring.failures import ObjectTruths, object_truths
from pipeline.store.reader import LabelStore
from trainer.inference.predict import load_for_inference, predict_store


def label_quality(store: LabelStore, truths: ObjectTruths, min_score: float) -> dict[str, float]:
    """Hit rate and mIoU (%) of the train H_sem labels the trainer keeps, against the truth."""
    ious = np.asarray(
        [label_and_truth(c, truths)[1] for c in kept_labels(store, truths, min_score)]
    )
    return {"hit": 100 * float(np.mean(ious >= 0.5)), "mIoU": 100 * float(np.mean(ious)),
            "n": len(ious)}  # fmt: skip


def main() -> None:
    args, stores = world_args(__doc__.splitlines()[0], seeds=2)
    _, config = row_configs()[5]
    min_score = float(config.get("data", {}).get("min_label_score", 0.0))
    scenes = LabelStore(stores["synthetic"])
    ids = h_sem_samples(scenes, "train")
    truths = object_truths("synthetic", args.out / "data", ids) or {}
    before = label_quality(scenes, truths, min_score)
    results: dict[str, Any] = {"labels": before, "seeds": {}}
    for seed in range(args.seeds):
        first = run_training(args.out, stores, config, seed, "self-gen1")
        checkpoint = run_dir(args.out, "self-gen1", seed) / "last.pt"
        options = ModelOptions(sam_checkpoint=SAM, allow_random_weights=True)
        model, clip, sam, cfg = load_for_inference(checkpoint, options)
        own = predict_store(model, clip, sam, cfg, scenes, args.out / "data",
                            args.out / "feature_cache", sample_ids=ids)  # fmt: skip
        copy = stores["synthetic"].with_name(f"synthetic-self-seed{seed}")
        relabelled_copy(stores["synthetic"], copy,
                        {sid: (encode_rle(m)[0], None) for sid, m in own.items()})  # fmt: skip
        second = run_training(args.out, {**stores, "synthetic": copy}, config, seed, "self-gen2")
        results["seeds"][str(seed)] = {
            "own labels": label_quality(LabelStore(copy), truths, min_score),
            "generation 1": {k: first[k] for k in ("mIoU", "oIoU", "failures")},
            "generation 2": {k: second[k] for k in ("mIoU", "oIoU", "failures")},
        }
    (args.out / "self-training.json").write_text(json.dumps(jsonable(results), indent=2) + "\n")
    print(
        f"train H_sem labels kept (SAM score ≥ {min_score}), against the truth: "
        f"CLIP + SAM {before['hit']:.1f} % hits, mIoU {before['mIoU']:.1f} (n {before['n']})"
    )
    print("\n| seed | own labels: hits % | mIoU | test mIoU, generation 1 | generation 2 |")
    print("|---|---|---|---|---|")
    for seed, r in results["seeds"].items():
        own_q = r["own labels"]
        print(
            f"| {seed} | {own_q['hit']:.1f} | {own_q['mIoU']:.1f} | "
            f"{r['generation 1']['mIoU']:.1f} | {r['generation 2']['mIoU']:.1f} |"
        )


if __name__ == "__main__":
    main()
