"""The object-centric adapter: ImageNet images with their class names (PPT's D_sem source).

Each image becomes one record whose expression is the paper's D_sem template,
"the {class} in the middle": ImageNet images are centred on one object of the class. Two layouts
(the spec's `layout`):

    flat      <classes>: [{index, wnid, openclip_name, file}], files relative to <images>;
              one image per class, image_id = wnid
    folders   <images>/<wnid>/<file>, one folder per class; <classes> maps wnid → name, as JSON
              {wnid: name} or text lines "wnid name[, synonym...]" (ImageNet's
              LOC_synset_mapping.txt); image_id = wnid/<file stem>

Class names may list synonyms ("tench, Tinca tinca"); the first one is the expression's noun.
There is no ground truth: ground_truth() returns None.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.dataset import GroundTruth
from pipeline.data.records import Reject, SourceRecord
from pipeline.data.refer import expression_problem, normalise_expression
from pipeline.data.specs import DatasetSpec, checked_root

log = logging.getLogger(__name__)

TEMPLATE = "the {} in the middle"  # D_sem expression template of the PPT paper
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


def class_noun(name: str) -> str:
    """A class name's first comma-separated synonym, normalised like every expression."""
    return normalise_expression(name.split(",")[0])


def class_expression(name: str) -> str:
    """The D_sem expression for a class name: "the {first synonym} in the middle"."""
    return TEMPLATE.format(class_noun(name))


def read_name_map(path: Path) -> dict[str, str]:
    """wnid → class name from a JSON object or from "wnid name" text lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read class-name map {path} ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DatasetError(f"{path}: expected a JSON object {{wnid: class name}}")
        return {str(k): v for k, v in data.items()}
    names = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{number}: expected 'wnid class name', found {line!r}")
        names[parts[0]] = parts[1].strip()
    return names


class ImageNetDataset:
    """ImageNet-style object-centric images (see the module docstring) as a `Dataset`."""

    def __init__(self, spec: DatasetSpec, root: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.root = checked_root(spec, root, "imagenet")

    def input_files(self) -> list[Path]:
        """The class list (flat) or class-name map (folders), under --data-root."""
        return [self.spec.path(self.root, f) for f in self.spec.files]

    def ground_truth(self, record: SourceRecord) -> GroundTruth | None:
        """None: object-centric images carry no mask annotation."""
        return None

    def records(self, splits: list[str] | None = None) -> tuple[list[SourceRecord], list[Reject]]:
        """One record per image (split "train"), sorted by image_id, and the rejects."""
        unknown = sorted(set(splits or ()) - set(self.spec.splits))
        if unknown:
            raise ConfigError(
                f"dataset {self.name!r} has no split(s) {', '.join(unknown)} (--splits); "
                f"available: {', '.join(self.spec.splits)}"
            )
        if splits is not None and "train" not in splits:
            return [], []
        if self.spec.layout == "flat":
            entries, rejects = self._flat_entries()
        else:
            entries, rejects = self._folder_entries()

        records: list[SourceRecord] = []
        seen: set[str] = set()
        for image_id, image_path, name in sorted(entries):
            sample_id = f"{self.name}/{image_id}"
            if sample_id in seen:
                raise DatasetError(
                    f"{self.spec.classes}: image_id {image_id} occurs twice; the flat layout "
                    "holds one image per class (use layout: folders for more)"
                )
            seen.add(sample_id)
            noun = class_noun(name)
            problem = expression_problem(noun)  # the template has letters; check the noun
            if problem:
                rejects.append(Reject("ingest", self.spec.classes, sample_id, problem))
                continue
            records.append(
                SourceRecord(
                    sample_id=sample_id,
                    image_id=image_id,
                    image_path=image_path,
                    split="train",
                    expression=class_expression(name),
                    source=self.spec.source,
                    category=noun,
                )
            )
        log.info("%s: %d records, %d rejected", self.name, len(records), len(rejects))
        return records, rejects

    def _flat_entries(self) -> tuple[list[tuple[str, str, str]], list[Reject]]:
        path = self.spec.path(self.root, self.spec.classes)
        try:
            classes = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {path} as JSON ({exc})") from None
        if not isinstance(classes, list):
            raise DatasetError(f"{path}: expected a list of {{index, wnid, openclip_name, file}}")
        entries, rejects = [], []
        for index, entry in enumerate(classes):
            reason, image = self._flat_problem(entry)
            if reason:
                wnid = entry.get("wnid") if isinstance(entry, dict) else None
                record = f"{self.name}/{wnid}" if isinstance(wnid, str) else f"entry #{index}"
                rejects.append(Reject("ingest", self.spec.classes, record, reason))
                continue
            entries.append((entry["wnid"], image, entry["openclip_name"]))
        return entries, rejects

    def _flat_problem(self, entry: Any) -> tuple[str | None, str]:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("wnid", "openclip_name", "file")
        ):
            return "entry needs string wnid, openclip_name and file", ""
        image = (PurePosixPath(self.spec.images) / entry["file"]).as_posix()
        if not (self.root / image).is_file():
            return f"image file {image} is missing under --data-root {self.root}", image
        return None, image

    def _folder_entries(self) -> tuple[list[tuple[str, str, str]], list[Reject]]:
        names = read_name_map(self.spec.path(self.root, self.spec.classes))
        images_dir = self.spec.path(self.root, self.spec.images)
        entries, rejects = [], []
        folders = sorted(
            p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        for folder in folders:
            files = sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            for file in files:
                image_id = f"{folder.name}/{file.stem}"
                image = (PurePosixPath(self.spec.images) / folder.name / file.name).as_posix()
                if folder.name not in names:
                    reason = f"class folder {folder.name} has no name in {self.spec.classes}"
                    rejects.append(Reject("ingest", image, f"{self.name}/{image_id}", reason))
                    continue
                entries.append((image_id, image, names[folder.name]))
        unused = sorted(set(names) - {f.name for f in folders})
        if unused:
            log.info(
                "%s: %d named classes have no folder (e.g. %s)", self.name, len(unused), unused[0]
            )
        return entries, rejects
