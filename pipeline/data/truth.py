"""Phrase and object ground truth of the synthetic world, read beside its refer files.

The synthetic generator writes `phrases_<split>.json` (every noun phrase's span and denotation)
and, in instances.json, each annotation's colour and inner part. A refer dataset whose spec names
the phrase tables (`phrases:`) exposes them as a `WorldTruth`: the diagnostic relevance sources
(`gt-phrase`, `simulated`) and the phrase-level scores read it. Nothing trains on it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pipeline.core.errors import DatasetError
from pipeline.data.dataset import ObjectTruth, PhraseTruth
from pipeline.data.specs import DatasetSpec


class WorldTruth:
    """Object and phrase truth of one refer dataset (see the module docstring)."""

    def __init__(self, spec: DatasetSpec, root: Any, instances: Any, decode: Any) -> None:
        """`instances`: the adapter's parsed instances.json; `decode`: its segmentation decoder
        (segmentation, height, width) → (H, W) bool."""
        self.spec, self.root, self._instances, self._decode = spec, root, instances, decode
        self._by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in instances.annotations.values():
            self._by_image.setdefault(int(ann["image_id"]), []).append(ann)

    @functools.cached_property
    def _phrases(self) -> dict[tuple[int, int], list[PhraseTruth]]:
        out: dict[tuple[int, int], list[PhraseTruth]] = {}
        for split in self.spec.splits:
            path = self.spec.path(self.root, self.spec.phrases.format(split=split))
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
                for r in rows:
                    out.setdefault((int(r["ref_id"]), int(r["sent_id"])), []).append(
                        PhraseTruth(r["role"], r["phrase"], int(r["start"]), int(r["end"]),
                                    int(r["head_start"]), int(r["head_end"]),
                                    tuple(int(a) for a in r["ann_ids"]))
                    )  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}: unreadable phrase truth ({exc})") from None
        return out

    def phrases(self, ref_id: int, sent_id: int) -> list[PhraseTruth]:
        """The noun phrases of one sentence (and the whole sentence, role "sentence")."""
        return self._phrases.get((int(ref_id), int(sent_id)), [])

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one dataset object per process
    def objects(self, image_id: int) -> tuple[ObjectTruth, ...]:
        """Every annotated object of an image, in annotation-id order (its paint order)."""
        image = self._instances.images[int(image_id)]
        h, w = int(image["height"]), int(image["width"])
        out = []
        for ann in sorted(self._by_image.get(int(image_id), []), key=lambda a: a["id"]):
            part = ann.get("part")
            out.append(
                ObjectTruth(
                    ann_id=int(ann["id"]),
                    shape=self._instances.categories.get(ann.get("category_id"), ""),
                    colour=str(ann.get("colour", "")),
                    part_colour=part["colour"] if part else None,
                    mask=self._decode(ann.get("segmentation"), h, w),
                    part_mask=self._decode(part["segmentation"], h, w) if part else None,
                )
            )
        return tuple(out)
