"""The stage registry: stage name → `StageSpec`, in pipeline order, and each dataset kind's build
order. The only module outside the runner that imports the stage modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from pipeline.data.specs import DatasetSpec
from pipeline.stages.spec import StageSpec

# Stage name → (module under pipeline.stages, attribute), in pipeline order.
_SPECS: dict[str, tuple[str, str]] = {
    "ingest": ("ingest", "SPEC"),
    "phrases": ("phrases", "SPEC"),
    "split": ("split", "SPEC"),
    "encode": ("encode", "SPEC"),
    "attention": ("attention", "SPEC"),
    "masks": ("masks", "SPEC"),
    "points": ("points", "SPEC"),
    "augment": ("augment", "SPEC"),
    "transfer_masks": ("transfer", "MASKS_SPEC"),
    "transfer_points": ("transfer", "POINTS_SPEC"),
}


class _Stages(Mapping[str, StageSpec]):
    """Stage name → spec, importing a stage's module on first use: a process that runs ingest,
    phrases or split never imports torch or open_clip (≈ 700 MB of resident memory before any
    work, in every `ppt-labels stage` process that dvc starts)."""

    def __getitem__(self, name: str) -> StageSpec:
        module, attr = _SPECS[name]
        spec = getattr(importlib.import_module(f"pipeline.stages.{module}"), attr)
        assert spec.name == name, (spec.name, name)
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter(_SPECS)

    def __len__(self) -> int:
        return len(_SPECS)


STAGES: Mapping[str, StageSpec] = _Stages()

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
