"""The stage runner: plan shards, skip finished ones, run the rest on an executor, record it.

A stage is data (`StageSpec`): a name (its table directory is `schemas.STAGE_TABLES[name]`), the
upstream stages it reads, its table schema, and a pure `run_shard` function from one shard of
inputs to one table. A task carries its stage's `run_shard` itself (a module-level function,
picklable for Dask), so the runner never needs the registry of stages. Shard k of a stage reads
shard k of each upstream stage, so shards stay aligned (grouped by image) from ingest to the end.
Completion is recorded twice: each shard's footer holds the fingerprint of the work that made it,
and `<stage>/_stage.json`, written last, lists every shard with its row count and sha256. Downstream
stages read only `_stage.json`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.data.records import Reject
from pipeline.models.options import ModelOptions
from pipeline.stages.executor import Executor
from pipeline.store import schemas, shards
from pipeline.store.stage_record import (
    REJECTS_DIR,
    STAGE_RECORD,
    read_stage_record,
    record_of_shard,
    stage_dir,
)

log = logging.getLogger(__name__)


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
class ShardResult:
    """What a finished shard reports back to the runner."""

    name: str
    rows: int
    sha256: str
    rejects: int
    rejects_sha256: str
    skipped: bool
    arrays_sha256: str | None = None  # of the shard's Zarr group, where the stage writes arrays


@dataclass(frozen=True)
class StageSpec:
    """A stage as data. `plan` exists only for source stages (no upstream)."""

    name: str  # stage name: CLI subcommand argument and params.yaml section
    inputs: tuple[str, ...]  # upstream stage names
    schema: pa.Schema
    run_shard: Callable[[ShardTask], ShardOutput]
    plan: Callable[[StageContext, dict[str, Any]], list[tuple[Any, str]]] | None = None
    read_config: Callable[[dict[str, Any]], dict[str, Any]] = lambda section: dict(section)
    # Command-line settings (`StageContext.models`, `max_images`) that override params keys:
    # (section, context) → section. Applied before `read_config`, so the effective values are
    # validated, hashed into the stage's fingerprint and recorded in `_stage.json` like any
    # params value.
    apply_options: Callable[[dict[str, Any], StageContext], dict[str, Any]] | None = None
    # Provenance recorded in `_stage.json` and the store manifest (input hashes, model ids).
    provenance: Callable[[StageContext, dict[str, Any]], dict[str, Any]] | None = None
    version: int = 1  # bump when the stage's output for the same inputs changes

    @property
    def table(self) -> str:
        """The output directory in the store (the DVC output of this stage)."""
        return schemas.STAGE_TABLES[self.name]


def rejects_table(rejects: list[Reject]) -> pa.Table:
    """The rejects of one shard as an Arrow table."""
    columns = {name: [getattr(r, name) for r in rejects] for name in schemas.REJECTS.names}
    return pa.table(columns, schema=schemas.REJECTS)


def execute_shard(task: ShardTask) -> ShardResult:
    """Run one shard unless its output already carries this task's fingerprint."""
    out = Path(task.out_path)
    rejects_path = out.parent / REJECTS_DIR / out.name
    arrays_path = out.with_suffix(".zarr")
    if shards.read_fingerprint(out) == task.fingerprint and rejects_path.exists():
        return ShardResult(
            name=out.name,
            rows=pq.read_metadata(out).num_rows,
            sha256=hashing.sha256_file(out),
            rejects=pq.read_metadata(rejects_path).num_rows,
            rejects_sha256=hashing.sha256_file(rejects_path),
            skipped=True,
            arrays_sha256=hashing.sha256_tree(arrays_path) if arrays_path.exists() else None,
        )
    result = task.run_shard(task)
    # Rejects and arrays first, the data shard last: its fingerprint is the completion marker.
    rejects_sha = shards.write_parquet(
        rejects_table(result.rejects), rejects_path, schemas.REJECTS, task.fingerprint
    )
    arrays_sha = None
    if result.arrays:
        arrays_sha = shards.write_zarr(result.arrays, result.attrs, arrays_path)
    sha = shards.write_parquet(result.table, out, task.schema, task.fingerprint)
    return ShardResult(
        out.name,
        result.table.num_rows,
        sha,
        len(result.rejects),
        rejects_sha,
        skipped=False,
        arrays_sha256=arrays_sha,
    )


def upstream_config(task: ShardTask, stage: str) -> dict[str, Any]:
    """The config upstream stage `stage` ran with (its record), for one of `task`'s inputs."""
    return record_of_shard(task.inputs[stage])["config"]


def _upstream(store: Path, spec: StageSpec) -> list[dict[str, Any]]:
    manifests = []
    for name in spec.inputs:
        manifest = read_stage_record(store, name)
        if manifest is None:
            raise StoreError(
                f"stage {spec.name!r} reads stage {name!r}, which has not completed in {store}: "
                f"run `ppt-labels stage {name}` (or `ppt-labels build`) first"
            )
        manifests.append(manifest)
    return manifests


def run_stage(
    spec: StageSpec, ctx: StageContext, executor: Executor, force: bool = False
) -> dict[str, Any]:
    """Bring stage `spec` up to date in `ctx.store`; returns its stage manifest.

    A stage whose recorded fingerprint matches is a no-op; otherwise only shards whose footer
    fingerprint differs are recomputed, and shards left over from an earlier plan are deleted.
    """
    start = time.perf_counter()
    section = dict(ctx.params.get(spec.name) or {})
    if spec.apply_options is not None:
        section = spec.apply_options(section, ctx)
    config = spec.read_config(section)
    config_hash = hashing.fingerprint(spec.name, spec.version, schemas.SCHEMA_VERSION, config)
    upstream = _upstream(ctx.store, spec)
    out_dir = ctx.store / spec.table

    if spec.plan is not None:
        planned = spec.plan(ctx, config)  # [(payload, payload fingerprint)]
        n_shards = len(planned)
        per_shard_inputs: list[list[str]] = [[fp] for _, fp in planned]
        payloads = [payload for payload, _ in planned]
    else:
        counts = {len(m["shards"]) for m in upstream}
        if len(counts) != 1:
            raise StoreError(f"stage {spec.name!r}: upstream stages disagree on the shard count")
        n_shards = counts.pop()
        per_shard_inputs = [[m["shards"][k]["sha256"] for m in upstream] for k in range(n_shards)]
        payloads = [None] * n_shards
    stage_fp = hashing.fingerprint(config_hash, per_shard_inputs)

    existing = read_stage_record(ctx.store, spec.name)
    up_to_date = existing is not None and existing.get("fingerprint") == stage_fp
    if up_to_date and not force and all((out_dir / s["name"]).exists() for s in existing["shards"]):
        log.info("%s: up to date (%d shards)", spec.name, len(existing["shards"]))
        return existing

    # Any change makes the store incomplete until the manifest is written again.
    (ctx.store / "manifest.json").unlink(missing_ok=True)
    (out_dir / STAGE_RECORD).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for k in range(n_shards):
        name = shards.shard_name(k)
        if force:
            (out_dir / name).unlink(missing_ok=True)
        tasks.append(
            ShardTask(
                stage=spec.name,
                index=k,
                fingerprint=hashing.fingerprint(config_hash, per_shard_inputs[k]),
                out_path=str((out_dir / name).resolve()),
                config=config,
                inputs={
                    up: str((stage_dir(ctx.store, up) / shards.shard_name(k)).resolve())
                    for up in spec.inputs
                },
                context=ctx,
                run_shard=spec.run_shard,
                schema=spec.schema,
                payload=payloads[k],
            )
        )
    results = executor.map(execute_shard, tasks, spec.name)
    keep = {r.name for r in results}
    shards.remove_stale(out_dir, keep)
    shards.remove_stale(out_dir / REJECTS_DIR, keep)

    manifest = {
        "stage": spec.name,
        "table": spec.table,
        "stage_version": spec.version,
        "schema_version": schemas.SCHEMA_VERSION,
        "config": config,
        "config_hash": config_hash,
        "fingerprint": stage_fp,
        "inputs": list(spec.inputs),
        "shards": [
            {
                "name": r.name,
                "rows": r.rows,
                "sha256": r.sha256,
                "rejects": r.rejects,
                "rejects_sha256": r.rejects_sha256,
                **({"arrays_sha256": r.arrays_sha256} if r.arrays_sha256 else {}),
            }
            for r in results
        ],
        "rows": sum(r.rows for r in results),
        "rejects": sum(r.rejects for r in results),
        "provenance": spec.provenance(ctx, config) if spec.provenance else {},
    }
    shards.write_json(manifest, out_dir / STAGE_RECORD)
    done = sum(not r.skipped for r in results)
    log.info(
        "%s: %d shards (%d computed, %d resumed), %d rows, %d rejects in %.2fs",
        spec.name,
        n_shards,
        done,
        n_shards - done,
        manifest["rows"],
        manifest["rejects"],
        time.perf_counter() - start,
    )
    return manifest
