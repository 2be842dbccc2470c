"""The stage contract: what a stage is (`StageSpec`), what it may know (`StageContext`), and one
unit of its work (`ShardTask` in, `ShardOutput` out). The runner (`pipeline.stages.runner`) plans,
skips, runs and records; stage modules only fill these in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data.records import Reject
from pipeline.models.options import ModelOptions
from pipeline.store import schemas


@dataclass(frozen=True)
class StageContext:
    """What a stage may know about the build: where things are and its own params section."""

    store: Path  # label store root (labels/<dataset>)
    dataset: str  # dataset manifest name
    data_root: Path  # --data-root of the dataset
    params: dict[str, Any] = field(default_factory=dict)  # the whole params.yaml
    models: ModelOptions = field(default_factory=ModelOptions)  # the command's model flags
    max_images: int | None = None  # --max-images (ingest.max_images)


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: everything `run_shard` needs, picklable for Dask workers."""

    stage: str
    index: int
    fingerprint: str
    out_path: str  # absolute path of the shard to write
    config: dict[str, Any]  # the stage's params section, validated
    inputs: dict[str, str]  # upstream stage name → absolute path of its shard k
    context: StageContext
    run_shard: Callable[[ShardTask], ShardOutput]  # the stage's shard function
    schema: pa.Schema  # the stage's table schema
    payload: Any = None  # stage-specific planned input (ingest: the shard's records)
    # The previous record's entry for this shard (hashes), if any: a shard whose footer carries
    # this task's fingerprint is skipped only when its files still have these hashes.
    expected: dict[str, Any] | None = None


@dataclass(frozen=True)
class ShardOutput:
    """What `run_shard` returns: the shard's table, its rejects, and any arrays for Zarr.

    Arrays go to `<table>/part-NNNNN.zarr` (one Zarr group per shard, written to a temporary
    directory and renamed); row i of an array belongs to the row the table's `array_row` names.
    """

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)  # JSON-able Zarr group attributes


@dataclass(frozen=True)
class StageSpec:
    """A stage as data. `plan` exists only for source stages (no upstream)."""

    name: str  # stage name: CLI subcommand argument and params.yaml section
    inputs: tuple[str, ...]  # upstream stage names
    schema: pa.Schema
    run_shard: Callable[[ShardTask], ShardOutput]
    plan: Callable[[StageContext, dict[str, Any]], list[tuple[Any, str]]] | None = None
    # Source stages: a cheap digest of everything `plan` reads (input files by stat-cached
    # hash, the image tree's names, sizes and mtimes). A re-run whose key and config match the
    # stage record skips planning (parsing a RefCOCO-size dataset) and only verifies shards.
    plan_key: Callable[[StageContext, dict[str, Any]], str] | None = None
    read_config: Callable[[dict[str, Any]], dict[str, Any]] = lambda section: dict(section)
    # Command-line settings (`StageContext.models`, `max_images`) that override params keys:
    # (section, context) → section. Applied before `read_config`, so the effective values are
    # validated, hashed into the stage's fingerprint and recorded in `_stage.json` like any
    # params value.
    apply_options: Callable[[dict[str, Any], StageContext], dict[str, Any]] | None = None
    # Provenance recorded in `_stage.json` and the store manifest (input hashes, model ids).
    provenance: Callable[[StageContext, dict[str, Any]], dict[str, Any]] | None = None
    version: int = 1  # bump when the stage's output for the same inputs changes
    # Keys `read_config` adds to the section (not params keys): dropped when a store's recorded
    # config is read back as params (`ppt-labels labels validate --repair`).
    derived_keys: tuple[str, ...] = ()
    # Problems with what the stage's shards wrote outside the store (encode: the embedding
    # cache), checked when the stage is otherwise up to date; any problem re-runs every shard.
    check_outside: Callable[[StageContext, dict[str, Any]], list[str]] | None = None

    @property
    def table(self) -> str:
        """The output directory in the store (the DVC output of this stage)."""
        return schemas.STAGE_TABLES[self.name]
