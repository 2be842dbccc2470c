"""The refer-format adapter: RefCOCO, RefCOCO+, RefCOCOg and the synthetic set.

Layout under --data-root (paths come from the dataset's spec):
    <dataset>/refs(<split_by>).p   refer-toolkit refs, loaded with the restricted unpickler
    <dataset>/instances.json       COCO images, annotations (polygon or RLE), categories
    <images>/<file_name>           the images named in instances.json

One record per (ref, sentence). A single bad record (empty expression, unknown annotation, missing
image) becomes a `Reject` and the build goes on; a bad file is a DatasetError.

Expressions keep non-ASCII letters ("café", "naïve", CJK): CLIP's byte-level BPE and spaCy both take
Unicode, and dropping letters would change what the sentence refers to. They are only
NFKC-normalised (full-width forms, ligatures) and whitespace-collapsed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import unicodedata
import warnings
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.dataset import GroundTruth, ObjectTruth, PhraseTruth
from pipeline.data.records import Reject, SourceRecord
from pipeline.data.safe_pickle import load_refs_pickle
from pipeline.data.specs import DatasetSpec, checked_root
from pipeline.data.truth import WorldTruth

log = logging.getLogger(__name__)

# Control, surrogate and private-use characters: never part of a sentence a person wrote; they come
# from broken encodings or copy-paste, and would reach the tokenizers as garbage.
_BAD_CATEGORIES = {"Cc", "Cs", "Co"}


def normalise_expression(text: str) -> str:
    """NFKC-normalise and collapse runs of whitespace (tabs and newlines too) to single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def expression_problem(expression: str) -> str | None:
    """Why a normalised expression cannot be used, or None when it can."""
    if not expression:
        return "empty or whitespace-only expression"
    bad = [ch for ch in expression if unicodedata.category(ch) in _BAD_CATEGORIES]
    if bad:
        return f"expression contains control characters {bad!r}"
    if not any(ch.isalpha() for ch in expression):
        return f"expression {expression!r} has no letter"
    return None


def _compact_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, its polygon segmentation as float64 arrays: called as each
    object closes, so an annotation's coordinate lists are freed as soon as it is read. Polygons
    are most of a COCO instances.json; as Python floats they cost 32 bytes a coordinate (≈ 1 GB
    for RefCOCO's 196k annotations), as arrays 8 (exact: the same doubles pycocotools reads)."""
    obj = dict(pairs)
    segmentation = obj.get("segmentation")
    if (
        isinstance(segmentation, list)
        and segmentation
        and all(isinstance(poly, list) for poly in segmentation)
    ):
        # not numbers: left as read, for decode_segmentation to refuse if ever asked
        with contextlib.suppress(TypeError, ValueError):
            obj["segmentation"] = [np.asarray(poly, dtype=np.float64) for poly in segmentation]
    return obj


class _Instances:
    """The parts of a COCO instances.json the adapter needs, indexed by id."""

    def __init__(self, path: Path) -> None:
        try:
            with path.open("rb") as handle:
                data = json.loads(handle.read(), object_pairs_hook=_compact_object)
            self.images: dict[int, dict[str, Any]] = {int(i["id"]): i for i in data["images"]}
            self.annotations: dict[int, dict[str, Any]] = {
                int(a["id"]): a for a in data["annotations"]
            }
            self.categories: dict[int, str] = {
                int(c["id"]): str(c["name"]) for c in data.get("categories", [])
            }
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {path} as JSON ({exc})") from None
        except (KeyError, TypeError) as exc:
            raise DatasetError(
                f"{path} is not a COCO instances file: images, annotations and categories need "
                f"an 'id' and images a 'file_name' ({type(exc).__name__}: {exc})"
            ) from None
        for image_id, image in self.images.items():
            if not all(k in image for k in ("file_name", "height", "width")):
                raise DatasetError(f"{path}: image {image_id} lacks file_name, height or width")


class ReferDataset:
    """A refer-toolkit dataset (see the module docstring) as the pipeline's `Dataset`."""

    def __init__(self, spec: DatasetSpec, root: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.root = checked_root(spec, root, "refer")
        self._image_exists: dict[int, bool] = {}

    @cached_property
    def _refs(self) -> list[dict]:
        return load_refs_pickle(self.spec.path(self.root, self.spec.refs))

    @cached_property
    def _instances(self) -> _Instances:
        return _Instances(self.spec.path(self.root, self.spec.instances))

    @cached_property
    def truth(self) -> WorldTruth | None:
        """Phrase and object ground truth where the spec names phrase tables (synthetic)."""
        if not self.spec.phrases:
            return None
        return WorldTruth(self.spec, self.root, self._instances, decode_segmentation)

    def phrase_truth(self, sample_id: str) -> list[PhraseTruth] | None:
        """The noun phrases of a sample's sentence with their denotations; None without truth."""
        if self.truth is None:
            return None
        ref_id, sent_id = sample_id.rsplit("/", 2)[1:]  # this adapter's own id format
        return self.truth.phrases(int(ref_id), int(sent_id))

    def objects(self, image_id: str) -> tuple[ObjectTruth, ...] | None:
        """Every annotated object of an image with its words; None without truth."""
        return None if self.truth is None else self.truth.objects(int(image_id))

    def input_files(self) -> list[Path]:
        """The refs pickle and instances.json (and phrase tables), under --data-root."""
        return [self.spec.path(self.root, f) for f in self.spec.files]

    def image_path(self, image: dict[str, Any]) -> str:
        """An instances.json image entry's path relative to --data-root (POSIX)."""
        return (PurePosixPath(self.spec.images) / image["file_name"]).as_posix()

    def _image_problem(self, image_id: int) -> str | None:
        image = self._instances.images.get(image_id)
        if image is None:
            return f"image_id {image_id} has no image entry in {self.spec.instances}"
        if image_id not in self._image_exists:  # one stat per image, however many sentences
            self._image_exists[image_id] = (self.root / self.image_path(image)).is_file()
        if not self._image_exists[image_id]:
            return f"image file {self.image_path(image)} is missing under --data-root {self.root}"
        return None

    def _ref_problem(self, ref: dict[str, Any]) -> str | None:
        if ref["split"] not in self.spec.splits:
            return f"split {ref['split']!r} is not listed in data_manifests/{self.name}.yaml"
        if ref["ann_id"] not in self._instances.annotations:
            return f"ann_id {ref['ann_id']} is not in {self.spec.instances}"
        if self._instances.annotations[ref["ann_id"]].get("image_id") != ref["image_id"]:
            return (
                f"ann_id {ref['ann_id']} belongs to another image than image_id {ref['image_id']}"
            )
        return self._image_problem(ref["image_id"])

    def records(self, splits: list[str] | None = None) -> tuple[list[SourceRecord], list[Reject]]:
        """One record per (ref, sentence) of `splits` (every split when None), and the rejects.

        Records are sorted by (image_id, ref_id, sent_id) so every run yields the same order.
        """
        wanted = set(self.spec.splits if splits is None else splits)
        unknown = sorted(wanted - set(self.spec.splits))
        if unknown:
            raise ConfigError(
                f"dataset {self.name!r} has no split(s) {', '.join(unknown)} (--splits); "
                f"available: {', '.join(self.spec.splits)}"
            )
        keyed: list[tuple[tuple[int, int, int], SourceRecord]] = []
        rejects: list[Reject] = []
        seen: set[str] = set()
        for ref in self._refs:
            if splits is not None and ref["split"] not in wanted:
                continue
            ref_problem = self._ref_problem(ref)
            for sentence in ref["sentences"]:
                sample_id = f"{self.name}/{ref['ref_id']}/{sentence['sent_id']}"
                if sample_id in seen:
                    raise DatasetError(
                        f"{self.spec.refs}: sample {sample_id} occurs twice (ref_id "
                        f"{ref['ref_id']}, sent_id {sentence['sent_id']}); refs must be unique"
                    )
                seen.add(sample_id)
                expression = normalise_expression(sentence["sent"])
                problem = ref_problem or expression_problem(expression)
                if problem:
                    rejects.append(Reject("ingest", self.spec.refs, sample_id, problem))
                    continue
                record = self._record(ref, sentence["sent_id"], sample_id, expression)
                keyed.append(((ref["image_id"], ref["ref_id"], sentence["sent_id"]), record))
        keyed.sort(key=lambda item: item[0])
        log.info("%s: %d records, %d rejected", self.name, len(keyed), len(rejects))
        return [record for _, record in keyed], rejects

    def _record(
        self, ref: dict[str, Any], sent_id: int, sample_id: str, expression: str
    ) -> SourceRecord:
        annotation = self._instances.annotations[ref["ann_id"]]
        category_id = annotation.get("category_id", ref.get("category_id"))
        return SourceRecord(
            sample_id=sample_id,
            image_id=str(ref["image_id"]),
            image_path=self.image_path(self._instances.images[ref["image_id"]]),
            split=ref["split"],
            expression=expression,
            source=self.spec.source,
            ref_id=ref["ref_id"],
            ann_id=ref["ann_id"],
            category=self._instances.categories.get(category_id, ""),
        )

    def ground_truth(self, record: SourceRecord) -> GroundTruth:
        """The referent's mask, (H, W) bool at the image's original size, and its COCO xywh box."""
        annotation = self._instances.annotations.get(record.ann_id)
        if annotation is None:
            raise DatasetError(
                f"{self.spec.instances}: no annotation {record.ann_id} for {record.sample_id}"
            )
        image = self._instances.images[annotation["image_id"]]
        height, width = int(image["height"]), int(image["width"])
        mask = decode_segmentation(annotation.get("segmentation"), height, width)
        bbox = tuple(float(v) for v in annotation["bbox"])
        return GroundTruth(mask=mask, bbox=bbox)  # type: ignore[arg-type]


def _compressed(segmentation: Any) -> bool:
    return isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes)


def _bytes_counts(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as an (H, W) bool mask."""
    if not segmentation:
        return np.zeros((height, width), dtype=bool)
    if _compressed(segmentation):
        rle = _bytes_counts(segmentation)
    elif isinstance(segmentation, list) and all(map(_compressed, segmentation)):
        # A list of compressed RLEs: how exported pseudo-labels keep exact masks in the refer
        # layout (pipeline/export/refer_files.py); the refer toolkit's getMask decodes it too.
        rle = mask_utils.merge([_bytes_counts(s) for s in segmentation])
    else:
        # Polygons (a list of [x0, y0, x1, y1, ...]) or uncompressed RLE (counts as a list of ints).
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    with warnings.catch_warnings():
        # pycocotools 2.0.x's decode trips numpy 2's copy-keyword deprecation; harmless here.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)  # (H, W)
