"""`ppt-labels build`, `stage` and `synthesize`: thin layers over `pipeline.stages.build`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import console, user_errors
from cli.options import (
    DEFAULT_DATASET,
    DEFAULT_SYNTHETIC_ROOT,
    DaskOpt,
    DataRootOpt,
    DatasetOpt,
    ForceOpt,
    MaxImagesOpt,
    ParamsOpt,
    SplitsOpt,
    WaitOpt,
    data_root_for,
    read_params,
    with_model_options,
)
from pipeline.models.options import ModelOptions


@with_model_options()
def build(
    dataset: DatasetOpt = DEFAULT_DATASET,
    data_root: DataRootOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Label store dir (default labels/NAME).")
    ] = None,
    params: ParamsOpt = None,
    splits: SplitsOpt = None,
    dask: DaskOpt = None,
    force: ForceOpt = False,
    max_images: MaxImagesOpt = None,
    wait: WaitOpt = False,
    *,
    models: ModelOptions,
) -> None:
    """Run every stage available for DATASET into a label store (resumes, repairs damaged
    shards; no-op when done)."""
    from pipeline.stages.build import build as run_build
    from pipeline.stages.executor import open_executor

    root = data_root_for(dataset, data_root)
    out = out or Path("labels") / dataset
    with open_executor(dask) as executor:
        manifest = run_build(
            dataset,
            root,
            out,
            read_params(params, splits),
            executor,
            force=force,
            models=models,
            max_images=max_images,
            wait=wait,
        )
    stats = manifest["stats"]
    console.print(
        f"[green]store[/] {out}: {stats['samples']} samples, {stats['images']} images, "
        f"{stats.get('candidates', 0)} candidates, {stats['rejects']} rejects"
    )


@with_model_options()
def stage(
    name: Annotated[str, typer.Argument(help="Stage: ingest, phrases, split, ... or finalize.")],
    dataset: DatasetOpt = DEFAULT_DATASET,
    data_root: DataRootOpt = None,
    store: Annotated[Path | None, typer.Option("--store", help="Label store dir.")] = None,
    params: ParamsOpt = None,
    splits: SplitsOpt = None,
    dask: DaskOpt = None,
    force: ForceOpt = False,
    max_images: MaxImagesOpt = None,
    wait: WaitOpt = False,
    *,
    models: ModelOptions,
) -> None:
    """Run one stage (what dvc.yaml calls); `finalize` writes the store's manifest.json."""
    from pipeline.stages.build import FINALIZE, run_named_stage
    from pipeline.stages.executor import open_executor

    store = store or Path("labels") / dataset
    root = data_root_for(dataset, data_root) if name != FINALIZE else Path()
    with open_executor(dask if name != FINALIZE else None) as executor:
        run_named_stage(
            name,
            dataset,
            root,
            store,
            read_params(params, splits),
            executor,
            force=force,
            models=models,
            max_images=max_images,
            wait=wait,
        )
    if name == FINALIZE:
        console.print(f"[green]finalised[/] {store}/manifest.json")


def synthesize(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset root to write.")] = (
        DEFAULT_SYNTHETIC_ROOT
    ),
    params: ParamsOpt = None,
) -> None:
    """Generate the embedded synthetic referring dataset (refer layout), params.yaml synthetic."""
    from pipeline.stages.build import ensure_synthetic

    ensure_synthetic(out, read_params(params))
    console.print(f"[green]synthetic dataset[/] in {out}")


def register(app: typer.Typer) -> None:
    """Add `build`, `stage` and `synthesize` to the ppt-labels app."""
    for command in (build, stage, synthesize):
        app.command(command.__name__)(user_errors(command))
