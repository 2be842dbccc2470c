"""The dataset adapter contract: what every adapter offers, and the ground truth it may hold.

Adapters are read-only views of files on disk (`pipeline.data.registry` opens one by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.data.records import Reject, SourceRecord


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one referent, read only to evaluate and for the gt-* relevance oracles."""

    mask: np.ndarray  # (H, W) bool at the image's original size
    bbox: tuple[float, float, float, float]  # COCO xywh, pixels


@dataclass(frozen=True)
class GivenCandidate:
    """A candidate whose phrase, referent flag and pseudo-label the dataset already holds.

    Composites carry the transformed D_sem labels of their objects; the phrases, split and
    transfer stages take these instead of parsing the expression and prompting SAM.
    """

    phrase: str  # the object's class noun
    start_char: int  # span of the phrase in the expression; -1 where it is not mentioned
    end_char: int
    referent: int  # c: 1 for the object the expression denotes, else 0
    mask_rle: str  # COCO RLE counts at the sample image's (height, width)
    bbox: tuple[float, float, float, float]  # the mask's box, COCO xywh pixels
    points: tuple[dict[str, Any], ...]  # {"x", "y", "label"}, x / width and y / height
    sam_score: float  # of the source pseudo-label
    relevance_score: float  # of the source pseudo-label


class Dataset(Protocol):
    """What every dataset adapter offers to the pipeline."""

    name: str  # the spec name, e.g. "refcoco"
    root: Path  # --data-root

    def records(self, splits: list[str] | None = None) -> tuple[list[SourceRecord], list[Reject]]:
        """All (referent, sentence) records of the given splits (all when None), and the rejects."""
        ...

    def input_files(self) -> list[Path]:
        """The annotation files this dataset was read from (hashed into the store's spec)."""
        ...

    def ground_truth(self, record: SourceRecord) -> GroundTruth | None:
        """The referent's mask and box at original size, or None where the dataset has none."""
        ...


@dataclass(frozen=True)
class ObjectTruth:
    """One annotated object of an image with the words that describe it (synthetic world)."""

    ann_id: int
    shape: str  # its class word (the category name)
    colour: str  # its own colour word
    part_colour: str | None  # the colour of its inner part, if it has one
    mask: np.ndarray  # (H, W) bool, the visible area (its ground truth)
    part_mask: np.ndarray | None  # (H, W) bool, the part's visible pixels

    @property
    def colours(self) -> tuple[str, ...]:
        """Every colour word a pixel of the object shows."""
        return (self.colour,) if self.part_colour is None else (self.colour, self.part_colour)


def denotation_mask(
    objects: dict[int, ObjectTruth], ann_ids: Any, shape: tuple[int, int]
) -> np.ndarray:
    """(H, W) bool union of the masks of `ann_ids` (a phrase's denotation; empty: all False)."""
    union = np.zeros(shape, dtype=bool)
    for ann_id in ann_ids or ():
        union |= objects[ann_id].mask
    return union


@dataclass(frozen=True)
class PhraseTruth:
    """A noun phrase of a sentence and the objects it denotes (phrase ground truth)."""

    role: str  # "referent" (the subject's noun phrase) | "landmark" | "sentence" (the whole)
    phrase: str  # the text, sentence[start:end]
    start: int
    end: int
    head_start: int  # span of its head (shape) word: a parser's candidate matches it if it
    head_end: int  # contains this span
    ann_ids: tuple[int, ...]  # the annotations it denotes
