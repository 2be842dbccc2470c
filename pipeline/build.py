"""`build`: every stage a dataset has, in order, then the manifest. Re-runs resume or no-op."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import from_section
from pipeline.executor import Executor
from pipeline.manifests import load_manifest
from pipeline.stage import StageContext, run_stage
from pipeline.stages import BUILD_ORDER, STAGES
from pipeline.store import finalize

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


def ensure_synthetic(data_root: Path, params: dict[str, Any]) -> None:
    """Generate the embedded synthetic dataset under `data_root` unless it is already there."""
    from pipeline.synthetic import SyntheticConfig, generate_synthetic

    cfg = from_section(SyntheticConfig, params.get("synthetic"), "synthetic")
    generate_synthetic(data_root, cfg)


def build(
    dataset: str,
    data_root: Path,
    out: Path,
    params: dict[str, Any],
    executor: Executor,
    stages: tuple[str, ...] | None = None,
    force: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the dataset's stages (or `stages`) into the store `out`; returns its manifest.

    Each stage reads only its own section of `params`; `options` carries command-line settings.
    """
    manifest = load_manifest(dataset)
    if dataset == SYNTHETIC:
        ensure_synthetic(data_root, params)
    order = stages or BUILD_ORDER[manifest.kind]
    ctx = StageContext(
        store=Path(out),
        dataset=dataset,
        data_root=Path(data_root),
        params=params,
        options=options or {},
    )
    ctx.store.mkdir(parents=True, exist_ok=True)
    timings = {}
    for name in order:
        start = time.perf_counter()
        run_stage(STAGES[name], ctx, executor, force=force)
        timings[name] = time.perf_counter() - start
    result = finalize(ctx.store, dataset, list(order))
    log.info("built %s: %s", ctx.store, ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return result
