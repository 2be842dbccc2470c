"""The composite adapter: a D_sem store's augment table read as a dataset (D_ref).

--data-root is a built D_sem label store; the spec's `composites` names its augment table
directory. Each composite is one record: image_path as the augment stage wrote it (relative to the
store), the composite's expression, source "mosaic" or "fusion" (so the split stage puts it in
D_ref), category = the referent's class noun, ann_id = the composite's row number (a unique id for
evaluation). Its candidates are given, not parsed: `given_candidates` returns the E objects in
object order with their transferred pseudo-labels, which the phrases, split and transfer stages
write into the composite store in place of spaCy and SAM. `ground_truth` is the referent's
transferred mask, so `ppt-labels eval-labels` runs on the composite store (it scores the
transfer: the mask the store holds for the referent must be this one).

A composite's objects are known, since they were pasted: `objects` gives each with its class word
and its transferred mask, and `phrase_truth` the sentence (denoting the referent), the referent's
noun (every pasted object of its class) and a fusion's anchor noun, so the attention stage runs on
a composite store like on any dataset with ground truth. Its relevance is what the source says
about the composite image: `simulated` treats the pasted objects as any others (small ones respond
on a salient sub-blob), `clip` reads the composite's pixels. That is the paper's point of D_ref: the
labels come from D_sem, where CLIP's response is whole, while the image looks like a scene, where it
is not. (The transferred masks carry no part masks, so `simulated`'s part focus is a sub-blob.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.core.rle import decode_rle
from pipeline.data.dataset import GivenCandidate, GroundTruth, ObjectTruth, PhraseTruth
from pipeline.data.records import Reject, SourceRecord
from pipeline.data.specs import DatasetSpec, checked_root
from pipeline.store import schemas, shards

log = logging.getLogger(__name__)

SPLIT = "train"  # composites are training data only


class CompositeDataset:
    """The composites of a D_sem store's augment stage (see the module docstring) as a `Dataset`."""

    def __init__(self, spec: DatasetSpec, root: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.root = Path(root)
        try:
            checked_root(spec, root, "composite")
        except DatasetError as exc:
            raise DatasetError(
                f"{exc} (--data-root must be a D_sem label store whose augment stage has run: "
                f"`ppt-labels stage augment --store {self.root}`)"
            ) from None
        self._rows: list[dict[str, Any]] | None = None
        self._by_id: dict[str, dict[str, Any]] = {}

    def input_files(self) -> list[Path]:
        """The augment stage's `_stage.json` (its shards' sha256 and config)."""
        return [self.spec.path(self.root, f) for f in self.spec.files]

    def _table(self) -> list[dict[str, Any]]:
        """Every augment row in shard order (read once)."""
        if self._rows is None:
            path = self.input_files()[0]
            try:
                stage = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{path}: unreadable augment stage record ({exc})") from None
            if stage.get("stage") != "augment":
                raise DatasetError(f"{path}: not the augment stage's record")
            rows: list[dict[str, Any]] = []
            for shard in stage["shards"]:
                part = path.parent / shard["name"]
                rows.extend(shards.read_parquet(part, schemas.AUGMENT).to_pylist())
            self._rows = rows
            self._by_id = {self.sample_id(r): r for r in rows}
        return self._rows

    def sample_id(self, row: dict[str, Any]) -> str:
        """The store's sample_id of an augment row: "{dataset}/{composite_id}"."""
        return f"{self.name}/{row['composite_id']}"

    def _row(self, sample_id: str) -> dict[str, Any]:
        self._table()
        if sample_id not in self._by_id:
            raise DatasetError(
                f"{sample_id}: no such composite in {self.input_files()[0].parent}; the augment "
                "stage changed since this store's ingest: rebuild it"
            )
        return self._by_id[sample_id]

    def records(self, splits: list[str] | None = None) -> tuple[list[SourceRecord], list[Reject]]:
        """One record per composite (split "train"); no rejects (augment recorded its own)."""
        unknown = sorted(set(splits or ()) - set(self.spec.splits))
        if unknown:
            raise ConfigError(
                f"dataset {self.name!r} has no split(s) {', '.join(unknown)} (--splits); "
                f"available: {', '.join(self.spec.splits)}"
            )
        if splits is not None and SPLIT not in splits:
            return [], []
        records = []
        for ordinal, row in enumerate(self._table()):
            referent = row["objects"][row["referent"]]
            records.append(
                SourceRecord(
                    sample_id=self.sample_id(row),
                    image_id=row["composite_id"],
                    image_path=row["image_path"],
                    split=SPLIT,
                    expression=row["expression"],
                    source=row["kind"],
                    ann_id=ordinal,
                    category=referent["phrase"],
                )
            )
        log.info("%s: %d composites", self.name, len(records))
        return records, []

    def ground_truth(self, record: SourceRecord) -> GroundTruth | None:
        """The referent's transferred mask and box at the composite's size."""
        row = self._row(record.sample_id)
        referent = row["objects"][row["referent"]]
        mask = decode_rle(referent["mask_rle"], row["height"], row["width"])
        return GroundTruth(mask=mask, bbox=tuple(float(v) for v in referent["bbox"]))

    def given_candidates(self, sample_id: str) -> list[GivenCandidate]:
        """The composite's E objects in object order, each with its transferred pseudo-label.

        The phrase span is the subject's for the referent, the anchor's for a fusion's other
        object; a Mosaic's context objects are not mentioned (-1).
        """
        row = self._row(sample_id)
        expression = row["expression"]
        out = []
        for obj in row["objects"]:
            noun = obj["phrase"]
            if obj["referent"]:
                start = expression.find(noun)
            elif row["kind"] == "fusion":
                start = expression.rfind(noun)
            else:
                start = -1
            out.append(
                GivenCandidate(
                    phrase=noun,
                    start_char=start,
                    end_char=start + len(noun) if start >= 0 else -1,
                    referent=int(obj["referent"]),
                    mask_rle=obj["mask_rle"],
                    bbox=tuple(obj["bbox"]),
                    points=tuple(obj["points"]),
                    sam_score=obj["sam_score"],
                    relevance_score=obj["relevance_score"],
                )
            )
        return out

    @property
    def truth(self) -> bool:
        """A composite's objects and phrases are known (see the module docstring)."""
        return True

    def objects(self, image_id: str) -> tuple[ObjectTruth, ...]:
        """The composite's pasted objects (ann_id = object order) with their transferred masks."""
        row = self._row(f"{self.name}/{image_id}")
        h, w = row["height"], row["width"]
        return tuple(
            ObjectTruth(
                ann_id=i,
                shape=obj["phrase"],
                colour="",  # not recorded: a colour word is read from pixels (composites.colour)
                part_colour=None,
                mask=decode_rle(obj["mask_rle"], h, w),
                part_mask=None,
            )
            for i, obj in enumerate(row["objects"])
        )

    def phrase_truth(self, sample_id: str) -> list[PhraseTruth]:
        """The sentence, the referent's noun and a fusion's anchor noun, with their denotations."""
        row = self._row(sample_id)
        expression, objects = row["expression"], row["objects"]
        noun = objects[row["referent"]]["phrase"]
        out = [PhraseTruth("sentence", expression, 0, len(expression), 0, 0, (row["referent"],))]
        start = expression.find(noun)
        if start >= 0:
            same = tuple(i for i, o in enumerate(objects) if o["phrase"] == noun)
            out.append(PhraseTruth("referent", noun, start, start + len(noun), start,
                                   start + len(noun), same))  # fmt: skip
        if row["kind"] == "fusion":
            anchors = [(i, o) for i, o in enumerate(objects) if not o["referent"]]
            for i, obj in anchors[:1]:
                at = expression.rfind(obj["phrase"])
                if at > start >= 0 or (at >= 0 and start < 0):
                    end = at + len(obj["phrase"])
                    out.append(PhraseTruth("landmark", obj["phrase"], at, end, at, end, (i,)))
        return out
