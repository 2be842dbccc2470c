"""A RefCOCO-size dataset in the refer layout: the real sentence structure over synthetic images.

    python bench/refcoco_like.py OUT [--fraction 1.0]

RefCOCO (UNC) has 19,994 images, 50,000 referents, 142,210 sentences and 196,771 annotations in
its instances.json. The real val/testA/testB expressions (../shared/data/refcoco_expressions,
21,583 sentences over 3,000 images) are tiled until the sentence count is reached: copy 0 keeps
its split, later copies are `train` (so train holds about 85 %, as in RefCOCO), each copy with
fresh ref, sentence, image and annotation ids. Every image gets distractor annotations up to
RefCOCO's 9.84 per image; every annotation is a 24-vertex polygon (COCO's typical size) inside
its box. Images are small JPEGs (160 × 120, boxes scaled by 1/4): what the CPU stages' cost per
record needs, not what an encoder would see. `fraction` scales every count.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

EXPRESSIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "refcoco_expressions"
SPLIT_FILES = {"val": "refcoco_unc_val.csv", "testA": "refcoco_unc_testA.csv",
               "testB": "refcoco_unc_testB.csv"}  # fmt: skip
REFCOCO = {"images": 19_994, "refs": 50_000, "sentences": 142_210, "annotations": 196_771}
IMAGES_DIR = "images/mscoco/images/train2014"
SIZE = (160, 120)  # (W, H) of the synthetic images; COCO's 640 × 480 scaled by 1/4
SCALE = 0.25
VERTICES = 24
N_CATEGORIES = 80  # COCO's; names are statistics only, so numbered here


def _read_refs(expressions: Path) -> list[dict[str, Any]]:
    """The real referents of RefCOCO val/testA/testB: ref_id, img_id, split, box, sentences."""
    refs: dict[int, dict[str, Any]] = {}
    for split, name in SPLIT_FILES.items():
        with (expressions / name).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                ref = refs.setdefault(
                    int(row["ref_id"]),
                    {"ref_id": int(row["ref_id"]), "img_id": int(row["img_id"]), "split": split,
                     "bbox": json.loads(row["bbox"]), "sentences": []},
                )  # fmt: skip
                ref["sentences"].append((int(row["sent_id"]), row["sent"]))
    return [refs[k] for k in sorted(refs)]


def _polygon(box: list[float], rng: np.random.Generator) -> list[float]:
    """A 24-vertex polygon inside an xywh box, coordinates to two decimals as COCO writes them."""
    x, y, w, h = box
    angles = np.linspace(0, 2 * np.pi, VERTICES, endpoint=False)
    radius = 0.5 * (0.8 + 0.2 * rng.random(VERTICES))
    xs = x + w * (0.5 + radius * np.cos(angles))
    ys = y + h * (0.5 + radius * np.sin(angles))
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def _scaled(box: list[float]) -> list[float]:
    x, y, w, h = (v * SCALE for v in box)
    x, y = min(x, SIZE[0] - 2), min(y, SIZE[1] - 2)
    return [round(x, 2), round(y, 2), round(max(1.0, min(w, SIZE[0] - x)), 2),
            round(max(1.0, min(h, SIZE[1] - y)), 2)]  # fmt: skip


def make(out: Path, fraction: float = 1.0, seed: int = 0) -> dict[str, int]:
    """Write refcoco/refs(unc).p, refcoco/instances.json and the images under `out`; returns
    the counts written."""
    rng = np.random.default_rng(seed)
    base = _read_refs(EXPRESSIONS)
    want = max(1, round(REFCOCO["sentences"] * fraction))
    per_copy = sum(len(r["sentences"]) for r in base)
    copies = math.ceil(want / per_copy)
    refs, images, annotations = [], {}, []
    sentences = 0
    ann_id = 1
    for k in range(copies):
        for ref in base:
            if sentences >= want:
                break
            image_id = ref["img_id"] + k * 1_000_000
            if image_id not in images:
                images[image_id] = {"id": image_id, "width": SIZE[0], "height": SIZE[1],
                                    "file_name": f"COCO_train2014_{image_id:012d}.jpg"}  # fmt: skip
            category = int(rng.integers(1, N_CATEGORIES + 1))
            box = _scaled(ref["bbox"])
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": category,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
                                "segmentation": [_polygon(box, rng)]})  # fmt: skip
            sents = [(sid + k * 10_000_000, text) for sid, text in ref["sentences"]]
            sents = sents[: want - sentences]
            sentences += len(sents)
            refs.append({
                "ref_id": ref["ref_id"] + k * 1_000_000, "ann_id": ann_id, "image_id": image_id,
                "split": ref["split"] if k == 0 else "train", "category_id": category,
                "file_name": images[image_id]["file_name"],
                "sent_ids": [sid for sid, _ in sents],
                "sentences": [{"sent_id": sid, "sent": text, "raw": text,
                               "tokens": text.split()} for sid, text in sents],
            })  # fmt: skip
            ann_id += 1
    per_image = REFCOCO["annotations"] / REFCOCO["images"]
    extra = max(0, round(per_image * len(images)) - len(annotations))
    image_ids = list(images)
    for i in range(extra):
        image_id = image_ids[i % len(image_ids)]
        w, h = rng.uniform(8, 80), rng.uniform(8, 60)
        box = [round(float(rng.uniform(0, SIZE[0] - w)), 2),
               round(float(rng.uniform(0, SIZE[1] - h)), 2), round(w, 2), round(h, 2)]  # fmt: skip
        annotations.append({"id": ann_id, "image_id": image_id,
                            "category_id": int(rng.integers(1, N_CATEGORIES + 1)),
                            "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
                            "segmentation": [_polygon(box, rng)]})  # fmt: skip
        ann_id += 1
    dataset = out / "refcoco"
    dataset.mkdir(parents=True, exist_ok=True)
    with (dataset / "refs(unc).p").open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)  # the refer toolkit's own files are protocol 2
    instances = {
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [{"id": i, "name": f"category {i}"} for i in range(1, N_CATEGORIES + 1)],
    }
    (dataset / "instances.json").write_text(json.dumps(instances))
    _write_images(out / IMAGES_DIR, images.values(), rng)
    return {"images": len(images), "refs": len(refs), "sentences": sentences,
            "annotations": len(annotations)}  # fmt: skip


def _write_images(folder: Path, images: Any, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        path = folder / image["file_name"]
        if path.exists():
            continue
        pixels = np.empty((SIZE[1], SIZE[0], 3), dtype=np.uint8)
        pixels[...] = rng.integers(0, 256, 3, dtype=np.uint8)
        x, y = rng.integers(0, SIZE[0] // 2), rng.integers(0, SIZE[1] // 2)
        pixels[y : y + SIZE[1] // 2, x : x + SIZE[0] // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=1.0)
    args = parser.parse_args()
    print(make(args.out, args.fraction))


if __name__ == "__main__":
    main()
