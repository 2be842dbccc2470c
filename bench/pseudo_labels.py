"""The pseudo-label table: how good the labels are before any training, per relevance source and
prompting rule, scored against the synthetic world's ground truth.

    .venv/bin/python bench/pseudo_labels.py --out DIR [--world-seed 0 --split val]

Builds the world's split (configs/world-params.yaml sizes) once per relevance source (simulated,
gt-phrase, gt-mask; the encode stage is shared through the same store, only attention and masks
re-run) and prompting rule (box_points, clip_surgery), then prints eval-labels' rows: the H_sem
referents (the labels training takes as given), the best candidate (what a perfect Select
reaches), every candidate against its own phrase's denotation, and how often the referent's
phrase holds an H_ref sample's best label.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.core.config import jsonable, read_yaml_mapping
from pipeline.models.options import ModelOptions
from pipeline.scoring.label_eval import evaluate_labels
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("simulated", "gt-phrase", "gt-mask")
RULES = ("box_points", "clip_surgery")


def main() -> None:
    """Build each (source, rule) variant of one split and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--split", default="val")
    parser.add_argument("--params", type=Path, default=REPO / "configs" / "world-params.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = read_yaml_mapping(args.params, "stage sections")
    params["synthetic"] = {**params["synthetic"], "seed": args.world_seed}
    params["ingest"] = {**params.get("ingest", {}), "splits": [args.split]}
    root, store = args.out / "data", args.out / f"labels-{args.split}"
    table = {}
    for source in SOURCES:
        for rule in RULES:
            variant = {**params, "masks": {**params.get("masks", {}), "rule": rule}}
            build("synthetic", root, store, variant, InProcessExecutor(),
                  models=ModelOptions(relevance=source))  # fmt: skip
            rows = evaluate_labels(store, root)
            table[f"{source} / {rule}"] = rows
            ref, best = rows["H_sem_referent"], rows["best_candidate"]
            own, won = rows["candidate_vs_denotation"], rows["H_ref_referent_best"]
            print(f"{source:10s} {rule:13s} H_sem referent {ref['mIoU']:5.1f} (n {ref['n']}) "
                  f"best candidate {best['mIoU']:5.1f} (n {best['n']}) "
                  f"vs denotation {own['mIoU']:5.1f} H_ref referent best {won['rate']:5.1f}%",
                  flush=True)  # fmt: skip
    (args.out / "pseudo_labels.json").write_text(json.dumps(jsonable(table), indent=2) + "\n")


if __name__ == "__main__":
    main()
