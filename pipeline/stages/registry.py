"""The stage registry: stage name → `StageSpec`, in pipeline order, and each dataset kind's build
order. The only module outside the runner that imports the stage modules."""

from __future__ import annotations

from pipeline.data.specs import DatasetSpec
from pipeline.stages import (
    attention,
    augment,
    encode,
    ingest,
    masks,
    phrases,
    points,
    split,
    transfer,
)
from pipeline.stages.spec import StageSpec

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
        augment.SPEC,
        transfer.MASKS_SPEC,
        transfer.POINTS_SPEC,
    )
}

LABEL_STAGES = ("encode", "attention", "masks", "points")

# Stages `ppt-labels build` runs for each dataset kind, in order.
BUILD_ORDER: dict[str, tuple[str, ...]] = {
    "refer": ("ingest", "phrases", "split", *LABEL_STAGES),
    "imagenet": ("ingest", "phrases", "split", *LABEL_STAGES),
    # D_ref read from a D_sem store's augment table: labels transferred, never SAM-prompted.
    "composite": (
        "ingest",
        "phrases",
        "split",
        "encode",
        "attention",
        "transfer_masks",
        "transfer_points",
    ),
}


def build_order(spec: DatasetSpec) -> tuple[str, ...]:
    """The stages of a dataset: its kind's, then, for object-centric D_sem data (`augment` in
    its spec; every imagenet dataset), the D_ref composites made of it (written into the same
    store)."""
    return (*BUILD_ORDER[spec.kind], *(("augment",) if spec.augment else ()))
