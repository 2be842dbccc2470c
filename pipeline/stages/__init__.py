"""The stage registry: stage name → `StageSpec`, in pipeline order."""

from __future__ import annotations

from pipeline.stage import StageSpec
from pipeline.stages import attention, encode, ingest, masks, phrases, points, split

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        ingest.SPEC,
        phrases.SPEC,
        split.SPEC,
        encode.SPEC,
        attention.SPEC,
        masks.SPEC,
        points.SPEC,
    )
}

LABEL_STAGES = ("encode", "attention", "masks", "points")

# Stages `ppt-labels build` runs for each dataset kind, in order.
BUILD_ORDER: dict[str, tuple[str, ...]] = {
    "refer": ("ingest", "phrases", "split", *LABEL_STAGES),
    "imagenet": ("ingest", "phrases", "split", *LABEL_STAGES),
}
