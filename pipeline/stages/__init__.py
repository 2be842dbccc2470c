"""The stage registry: stage name → `StageSpec`, in pipeline order."""

from __future__ import annotations

from pipeline.stage import StageSpec
from pipeline.stages import ingest, phrases, split

STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (ingest.SPEC, phrases.SPEC, split.SPEC)}

# Stages `ppt-labels build` runs for each dataset kind, in order.
BUILD_ORDER: dict[str, tuple[str, ...]] = {
    "refer": ("ingest", "phrases", "split"),
    "imagenet": ("ingest", "phrases", "split"),
}
