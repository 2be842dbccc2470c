"""Looking at label stores: `show`, `stats`, `eval-labels` and `labels validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.app import console, err_console, user_errors
from cli.options import DaskOpt, WaitOpt, data_root_for, with_model_options
from pipeline.models.options import ModelOptions

LabelsOpt = Annotated[Path, typer.Option("--labels", "-l", help="Label store dir.")]


@with_model_options(exclude=("relevance",))
def show(
    labels: LabelsOpt,
    data_root: Annotated[Path, typer.Option("--data-root", help="Dataset root (images).")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="PNG to write; without .png: a folder of one PNG each."),
    ] = Path("show.png"),
    n: Annotated[int, typer.Option("--n", help="Samples to draw.")] = 8,
    sample_id: Annotated[
        list[str] | None, typer.Option("--sample-id", help="Draw these samples (repeatable).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Only this split.")] = None,
    subset: Annotated[str | None, typer.Option(help="Only this subset (H_sem, H_ref...).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random choice of samples.")] = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", "-c", help="Also draw this model's points and mask."),
    ] = None,
    *,
    models: ModelOptions,
) -> None:
    """Render samples (image, expression, phrases, masks, points, heat maps) to a PNG or folder.

    Composites (D_ref) show every object's mask outline with the referent highlighted. With
    --checkpoint, the model's mask (dashed white) and points (stars: yellow positive, magenta
    negative) are drawn on top.
    """
    from pipeline.reports.show import (
        choose_samples,
        image_from_root,
        relevance_heatmaps,
        render,
        render_each,
    )
    from pipeline.store.reader import LabelStore
    from pipeline.store.validate import verify_store

    verify_store(labels)
    store = LabelStore(labels)
    chosen = choose_samples(store, n, sample_id, split, subset, seed)
    predictions = None
    if checkpoint is not None:
        predictions = _predictions(checkpoint, store, data_root, chosen, models)
    draw = render if out.suffix.lower() == ".png" else render_each
    draw(
        store,
        chosen,
        image_from_root(data_root),
        out,
        relevance_heatmaps(store),
        predictions=predictions,
    )
    console.print(f"[green]wrote[/] {out} ({len(chosen)} samples)")


def _predictions(
    checkpoint: Path, store: Any, data_root: Path, chosen: list[dict], models: ModelOptions
) -> dict[str, Any]:
    """The checkpoint's `Predicted` for the chosen samples (CLIP features in a temp cache)."""
    import tempfile

    from pipeline.models.runtime import resolve_device
    from trainer.inference.predict import load_for_inference, predict_store_points

    device = str(resolve_device(models.device))
    model, clip, sam, cfg = load_for_inference(checkpoint, models, device)
    with tempfile.TemporaryDirectory() as cache:
        ids = [s["sample_id"] for s in chosen]
        return predict_store_points(
            model, clip, sam, cfg, store, data_root, Path(cache), device, sample_ids=ids
        )


def stats(
    labels: LabelsOpt,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the card as JSON here.")
    ] = None,
) -> None:
    """Print a dataset card: sizes, splits, subsets, candidates per sample, text, rejects."""
    from rich.table import Table

    from pipeline.reports.card import dataset_card

    card = dataset_card(labels)
    table = Table(title=f"dataset card: {labels}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in card.items():
        if isinstance(value, list):
            value = ", ".join(f"{k} ({v})" for k, v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(card, indent=2) + "\n")


def eval_labels(
    labels: LabelsOpt,
    data_root: Annotated[Path, typer.Option("--data-root", help="Dataset root (ground truth).")],
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the metrics as JSON here.")
    ] = None,
) -> None:
    """Score pseudo-labels against ground truth: H_sem referents and the best candidate."""
    from rich.table import Table

    from pipeline.core.config import jsonable
    from pipeline.scoring.label_eval import evaluate_labels
    from pipeline.scoring.metrics import SUMMARY_KEYS

    metrics = evaluate_labels(labels, data_root)
    table = Table(title=f"pseudo-labels: {labels}")
    table.add_column("labels")
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    rates = {}
    for row, values in metrics.items():
        if set(SUMMARY_KEYS) <= set(values):
            cells = [f"{values[k]:.2f}" if k != "n" else str(values[k]) for k in SUMMARY_KEYS]
            table.add_row(row, *cells)
        else:
            rates[row] = values
    console.print(table)
    for row, values in rates.items():
        console.print(f"{row}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(jsonable(metrics), indent=2, sort_keys=True) + "\n")


def validate(
    store: Annotated[Path, typer.Argument(help="Label store dir.")],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Recompute what is damaged or missing, with the store's own configs."
        ),
    ] = False,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="The dataset's root (with --repair; default: synthetic)."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="With --repair, when the store's manifest is unreadable."),
    ] = None,
    dask: DaskOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Check a store: manifest, schema version, stage records, every shard present with its
    sha256 and rows, Select rounds; --repair then rebuilds only what is damaged."""
    from pipeline.store.validate import validate as validate_store

    problems = validate_store(store)
    for problem in problems:
        err_console.print(f"[red]✗[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if problems and repair:
        _repair(store, data_root, dataset, dask, wait)
        problems = validate_store(store)
        for problem in problems:
            err_console.print(
                f"[red]✗[/] still: {escape(problem)}", highlight=False, soft_wrap=True
            )
    if problems:
        err_console.print(f"[bold red]{escape(str(store))}: {len(problems)} problem(s)[/]")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {store} is valid")


def _repair(
    store: Path, data_root: Path | None, dataset: str | None, dask: str | None, wait: bool
) -> None:
    from pipeline.stages.build import recorded_params, repair
    from pipeline.stages.executor import open_executor

    name = recorded_params(store, dataset)[0]
    with open_executor(dask) as executor:
        repair(store, data_root_for(name, data_root), executor, dataset=name, wait=wait)
    console.print(f"[green]repaired[/] {store}")


def register(app: typer.Typer, labels_app: typer.Typer) -> None:
    """Add `show`, `stats`, `eval-labels` and `labels validate`."""
    app.command("show")(user_errors(show))
    app.command("stats")(user_errors(stats))
    app.command("eval-labels")(user_errors(eval_labels))
    labels_app.command("validate")(user_errors(validate))
