"""`build`, `stage` and `repair`: a dataset's stages in order, then the manifest.

The library functions behind `ppt-labels build`, `ppt-labels stage` (what dvc.yaml calls) and
`ppt-labels labels validate --repair`. Each stage reads only its own section of `params`;
`models` and `max_images` carry the command line's settings, which override params keys and are
hashed into the stages' fingerprints. Every one of them holds the store's write lock
(`pipeline.store.lock`); re-runs verify what they skip, so they resume, repair or no-op.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.core.config import from_section
from pipeline.core.errors import ConfigError, StoreError
from pipeline.data.specs import load_spec
from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic
from pipeline.models.options import ModelOptions
from pipeline.stages.executor import Executor
from pipeline.stages.registry import STAGES, build_order
from pipeline.stages.runner import run_stage
from pipeline.stages.spec import StageContext
from pipeline.store.finalize import finalize, written_manifest
from pipeline.store.lock import store_lock
from pipeline.store.reader import MANIFEST
from pipeline.store.rounds import damaged_rounds
from pipeline.store.stage_record import read_stage_record

log = logging.getLogger(__name__)

SYNTHETIC = ("synthetic", "synthetic-objects")  # datasets of the generated world
FINALIZE = "finalize"  # `ppt-labels stage finalize`: write the store's manifest.json


def ensure_synthetic(data_root: Path, params: dict[str, Any]) -> None:
    """Generate the embedded synthetic dataset under `data_root` unless it is already there."""
    cfg = from_section(SyntheticConfig, params.get("synthetic"), "synthetic")
    generate_synthetic(data_root, cfg)


def _context(
    dataset: str,
    data_root: Path,
    store: Path,
    params: dict[str, Any],
    models: ModelOptions | None,
    max_images: int | None,
) -> StageContext:
    ctx = StageContext(
        store=Path(store),
        dataset=dataset,
        data_root=Path(data_root),
        params=params,
        models=models or ModelOptions(),
        max_images=max_images,
    )
    ctx.store.mkdir(parents=True, exist_ok=True)
    return ctx


def build(
    dataset: str,
    data_root: Path,
    out: Path,
    params: dict[str, Any],
    executor: Executor,
    stages: tuple[str, ...] | None = None,
    force: bool = False,
    models: ModelOptions | None = None,
    max_images: int | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Run the dataset's stages (or `stages`) into the store `out`; returns its manifest.

    Holds `out`'s lock throughout (`wait`: queue behind another writer instead of failing)."""
    spec = load_spec(dataset)
    if dataset in SYNTHETIC:
        ensure_synthetic(data_root, params)
    order = stages or build_order(spec)
    ctx = _context(dataset, data_root, out, params, models, max_images)
    timings = {}
    with store_lock(ctx.store, wait=wait):
        for name in order:
            start = time.perf_counter()
            run_stage(STAGES[name], ctx, executor, force=force)
            timings[name] = time.perf_counter() - start
        result = finalize(ctx.store, dataset, list(order))
    log.info("built %s: %s", ctx.store, ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return result


def run_named_stage(
    name: str,
    dataset: str,
    data_root: Path,
    store: Path,
    params: dict[str, Any],
    executor: Executor,
    force: bool = False,
    models: ModelOptions | None = None,
    max_images: int | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Run one stage by name (or `finalize`) under the store's lock; returns its stage record
    (or the manifest)."""
    if name == FINALIZE:
        with store_lock(store, wait=wait):
            return finalize(Path(store), dataset, list(build_order(load_spec(dataset))))
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}, {FINALIZE}")
    ctx = _context(dataset, data_root, store, params, models, max_images)
    with store_lock(ctx.store, wait=wait):
        return run_stage(STAGES[name], ctx, executor, force=force)


def _recorded_dataset(store: Path) -> str | None:
    """The dataset a stage record names in its provenance (ingest's), when the manifest cannot."""
    for name in STAGES:
        try:
            record = read_stage_record(store, name)
        except StoreError:
            continue
        dataset = (record or {}).get("provenance", {}).get("dataset")
        if isinstance(dataset, str):
            return dataset
    return None


def recorded_params(store: Path, dataset: str | None) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(dataset, params, config hashes) a store was built with, from its stage records or,
    where one is damaged, its manifest: what `repair` re-runs the stages with."""
    manifest = written_manifest(Path(store) / MANIFEST)
    sections: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    if isinstance(manifest, dict):
        dataset = dataset or manifest.get("dataset")
        for stage in manifest.get("stages", []):
            if isinstance(stage, dict) and stage.get("stage") in STAGES:
                sections[stage["stage"]] = stage.get("config")
                hashes[stage["stage"]] = stage.get("config_hash")
    dataset = dataset or _recorded_dataset(Path(store))
    if not dataset:
        raise StoreError(
            f"{store}: {MANIFEST} is unreadable, so the store's dataset is unknown: "
            "pass --dataset (or rebuild with `ppt-labels build`)"
        )
    for name in build_order(load_spec(dataset)):
        try:
            record = read_stage_record(store, name)
        except StoreError:
            record = None  # damaged: its config comes from the manifest
        if record is not None:
            sections[name], hashes[name] = record["config"], record["config_hash"]
        if not isinstance(sections.get(name), dict):
            raise StoreError(
                f"{store}: neither {MANIFEST} nor stage {name!r}'s record says how it was built; "
                "rebuild the store with `ppt-labels build` and its original flags"
            )
        derived = STAGES[name].derived_keys
        sections[name] = {k: v for k, v in sections[name].items() if k not in derived}
    return dataset, sections, hashes


def repair(
    store: Path,
    data_root: Path,
    executor: Executor,
    dataset: str | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Re-run a store's stages with the configs it was built with: only damaged or missing
    shards are recomputed; returns the manifest. A stage whose config no longer reads the same
    (e.g. other weights behind the recorded checkpoint path) is refused, never rebuilt silently."""
    dataset, sections, hashes = recorded_params(store, dataset)
    ctx = _context(dataset, data_root, store, sections, None, None)
    order = build_order(load_spec(dataset))
    with store_lock(ctx.store, wait=wait):
        for name in order:
            run_stage(STAGES[name], ctx, executor, expect_config_hash=hashes.get(name))
        for path, problem in damaged_rounds(ctx.store).items():
            log.warning("%s/%s: removed; training writes that round again", path, problem)
            shutil.rmtree(path)
        return finalize(ctx.store, dataset, list(order))
