"""The records that dataset adapters hand to the ingest stage.

An adapter (refer format, ImageNet folders) reads its own files and yields one `SourceRecord`
per (referent, sentence) pair, plus a `Reject` for every record it had to skip. Ingest turns
records into sample rows (hashing and checking each image): adapters never touch the store.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceRecord:
    """One (referent, sentence) pair as a dataset adapter yields it."""

    sample_id: str  # unique within the dataset and stable across runs, e.g. "refcoco/49986/142163"
    image_id: str  # the dataset's own image id, as text (COCO ints, ImageNet wnids)
    image_path: str  # POSIX path relative to the dataset's --data-root
    split: str  # train | val | test | testA | testB | ...
    expression: str  # the referring sentence, NFKC-normalised and stripped
    source: str  # refcoco | imagenet | synthetic | mosaic | fusion
    ref_id: int = -1  # refer ref_id, -1 where the dataset has none
    ann_id: int = -1  # ground-truth annotation id (read only by evaluation), -1 where none
    category: str = ""  # ground-truth category name, for statistics only


@dataclass(frozen=True)
class Reject:
    """A record skipped by a stage, with the reason; written to the stage's rejects table."""

    stage: str  # the stage that rejected it
    file: str  # the file the bad record came from (relative to --data-root where possible)
    record: str  # the record's id in that file (sample_id, ref_id, image id...)
    reason: str  # one line saying what is wrong and what to do
