"""The point generator's ceiling: row 5 taught with ground-truth labels instead of pseudo-labels.

    .venv/bin/python bench/label_ceiling.py --out DIR [--seeds 1]

A diagnostic, never a result: its outputs are stamped "ceiling: ground-truth labels". It asks
whether the pseudo-labels or the generator bound the method: with its very inputs (the
random-init CLIP's features, the words, SAM's embedding, the simulated maps), can the generator
find the referent when it is taught right? DIR is a `bench/ablation.py --out` directory (its
world and stores are reused; run that first). The scene store is copied to
DIR/labels/synthetic-truth, every train-split H_sem label (the referent's SAM mask) is replaced by
the referent's ground truth (SAM score 1, so the label-score filter keeps all of them), and the
masks stage and the manifest are sealed again; the points stage keeps the pseudo-labels' points
(no world.yaml loss reads them). H_ref, the object-centric data and the test split are left
as they are. Variants, each a row-5 run (configs/ablation/row05.yaml) on DIR's stores:

    truth            ground-truth H_sem labels
    truth, no maps   the same, the generator given no relevance map (model.relevance_input off)
    pseudo, no maps  the pseudo-labels, no relevance map: what the labels teach without the maps

Writes DIR/label-ceiling.json and DIR/label-ceiling.md (row 5 itself from DIR/ablation.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ablation import row_configs, run_training  # bench/: the script's own folder
from label_signals import h_sem_samples

from pipeline.core.config import jsonable
from pipeline.scoring.failures import object_truths
from pipeline.store import schemas, shards
from pipeline.store.finalize import finalize
from pipeline.store.reader import LabelStore
from pipeline.store.stage_record import (
    SEAL,
    read_stage_record,
    stage_dir,
    write_stage_record,
)

STAMP = "ceiling: ground-truth labels (diagnostic, not a result)"
NO_MAPS = {"relevance_input": False, "phrase_priors": 0, "relevance_dropout": 0.0}
VARIANTS = {"truth": ("truth", {}), "truth, no maps": ("truth", NO_MAPS),
            "pseudo, no maps": ("pseudo", NO_MAPS)}  # fmt: skip
log = logging.getLogger("label_ceiling")


def truth_store(out: Path) -> Path:
    """DIR/labels/synthetic-truth: the scene store with ground-truth H_sem train labels."""
    src, dst = out / "labels" / "synthetic", out / "labels" / "synthetic-truth"
    if (dst / "manifest.json").exists() and _unmasked(dst) == _unmasked(src):
        return dst  # a copy of this very store (a rebuilt world's store is copied again)
    truths = object_truths("synthetic", out / "data", h_sem_samples(LabelStore(src), "train"))
    if not truths:
        raise SystemExit(f"{src}: no train-split H_sem sample with ground truth")
    relabelled_copy(src, dst, {sid: (t[2], 1.0) for sid, t in truths.items()})
    log.info("%d H_sem train labels replaced by ground truth in %s", len(truths), dst)
    return dst


def relabelled_copy(src: Path, dst: Path, labels: dict[str, tuple[str, float | None]]) -> None:
    """Copy the store `src` to `dst` (no Select rounds) with the label of candidate 0 of each
    sample in `labels` replaced: sample_id → (RLE counts, SAM score; None keeps the label's),
    and the masks stage and the manifest sealed again. The points stage keeps the old labels'
    points (no world.yaml loss reads them)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("rounds"))  # no row's Select rounds
    record = read_stage_record(dst, "masks")
    record.pop(SEAL)
    for shard in record["shards"]:
        path = stage_dir(dst, "masks") / shard["name"]
        table = pq.read_table(path)
        fp = table.schema.metadata[shards.FINGERPRINT_KEY].decode()
        rows = table.to_pylist()
        for row in rows:
            if row["sample_id"] in labels and row["cand_idx"] == 0:
                rle, score = labels[row["sample_id"]]
                row["mask_rle"] = rle
                row["sam_score"] = row["sam_score"] if score is None else score
        table = pa.Table.from_pylist(rows, schema=table.schema)
        shard["sha256"] = shards.write_parquet(table, path, schemas.MASKS, fp)
    write_stage_record(stage_dir(dst, "masks"), record)
    finalize(dst, "synthetic", [s["stage"] for s in LabelStore(src).manifest["stages"]])


def _unmasked(store: Path) -> list[dict[str, Any]]:
    """The manifest's shards of every stage but masks (the one the copy rewrites)."""
    return [s for s in LabelStore(store).manifest["shards"] if not s["path"].startswith("masks/")]


def _line(name: str, miou: float, oiou: float, hit: float, other: float, seeds: int) -> str:
    return f"| {name} | {miou:.1f} | {oiou:.1f} | {hit:.1f} | {other:.1f} | {seeds} |"


def world_args(
    description: str, seeds: int, options: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, dict[str, Path]]:
    """The arguments of a script run on a `bench/ablation.py --out` DIR (--out, --seeds, and any
    `options` adds) and DIR's stores by role (synthetic, objects, composites); exits when DIR
    holds no world."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="a bench/ablation.py --out dir")
    parser.add_argument("--seeds", type=int, default=seeds)
    if options is not None:
        options(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    labels = args.out / "labels"
    if not (labels / "synthetic" / "manifest.json").exists():
        raise SystemExit(f"{labels / 'synthetic'}: no world here; run bench/ablation.py first")
    return args, {"synthetic": labels / "synthetic", "objects": labels / "synthetic-objects",
                  "composites": labels / "synthetic-objects-ref"}  # fmt: skip


def main() -> None:
    args, world = world_args(__doc__.splitlines()[0], seeds=1)
    stores = {"pseudo": world["synthetic"], "truth": truth_store(args.out)}
    _, config = row_configs()[5]
    results: dict[str, Any] = {"stamp": STAMP, "variants": {}}
    for name, (labels_of, model) in VARIANTS.items():
        cfg = {**config, "model": {**config.get("model", {}), **model}}
        run_stores = {**world, "synthetic": stores[labels_of]}
        tag = "ceiling-" + name.replace(", ", "-").replace(" ", "")
        seeds = [run_training(args.out, run_stores, cfg, s, tag) for s in range(args.seeds)]
        results["variants"][name] = seeds
    table = args.out / "ablation.json"
    row5 = json.loads(table.read_text()).get("5") if table.exists() else None
    (args.out / "label-ceiling.json").write_text(json.dumps(jsonable(results), indent=2) + "\n")
    lines = [f"# Row 5's {STAMP}", "", "| labels, inputs | mIoU | oIoU | hit % | other object % "
             "| seeds |", "|---|---|---|---|---|---|"]  # fmt: skip
    if row5:
        hit, other = row5["failures"]["hit"], row5["failures"]["other object"]
        means = [row5["mIoU"]["mean"], row5["oIoU"]["mean"], hit, other]
        lines.append(_line("pseudo (row 5)", *means, len(row5["seeds"])))
    for name, seeds in results["variants"].items():
        cells = [[s["mIoU"], s["oIoU"], s["failures"]["hit"], s["failures"]["other object"]]
                 for s in seeds]  # fmt: skip
        means = [statistics.fmean(column) for column in zip(*cells, strict=True)]
        lines.append(_line(name, *means, len(seeds)))
    (args.out / "label-ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
