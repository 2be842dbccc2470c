"""Projections of a built label store to the team's stores: files, bytes, counts (bench/scale.py).

The four stores of the run (RefCOCO, RefCOCO+, RefCOCOg umd, D_sem) by their published counts;
candidates per sentence measured on the real expressions (`bench/phrase_stats.py`'s reader, the
phrases stage's extractor); COCO images shared between the datasets estimated from the real
val/test expression files (`unique_images`). A store's files and bytes are projected from a
built store (`scale.describe_store`) stage by stage:
- files = shards × (files a shard that are not array data) + each array's stored objects + the
  stage's record (one file), where
  an array stored whole (one object per shard: Zarr's sharding codec) is one a shard and one in
  row chunks needs rows a shard / rows an object;
- bytes = each array's apparent bytes a row × its rows at scale (rows by unit: an image, a
  candidate, a sentence; `store_layout.ROW_ARRAYS`) + the rest's bytes a sentence × sentences;
  bytes on disk add each stored object's measured block slack (disk − apparent) × objects.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import phrase_stats
from store_layout import ROW_ARRAYS

EXPRESSIONS = phrase_stats.DEFAULT_CSV_DIR
# Published counts (refer toolkit; RefCOCOg: the umd split); D_sem: the paper's Mini-ImageNet
# images, one expression and one candidate an image. `csv`: the dataset's real val/test files.
STORES: dict[str, dict[str, Any]] = {
    "RefCOCO": {"sentences": 142_210, "images": 19_994, "objects": 50_000, "csv": "refcoco_unc"},
    "RefCOCO+": {"sentences": 141_564, "images": 19_992, "objects": 49_856, "csv": "refcoco+_unc"},
    "RefCOCOg": {"sentences": 95_010, "images": 25_799, "objects": 49_822, "csv": "refcocog_umd"},
    "D_sem": {"sentences": 2_836, "images": 2_836, "objects": 2_836, "csv": None},
}
UNIT_COUNT = {"image": "images", "candidate": "candidates", "sentence": "sentences"}


def _csvs(prefix: str) -> list[Path]:
    return sorted(EXPRESSIONS.glob(f"{prefix}_*.csv"))


def store_counts(limit: int) -> dict[str, dict[str, Any]]:
    """STORES with `candidates` (sentences × candidates a sentence of the first `limit` real
    val sentences, phrases stage rules at params.yaml's defaults) and `train` (RefCOCO: all
    sentences less the val/test files' rows)."""
    from pipeline.labelling.phrases import PhrasesConfig, candidate_histogram, extract_phrases
    from pipeline.labelling.phrases import candidate_counts as counts_of

    out = {}
    for name, store in STORES.items():
        store = {k: v for k, v in store.items() if k != "csv"}
        prefix = STORES[name]["csv"]
        if prefix is None:
            store["candidates_per_sentence"] = 1.0
        else:
            sentences = phrase_stats.read_sentences(_csvs(prefix)[-1], limit)  # *_val.csv
            hist = candidate_histogram(counts_of(extract_phrases(sentences, PhrasesConfig())))
            store["candidates_per_sentence"] = hist["mean_candidates"]
        store["candidates"] = round(store["sentences"] * store["candidates_per_sentence"])
        held_out = sum(sum(1 for _ in csv.DictReader(p.open())) for p in _csvs(prefix or "-"))
        store["train"] = store["sentences"] - held_out
        out[name] = store
    return out


def _images(prefix: str) -> set[int]:
    return {int(r["img_id"]) for p in _csvs(prefix) for r in csv.DictReader(p.open())}


def unique_images() -> dict[str, Any]:
    """Distinct images of the four stores, estimated from the real val/test files.

    RefCOCO+ shares RefCOCO's images when their val/test images are the same set (one split of
    one image set): shared = the smaller count. RefCOCOg's split is its own, so the share of its
    val/test images found among RefCOCO's val/test images, over the share of RefCOCO's images
    those are, estimates the share of all its images RefCOCO holds (capture-recapture; assumes
    the two splits independent). D_sem's ImageNet images are shared with none."""
    coco, plus, g = (_images(STORES[n]["csv"]) for n in ("RefCOCO", "RefCOCO+", "RefCOCOg"))
    n_coco, n_plus, n_g = (STORES[n]["images"] for n in ("RefCOCO", "RefCOCO+", "RefCOCOg"))
    shared_plus = min(n_coco, n_plus) if plus == coco else 0
    sampled = len(coco) / n_coco
    share_g = min(1.0, len(g & coco) / len(g) / sampled) if g and sampled else 0.0
    coco_images = n_coco + (n_plus - shared_plus) + round(n_g * (1 - share_g))
    return {
        "unique": coco_images + STORES["D_sem"]["images"],
        "sum": sum(s["images"] for s in STORES.values()),
        "refcoco_plus_shared": shared_plus,
        "refcocog_share_in_refcoco": round(share_g, 3),
        "how": (
            f"RefCOCO+ val/test images {'==' if plus == coco else '!='} RefCOCO's "
            f"({len(coco)}): {shared_plus} shared; RefCOCOg umd val/test: {len(g & coco)} of "
            f"{len(g)} among RefCOCO's val/test ({sampled:.1%} of its images) → "
            f"{share_g:.0%} of RefCOCOg's images in RefCOCO (splits assumed independent)"
        ),
    }


def _array_projection(
    parts: list[dict[str, Any]], rows: float, shards: int, slack_of: str
) -> dict[str, float]:
    """One array's objects, apparent bytes and disk bytes at `rows` rows in `shards` shards."""
    measured_rows = sum(p["rows"] for p in parts)
    files = sum(p["files"] for p in parts)
    if all(p["rows_per_object"] >= p["rows"] for p in parts):
        objects = shards  # stored whole: one object a shard
    else:
        per_object = min(p["rows_per_object"] for p in parts)
        objects = shards * math.ceil(rows / shards / per_object)
    apparent = sum(p["bytes"] for p in parts) / measured_rows * rows
    slack = (sum(p[slack_of] for p in parts) - sum(p["bytes"] for p in parts)) / max(files, 1)
    return {
        "rows": rows,
        "objects": objects,
        "bytes": apparent,
        "disk_bytes": apparent + objects * slack,
    }


def project_store(layout: dict[str, Any], shard_size: int, counts: dict[str, Any]) -> dict:
    """Files, bytes and disk bytes of each stage (and array) of a store of `counts`, from the
    built store `layout` (module docstring)."""
    sentences = counts["sentences"]
    shards = math.ceil(sentences / shard_size)
    stages, total = {}, {"files": 0.0, "bytes": 0.0, "disk_bytes": 0.0}
    for name, stage in layout["stages"].items():
        arrays = {}
        for array in sorted({a["array"] for a in stage["arrays"]}):
            parts = [a for a in stage["arrays"] if a["array"] == array]
            unit = ROW_ARRAYS.get(array)
            rows = (counts[UNIT_COUNT[unit]] if unit
                    else sum(p["rows"] for p in parts) / layout["samples"] * sentences)  # fmt: skip
            arrays[array] = _array_projection(parts, rows, shards, "disk_bytes")
        data = {k: sum(p[k] for p in stage["arrays"]) for k in ("files", "bytes", "disk_bytes")}
        rest = {k: stage[k] - data[k] for k in data}
        per_sentence = sentences / layout["samples"]
        out = {  # the stage's record (_stage.json) is one file whatever its shards
            "files": (rest["files"] - 1) / stage["shards"] * shards
            + 1
            + sum(a["objects"] for a in arrays.values()),
            "bytes": rest["bytes"] * per_sentence + sum(a["bytes"] for a in arrays.values()),
            "disk_bytes": rest["disk_bytes"] * per_sentence
            + sum(a["disk_bytes"] for a in arrays.values()),
            "arrays": arrays,
        }
        stages[name] = out
        for k in total:
            total[k] += out[k]
    return {"shards": shards, "stages": stages, **total}
