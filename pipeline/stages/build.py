"""`build` and `stage`: a dataset's stages in order, then the manifest. Re-runs resume or no-op.

The library functions behind `ppt-labels build` and `ppt-labels stage` (what dvc.yaml calls).
Each stage reads only its own section of `params`; `models` and `max_images` carry the command
line's settings, which override params keys and are hashed into the stages' fingerprints.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.core.config import from_section
from pipeline.core.errors import ConfigError
from pipeline.data.specs import load_spec
from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic
from pipeline.models.options import ModelOptions
from pipeline.stages.executor import Executor
from pipeline.stages.registry import STAGES, build_order
from pipeline.stages.runner import StageContext, run_stage
from pipeline.store.finalize import finalize

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
) -> dict[str, Any]:
    """Run the dataset's stages (or `stages`) into the store `out`; returns its manifest."""
    spec = load_spec(dataset)
    if dataset in SYNTHETIC:
        ensure_synthetic(data_root, params)
    order = stages or build_order(spec)
    ctx = _context(dataset, data_root, out, params, models, max_images)
    timings = {}
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
) -> dict[str, Any]:
    """Run one stage by name (or `finalize`); returns its stage record (or the manifest)."""
    if name == FINALIZE:
        return finalize(Path(store), dataset, list(build_order(load_spec(dataset))))
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}, {FINALIZE}")
    ctx = _context(dataset, data_root, store, params, models, max_images)
    return run_stage(STAGES[name], ctx, executor, force=force)
