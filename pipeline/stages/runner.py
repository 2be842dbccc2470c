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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.data.records import Reject
from pipeline.stages.executor import Executor
from pipeline.stages.spec import ShardTask, StageContext, StageSpec
from pipeline.store import schemas, shards
from pipeline.store.stage_record import (
    REJECTS_DIR,
    STAGE_RECORD,
    read_stage_record,
    record_of_shard,
    stage_dir,
    write_stage_record,
)
from pipeline.store.verify import HashCache, damaged_shards

log = logging.getLogger(__name__)


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
        done = _finished_shard(out, rejects_path, arrays_path, task.expected)
        if done is not None:
            return done
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


def _finished_shard(
    out: Path, rejects_path: Path, arrays_path: Path, expected: dict[str, Any] | None
) -> ShardResult | None:
    """The result of a shard already on disk, or None when its files differ from `expected`
    (damaged after it was written) or cannot be read."""
    try:
        done = ShardResult(
            name=out.name,
            rows=pq.read_metadata(out).num_rows,
            sha256=hashing.sha256_file(out),
            rejects=pq.read_metadata(rejects_path).num_rows,
            rejects_sha256=hashing.sha256_file(rejects_path),
            skipped=True,
            arrays_sha256=hashing.sha256_tree(arrays_path) if arrays_path.exists() else None,
        )
    except (OSError, pa.ArrowInvalid):
        return None
    if expected is not None and (
        done.sha256 != expected["sha256"]
        or done.rejects_sha256 != expected["rejects_sha256"]
        or done.arrays_sha256 != expected.get("arrays_sha256")
    ):
        log.warning("%s: its files differ from the stage record; recomputing it", out.name)
        return None
    return done


def _recorded_result(e: dict[str, Any]) -> ShardResult:
    """A verified shard's result, as its stage record lists it."""
    return ShardResult(e["name"], e["rows"], e["sha256"], e["rejects"], e["rejects_sha256"],
                       skipped=True, arrays_sha256=e.get("arrays_sha256"))  # fmt: skip


def _damaged(store: Path, out_dir: Path, record: dict[str, Any]) -> dict[str, str]:
    cache = HashCache(store)  # the shards of `record` whose files differ from it
    damaged = damaged_shards(out_dir, record, cache)
    cache.save()
    return damaged


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


def _previous_record(store: Path, stage: str) -> dict[str, Any] | None:
    """The stage's last record; an unreadable one counts as absent (its shards are then
    checked by their footers and the record is written again)."""
    try:
        return read_stage_record(store, stage)
    except StoreError as exc:
        log.warning("%s; rebuilding the record", exc)
        return None


def run_stage(
    spec: StageSpec,
    ctx: StageContext,
    executor: Executor,
    force: bool = False,
    expect_config_hash: str | None = None,
) -> dict[str, Any]:
    """Bring stage `spec` up to date in `ctx.store`; returns its stage manifest.

    A stage whose recorded fingerprint matches and whose shards still have their recorded
    sha256 is a no-op; otherwise only shards whose footer fingerprint or bytes differ are
    recomputed, and shards left over from an earlier plan are deleted. `expect_config_hash`
    (repair): refuse to run when the effective config hashes otherwise.
    """
    start = time.perf_counter()
    section = dict(ctx.params.get(spec.name) or {})
    if spec.apply_options is not None:
        section = spec.apply_options(section, ctx)
    config = spec.read_config(section)
    config_hash = hashing.fingerprint(spec.name, spec.version, schemas.SCHEMA_VERSION, config)
    if expect_config_hash is not None and config_hash != expect_config_hash:
        raise StoreError(
            f"{ctx.store}: stage {spec.name!r} no longer reads its recorded config the same way "
            "(other weights behind a recorded path, or another ppt-labels version), so it cannot "
            "be repaired in place: rebuild it with `ppt-labels build`"
        )
    upstream = _upstream(ctx.store, spec)
    out_dir = ctx.store / spec.table
    existing = _previous_record(ctx.store, spec.name)
    plan_key = spec.plan_key(ctx, config) if spec.plan_key is not None else None
    damaged: dict[str, str] | None = None  # of `existing`, once hashed
    if (
        plan_key is not None
        and existing is not None
        and not force
        and (existing.get("plan_key"), existing.get("config_hash")) == (plan_key, config_hash)
    ):
        damaged = _damaged(ctx.store, out_dir, existing)
        if not damaged:
            log.info("%s: up to date (inputs unchanged, not planned; verified)", spec.name)
            return existing
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

    verified: dict[str, ShardResult] = {}  # shards of an unchanged stage just found intact
    if existing is not None and existing.get("fingerprint") == stage_fp and not force:
        damaged = _damaged(ctx.store, out_dir, existing) if damaged is None else damaged
        outside = spec.check_outside(ctx, config) if spec.check_outside else []
        if not damaged and not outside:
            log.info("%s: up to date (%d shards, verified)", spec.name, len(existing["shards"]))
            return existing
        for problem in [*damaged.values(), *outside]:
            log.warning("%s: %s; recomputing %s", spec.name, problem, "all" if outside else "it")
        force = bool(outside)  # what the shards wrote outside the store: every shard again
        verified = {e["name"]: _recorded_result(e) for e in existing["shards"]
                    if e["name"] not in damaged and not force}  # fmt: skip
    previous = {s["name"]: s for s in existing["shards"]} if existing else {}

    # Any change makes the store incomplete until the manifest is written again.
    (ctx.store / "manifest.json").unlink(missing_ok=True)
    (out_dir / STAGE_RECORD).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for k in range(n_shards):
        name = shards.shard_name(k)
        if name in verified:  # hashed a moment ago: not read again
            continue
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
                expected=None if force else previous.get(name),
            )
        )
    computed = {r.name: r for r in executor.map(execute_shard, tasks, spec.name)}
    results = [verified.get(n) or computed[n] for n in map(shards.shard_name, range(n_shards))]
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
        **({"plan_key": plan_key} if plan_key is not None else {}),
    }
    write_stage_record(out_dir, manifest)
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
