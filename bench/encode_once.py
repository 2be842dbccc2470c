"""Encode-once throughput: `build` against a naive loop that re-encodes the image per phrase.

Both sides start from the same built ingest/phrases/split tables, use the same loaded SAM, the
same relevance maps (--relevance, default gt-mask) and the same prompting rule; the naive loop
calls `SamPredictor.set_image` for every candidate, the way a per-phrase script would. Printed:
images, candidates, wall time of each and the ratio, measured in the same run.

    .venv/bin/python bench/encode_once.py --data-root ../shared/data/refer_sample
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from segment_anything import SamPredictor

from pipeline.core.config import load_params
from pipeline.core.rle import encode_rle
from pipeline.data.registry import open_dataset
from pipeline.labelling.prompting import prompt_mask
from pipeline.labelling.relevance import oracle_map
from pipeline.models.encoders import encoder_config, sam_for
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.reader import LabelStore

TEXT_STAGES = ("ingest", "phrases", "split")
LABEL_STAGES = ("encode", "attention", "masks", "points")


def naive_loop(store: LabelStore, dataset, params: dict, sam) -> tuple[float, int]:
    """Re-encode the image for every candidate, then prompt; returns (seconds, candidates)."""
    source = params["attention"].get("source", "gt-mask")
    grid = params["attention"].get("grid", 28)
    rule = params["masks"].get("rule", "box_points")
    records = {r.sample_id: r for r in dataset.records()[0]}
    samples = {s["sample_id"]: s for s in store.samples().to_pylist()}
    predictor = SamPredictor(sam.model)
    start = time.perf_counter()
    n = 0
    for cand in store.table("phrases").to_pylist():
        sample = samples[cand["sample_id"]]
        with Image.open(dataset.root / sample["image_path"]) as image:
            rgb = np.asarray(image.convert("RGB"))
        predictor.set_image(rgb)  # the per-phrase re-encode that `build` avoids
        relevance = oracle_map(source, dataset.ground_truth(records[cand["sample_id"]]), grid)
        result = prompt_mask(rule, relevance, predictor, rgb.shape[:2])
        encode_rle(result.mask)
        n += 1
    return time.perf_counter() - start, n


def main() -> None:
    """Run both sides on each dataset and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/refer_sample"))
    parser.add_argument(
        "--datasets", nargs="+", default=["refcoco", "refcoco+", "refcocog", "refcocog-google"]
    )
    parser.add_argument("--params", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    sam = sam_for(encoder_config(params.get("encode") or {}))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            out = Path(tmp) / name
            build(name, args.data_root, out, params, InProcessExecutor(), stages=TEXT_STAGES)
            start = time.perf_counter()
            build(name, args.data_root, out, params, InProcessExecutor())  # the label stages
            built = time.perf_counter() - start
            store = LabelStore(out)
            images = store.manifest["stats"]["images"]
            naive, cands = naive_loop(store, open_dataset(name, args.data_root), params, sam)
            rows.append((name, images, cands, built, naive))

    print(
        f"{'dataset':16} {'images':>6} {'cands':>6} {'cand/img':>8} {'build s':>8} "
        f"{'naive s':>8} {'ratio':>6} {'img/s':>6} {'cand/s':>7}"
    )
    for name, images, cands, built, naive in rows:
        print(
            f"{name:16} {images:6d} {cands:6d} {cands / images:8.2f} {built:8.2f} "
            f"{naive:8.2f} {naive / built:6.2f} {images / built:6.2f} {cands / built:7.2f}"
        )
    images, cands = sum(r[1] for r in rows), sum(r[2] for r in rows)
    built, naive = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(
        f"{'all':16} {images:6d} {cands:6d} {cands / images:8.2f} {built:8.2f} "
        f"{naive:8.2f} {naive / built:6.2f} {images / built:6.2f} {cands / built:7.2f}"
    )


if __name__ == "__main__":
    main()
