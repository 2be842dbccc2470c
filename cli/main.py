"""`ppt-labels`: a thin Typer layer over the pipeline and trainer libraries."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from pipeline.errors import PptError

app = typer.Typer(
    name="ppt-labels",
    help="Pseudo-labels and curriculum point prompting for weakly supervised referring "
    "image segmentation (PPT, CVPR 2024).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
labels_app = typer.Typer(help="Inspect and check label stores.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_DATASET = "synthetic"
DEFAULT_SYNTHETIC_ROOT = Path("data/synthetic")

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset manifest name (data_manifests/NAME.yaml).")
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option("--data-root", help="Dataset root. Default for synthetic: data/synthetic."),
]
ParamsOpt = Annotated[
    Path | None, typer.Option("--params", help="params.yaml (default: the repository's).")
]
DaskOpt = Annotated[
    str | None,
    typer.Option("--dask", help="Run shards on Dask: local:N (LocalCluster) or tcp://host:port."),
]
SplitsOpt = Annotated[
    str | None, typer.Option("--splits", help="Comma-separated splits (default: all).")
]
SamOpt = Annotated[
    str | None,
    typer.Option("--sam", help="SAM variant: vit_b, vit_l, vit_h, vit_t (default: params encode)."),
]
SamCheckpointOpt = Annotated[
    Path | None, typer.Option("--sam-checkpoint", help="SAM state dict (default: params encode).")
]
ClipModelOpt = Annotated[
    str | None,
    typer.Option("--clip-model", help="open_clip architecture, e.g. ViT-B-16 (--relevance clip)."),
]
ClipPretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--clip-pretrained",
        help="open_clip pretrained tag (e.g. openai); downloads, so only where online.",
    ),
]
ClipCheckpointOpt = Annotated[
    Path | None, typer.Option("--clip-checkpoint", help="open_clip state dict (--relevance clip).")
]
RandomWeightsOpt = Annotated[
    bool,
    typer.Option(
        "--allow-random-weights",
        help="Randomly initialised models where no checkpoint is given (tests, demos; stamped "
        "random-init in the manifest).",
    ),
]
RelevanceOpt = Annotated[
    str | None,
    typer.Option(
        "--relevance",
        help="Relevance maps: clip, gt-box, gt-mask or centre (object-centric prior; default: "
        "params attention).",
    ),
]
MaxImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-images",
        min=1,
        help="Ingest a seeded subset of this many images (default: params ingest.max_images).",
    ),
]

RELEVANCE_SOURCES = ("clip", "gt-box", "gt-mask", "centre")  # pipeline.relevance.SOURCES


def _options(
    sam: str | None,
    sam_checkpoint: Path | None,
    clip_model: str | None,
    clip_checkpoint: Path | None,
    allow_random_weights: bool,
    relevance: str | None,
    clip_pretrained: str | None = None,
    max_images: int | None = None,
) -> dict[str, object]:
    """Command-line model settings for `StageContext.options`; None = use params.yaml."""
    if relevance is not None and relevance not in RELEVANCE_SOURCES:
        raise typer.BadParameter(
            f"--relevance {relevance!r}: choose one of {', '.join(RELEVANCE_SOURCES)}"
        )
    return {
        "sam": sam,
        "sam_checkpoint": str(sam_checkpoint) if sam_checkpoint else None,
        "clip_model": clip_model,
        "clip_checkpoint": str(clip_checkpoint) if clip_checkpoint else None,
        "clip_pretrained": clip_pretrained,
        "allow_random_weights": True if allow_random_weights else None,
        "relevance": relevance,
        "max_images": max_images,
    }


def _setup_logging(verbose: bool) -> None:
    # Rich on a terminal; plain unwrapped lines when logs go to a file or a pipe (DVC, CI).
    if err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=fmt, handlers=[handler], force=True
    )
    for noisy in ("distributed", "asyncio", "PIL", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging for every subcommand."""
    _setup_logging(verbose)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report `PptError`s as one red line and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PptError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _data_root(dataset: str, data_root: Path | None) -> Path:
    if data_root is not None:
        return data_root
    if dataset == DEFAULT_DATASET:
        return DEFAULT_SYNTHETIC_ROOT
    raise typer.BadParameter(f"--data-root is required for dataset {dataset!r}")


def _params(params: Path | None, splits: str | None) -> dict[str, Any]:
    from pipeline.config import load_params

    loaded = load_params(params)
    if splits:
        loaded = {**loaded, "ingest": {**(loaded.get("ingest") or {}), "splits": splits.split(",")}}
    return loaded


@app.command()
@user_errors
def build(
    dataset: DatasetOpt = DEFAULT_DATASET,
    data_root: DataRootOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Label store dir (default labels/NAME).")
    ] = None,
    params: ParamsOpt = None,
    splits: SplitsOpt = None,
    dask: DaskOpt = None,
    force: Annotated[bool, typer.Option(help="Recompute every shard.")] = False,
    sam: SamOpt = None,
    sam_checkpoint: SamCheckpointOpt = None,
    clip_model: ClipModelOpt = None,
    clip_checkpoint: ClipCheckpointOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
    allow_random_weights: RandomWeightsOpt = False,
    relevance: RelevanceOpt = None,
    max_images: MaxImagesOpt = None,
) -> None:
    """Run every stage available for DATASET into a label store (resumes; no-op when done)."""
    from pipeline.build import build as run_build
    from pipeline.executor import open_executor

    root = _data_root(dataset, data_root)
    out = out or Path("labels") / dataset
    options = _options(
        sam,
        sam_checkpoint,
        clip_model,
        clip_checkpoint,
        allow_random_weights,
        relevance,
        clip_pretrained,
        max_images,
    )
    with open_executor(dask) as executor:
        manifest = run_build(
            dataset, root, out, _params(params, splits), executor, force=force, options=options
        )
    stats = manifest["stats"]
    console.print(
        f"[green]store[/] {out}: {stats['samples']} samples, {stats['images']} images, "
        f"{stats.get('candidates', 0)} candidates, {stats['rejects']} rejects"
    )


@app.command()
@user_errors
def stage(
    name: Annotated[str, typer.Argument(help="Stage: ingest, phrases, split, ... or finalize.")],
    dataset: DatasetOpt = DEFAULT_DATASET,
    data_root: DataRootOpt = None,
    store: Annotated[Path | None, typer.Option("--store", help="Label store dir.")] = None,
    params: ParamsOpt = None,
    splits: SplitsOpt = None,
    dask: DaskOpt = None,
    force: Annotated[bool, typer.Option(help="Recompute every shard.")] = False,
    sam: SamOpt = None,
    sam_checkpoint: SamCheckpointOpt = None,
    clip_model: ClipModelOpt = None,
    clip_checkpoint: ClipCheckpointOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
    allow_random_weights: RandomWeightsOpt = False,
    relevance: RelevanceOpt = None,
    max_images: MaxImagesOpt = None,
) -> None:
    """Run one stage (what dvc.yaml calls); `finalize` writes the store's manifest.json."""
    from pipeline.executor import open_executor
    from pipeline.manifests import load_manifest
    from pipeline.stage import StageContext, run_stage
    from pipeline.stages import BUILD_ORDER, STAGES
    from pipeline.store import finalize

    store = store or Path("labels") / dataset
    if name == "finalize":
        finalize(store, dataset, list(BUILD_ORDER[load_manifest(dataset).kind]))
        console.print(f"[green]finalised[/] {store}/manifest.json")
        return
    if name not in STAGES:
        raise typer.BadParameter(f"unknown stage {name!r}; stages: {', '.join(STAGES)}, finalize")
    ctx = StageContext(
        store=store,
        dataset=dataset,
        data_root=_data_root(dataset, data_root),
        params=_params(params, splits),
        options=_options(
            sam,
            sam_checkpoint,
            clip_model,
            clip_checkpoint,
            allow_random_weights,
            relevance,
            clip_pretrained,
            max_images,
        ),
    )
    store.mkdir(parents=True, exist_ok=True)
    with open_executor(dask) as executor:
        run_stage(STAGES[name], ctx, executor, force=force)


@app.command()
@user_errors
def synthesize(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset root to write.")] = (
        DEFAULT_SYNTHETIC_ROOT
    ),
    params: ParamsOpt = None,
) -> None:
    """Generate the embedded synthetic referring dataset (refer layout), params.yaml synthetic."""
    from pipeline.build import ensure_synthetic

    ensure_synthetic(out, _params(params, None))
    console.print(f"[green]synthetic dataset[/] in {out}")


@app.command()
@user_errors
def show(
    labels: Annotated[Path, typer.Option("--labels", "-l", help="Label store dir.")],
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
) -> None:
    """Render samples (image, expression, phrases, masks, points, heat maps) to a PNG or folder.

    Composites (D_ref) show every object's mask outline with the referent highlighted.
    """
    from pipeline.render import (
        choose_samples,
        image_from_root,
        relevance_heatmaps,
        render,
        render_each,
    )
    from pipeline.store import LabelStore

    store = LabelStore(labels)
    chosen = choose_samples(store, n, sample_id, split, subset, seed)
    draw = render if out.suffix.lower() == ".png" else render_each
    draw(store, chosen, image_from_root(data_root), out, relevance_heatmaps(store))
    console.print(f"[green]wrote[/] {out} ({len(chosen)} samples)")


@app.command()
@user_errors
def stats(
    labels: Annotated[Path, typer.Option("--labels", "-l", help="Label store dir.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the card as JSON here.")
    ] = None,
) -> None:
    """Print a dataset card: sizes, splits, subsets, candidates per sample, text, rejects."""
    import json

    from rich.table import Table

    from pipeline.card import dataset_card

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


@app.command("eval-labels")
@user_errors
def eval_labels(
    labels: Annotated[Path, typer.Option("--labels", "-l", help="Label store dir.")],
    data_root: Annotated[Path, typer.Option("--data-root", help="Dataset root (ground truth).")],
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the metrics as JSON here.")
    ] = None,
) -> None:
    """Score pseudo-labels against ground truth: H_sem referents and the best candidate."""
    import json

    from rich.table import Table

    from pipeline.label_eval import evaluate_labels

    metrics = evaluate_labels(labels, data_root)
    table = Table(title=f"pseudo-labels: {labels}")
    keys = ["mIoU", "oIoU", "P@0.3", "P@0.5", "P@0.7", "n"]
    table.add_column("labels")
    for key in keys:
        table.add_column(key, justify="right")
    for row, values in metrics.items():
        cells = [f"{values[k]:.2f}" if k != "n" else str(values[k]) for k in keys]
        table.add_row(row, *cells)
    console.print(table)
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        # NaN (no sample in a row) is not JSON: write null instead.
        clean = {
            row: {k: (None if v != v else v) for k, v in values.items()}
            for row, values in metrics.items()
        }
        metrics_out.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")


@labels_app.command("validate")
@user_errors
def labels_validate(store: Annotated[Path, typer.Argument(help="Label store dir.")]) -> None:
    """Check a store: manifest and schema version, every shard present with its sha256 and rows."""
    from pipeline.store import validate

    problems = validate(store)
    if problems:
        for problem in problems:
            err_console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
        err_console.print(f"[bold red]{store}: {len(problems)} problem(s)[/]")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {store} is valid")


# The trainer's commands live in their own modules; registered last (they import this one).
from cli.evaluate import register as _register_evaluate  # noqa: E402
from cli.train import register as _register_train  # noqa: E402

_register_train(app)
_register_evaluate(app)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
