"""Referent pseudo-labels in the refer toolkit's layout, as RefCOCO ships: a data root of

    refs(ppt).p       the refs: one ref per sample, one sentence each (plain containers only)
    instances.json    COCO images, annotations (the pseudo-label masks), categories
    images/           the images named in instances.json (symlinks or copies; none on request)

that `ppt-labels build --dataset ppt-export --data-root DIR` (data_manifests/ppt-export.yaml),
the refer toolkit (`REFER(parent, "DIR's name", "ppt")`) and RIS codebases built on it read as
RefCOCO. Masks stay exact: each annotation's `segmentation` is a list holding one compressed RLE,
which the toolkit's `getMask` decodes as it does RefCOCO's polygon lists (a list whose first item
is not a polygon is handed to pycocotools as RLEs).

The pickle is written with protocol 2 (Python 2 toolkits read it) and holds only lists, dicts,
strings and numbers, which is all `pipeline.data.safe_pickle` admits. Each ref keeps the store's
sample_id, subset, phrase and cand_idx as extra keys, so a re-built store can be matched back.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.export.coco_json import coco_document
from pipeline.export.referents import ReferentLabel
from pipeline.store.shards import remove_leftovers, write_json

REFS_FILE = "refs(ppt).p"
INSTANCES_FILE = "instances.json"
IMAGES_DIR = "images"
IMAGE_MODES = ("symlink", "copy", "none")


def refer_document(labels: Sequence[ReferentLabel], description: str) -> tuple[list, dict]:
    """(refs, instances) of `labels`: ref, annotation and sentence ids are 1..N in label order."""
    instances = coco_document(labels, description)
    file_names = {image["id"]: image["file_name"] for image in instances["images"]}
    refs = []
    for label, ann in zip(labels, instances["annotations"], strict=True):
        ann["segmentation"] = [ann["segmentation"]]  # a list, as the toolkit's getMask wants
        refs.append(
            {
                "ref_id": ann["id"],
                "ann_id": ann["id"],
                "image_id": ann["image_id"],
                "split": label.split,
                "category_id": ann["category_id"],
                "file_name": file_names[ann["image_id"]],
                "sent_ids": [ann["id"]],
                "sentences": [
                    {
                        "sent_id": ann["id"],
                        "sent": label.expression,
                        "raw": label.expression,
                        "tokens": label.expression.split(),
                    }
                ],
                "sample_id": label.sample_id,
                "subset": label.subset,
                "phrase": label.phrase,
                "cand_idx": label.cand_idx,
            }
        )
    return refs, instances


def write_refer(
    labels: Sequence[ReferentLabel],
    out: Path,
    description: str,
    images: str = "symlink",
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Write the refer layout (module docstring) into `out`; returns counts for the user.

    Args:
        images: symlink | copy the images from `data_root` into out/images, or none.
        data_root: the store's --data-root (its samples' image paths are relative to it).
    """
    if images not in IMAGE_MODES:
        raise ConfigError(f"--images {images!r}: choose one of {', '.join(IMAGE_MODES)}")
    if images != "none" and data_root is None:
        raise ConfigError(
            f"--images {images} needs --data-root, the store's dataset root (or --images none)"
        )
    refs, instances = refer_document(labels, description)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)  # of a killed export
    if images != "none":
        place_images(instances["images"], Path(str(data_root)), out / IMAGES_DIR, images)
    write_json(instances, out / INSTANCES_FILE)
    tmp = out / f".{REFS_FILE}.tmp-{os.getpid()}"
    with tmp.open("wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    tmp.replace(out / REFS_FILE)
    return {"refs": len(refs), "images": len(instances["images"]), "out": str(out)}


def place_images(entries: Sequence[dict], data_root: Path, images_dir: Path, mode: str) -> None:
    """Symlink or copy each image entry's `source_path` under `data_root` to `images_dir`."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        source = (data_root / entry["source_path"]).resolve()
        if not source.is_file():
            raise DatasetError(
                f"image {source} of the export is missing: is --data-root {data_root} the "
                "store's dataset root?"
            )
        target = images_dir / entry["file_name"]
        if target.is_symlink() or target.exists():
            target.unlink()
        if mode == "symlink":
            target.symlink_to(source)
        else:
            shutil.copy2(source, target)
