"""`ppt-labels report RUN_DIR --out report.html`: a training run as one self-contained page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import console, user_errors
from cli.options import with_model_options
from pipeline.models.options import ModelOptions


@with_model_options(exclude=("relevance",))
def report(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Run dir of `ppt-labels train --out`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")],
    ablation: Annotated[
        Path | None,
        typer.Option(
            "--ablation", help="bench/ablation.py's ablation.json (default RUN_DIR/ablation.json)."
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=0, help="Held-out samples in the gallery.")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seeds which samples the gallery shows.")] = 0,
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", "-l", help="The run's label stores, if moved (repeatable)."),
    ] = None,
    data_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--data-root",
            help="Their dataset roots, if moved or not recorded (one, or one per store).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="CLIP feature cache (default RUN_DIR/feature_cache)."),
    ] = None,
    *,
    models: ModelOptions,
) -> None:
    """Training curves, metrics, the ablation table (when there is one), Select rounds and a
    gallery of held-out samples (the model's points and mask beside the ground truth), as one
    HTML page with its images inline."""
    from pipeline.reports.run_files import read_run
    from pipeline.reports.run_report import render_report, write_report
    from trainer.inference.held_out import held_out_gallery

    run = read_run(run_dir, ablation)  # before the models load: a missing file fails fast
    items, facts = held_out_gallery(run_dir, models, n, labels, data_root, cache_dir, seed)
    write_report(render_report(run, items, facts), out)
    console.print(
        f"[green]report[/] of {run_dir} → {out} ({len(items)} held-out samples"
        + (", ablation table" if run.ablation is not None else "")
        + ")"
    )


def register(app: typer.Typer) -> None:
    """Add `report` to the ppt-labels app."""
    app.command("report")(user_errors(report))
