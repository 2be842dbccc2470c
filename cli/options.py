"""Command-line options shared by several commands, each defined once.

The model choices (`--sam`, `--sam-checkpoint`, `--clip-model`, `--clip-checkpoint`,
`--clip-pretrained`, `--relevance`, `--device`, `--allow-random-weights`) are added to a command by
`with_model_options`, which hands them to it as one typed `ModelOptions` (argument `models`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.config import load_params
from pipeline.models.options import DEVICES, RELEVANCE_SOURCES, SAM_VARIANTS, ModelOptions

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
MaxImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-images",
        min=1,
        help="Ingest a seeded subset of this many images (default: params ingest.max_images).",
    ),
]
ForceOpt = Annotated[bool, typer.Option(help="Recompute every shard.")]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait", help="If another process is writing the store, wait for it to finish."),
]

# name → (annotated type, default) of every model flag; ModelOptions has a field per name.
MODEL_FLAGS: dict[str, tuple[Any, Any]] = {
    "sam": (
        Annotated[
            str | None,
            typer.Option(
                "--sam", help=f"SAM variant: {', '.join(SAM_VARIANTS)} (default: params encode)."
            ),
        ],
        None,
    ),
    "sam_checkpoint": (
        Annotated[
            Path | None,
            typer.Option("--sam-checkpoint", help="SAM state dict (default: params encode)."),
        ],
        None,
    ),
    "clip_model": (
        Annotated[
            str | None,
            typer.Option("--clip-model", help="open_clip architecture, e.g. ViT-B-16."),
        ],
        None,
    ),
    "clip_checkpoint": (
        Annotated[Path | None, typer.Option("--clip-checkpoint", help="open_clip state dict.")],
        None,
    ),
    "clip_pretrained": (
        Annotated[
            str | None,
            typer.Option(
                "--clip-pretrained",
                help="open_clip pretrained tag (e.g. openai); downloads, so only where online.",
            ),
        ],
        None,
    ),
    "relevance": (
        Annotated[
            str | None,
            typer.Option(
                "--relevance",
                help=f"Relevance maps: {', '.join(RELEVANCE_SOURCES)} (default: params "
                "attention; gt-* are diagnostics, centre the object-centric prior).",
            ),
        ],
        None,
    ),
    "device": (
        Annotated[
            str | None,
            typer.Option("--device", help=f"{' | '.join(DEVICES)} (default: params / auto)."),
        ],
        None,
    ),
    "allow_random_weights": (
        Annotated[
            bool,
            typer.Option(
                "--allow-random-weights",
                help="Randomly initialised models where no checkpoint is given (tests, demos; "
                "stamped random-init in the manifest).",
            ),
        ],
        False,
    ),
}


def with_model_options(exclude: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Add the model flags (all but `exclude`) to a Typer command, as `models: ModelOptions`.

    The command declares a `models` parameter; Typer sees the flags instead (the wrapper's
    signature), and the wrapper builds the `ModelOptions` (which validates the values).
    """
    unknown = set(exclude) - set(MODEL_FLAGS)
    if unknown:
        raise ValueError(f"unknown model flags {sorted(unknown)}")
    names = [name for name in MODEL_FLAGS if name not in exclude]

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != "models"]
        flags = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=MODEL_FLAGS[name][1],
                annotation=MODEL_FLAGS[name][0],
            )
            for name in names
        ]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            models = ModelOptions(**{name: kwargs.pop(name) for name in names})
            return fn(*args, models=models, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*params, *flags])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *flags]}
        return wrapper

    return decorate


def data_root_for(dataset: str, data_root: Path | None) -> Path:
    """--data-root, or the embedded synthetic dataset's default root."""
    if data_root is not None:
        return data_root
    if dataset == DEFAULT_DATASET:
        return DEFAULT_SYNTHETIC_ROOT
    raise typer.BadParameter(f"--data-root is required for dataset {dataset!r}")


def read_params(params: Path | None, splits: str | None = None) -> dict[str, Any]:
    """params.yaml (--params, else the repository's), with --splits applied to [ingest]."""
    loaded = load_params(params)
    if splits:
        loaded = {**loaded, "ingest": {**(loaded.get("ingest") or {}), "splits": splits.split(",")}}
    return loaded
