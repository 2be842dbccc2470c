"""`ppt-labels eval` and `ppt-labels predict`: thin Typer layers over `trainer.inference`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.app import console, user_errors
from cli.options import (
    DataRootOpt,
    DatasetOpt,
    ParamsOpt,
    data_root_for,
    read_params,
    with_model_options,
)
from pipeline.models.options import ModelOptions

CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", "-c", help="Training checkpoint (OUT/last.pt).")
]


@with_model_options()
def eval_command(
    split: Annotated[str, typer.Option("--split", help="Dataset split to score, e.g. val.")],
    checkpoint: CheckpointOpt = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Score an untrained baseline instead: clip-sam."),
    ] = None,
    dataset: DatasetOpt = "synthetic",
    data_root: DataRootOpt = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="Where the split's label store is built (default labels/eval/...)."
        ),
    ] = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics-out", help="Write the metrics as JSON here.")
    ] = None,
    params: ParamsOpt = None,
    *,
    models: ModelOptions,
) -> None:
    """Score a checkpoint (or --baseline clip-sam) on a dataset split: mIoU, oIoU, P@X."""
    from pipeline.core.config import jsonable
    from trainer.inference import evaluate

    if (checkpoint is None) == (baseline is None):
        raise typer.BadParameter("give exactly one of --checkpoint and --baseline")
    root = data_root_for(dataset, data_root)
    what = checkpoint.stem if checkpoint else baseline
    labels = labels or Path("labels") / "eval" / f"{dataset}-{split}-{what}"
    settings = read_params(params)
    if checkpoint is not None:
        metrics = evaluate.eval_checkpoint(
            checkpoint, dataset, split, root, labels, settings, models
        )
    else:
        metrics = evaluate.eval_baseline(baseline, dataset, split, root, labels, settings, models)
    text = json.dumps(jsonable(metrics), indent=2)
    if metrics_out is not None:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(text + "\n")
    console.print(f"{dataset} {split} ({what}):")
    console.print(text)


@with_model_options(exclude=("relevance",))
def predict(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Training checkpoint.")],
    image: Annotated[Path, typer.Option("--image", help="RGB image file.")],
    text: Annotated[str, typer.Option("--text", help="The referring expression.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Mask PNG to write (0 / 255).")],
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="Also write the mask over the image here.")
    ] = None,
    *,
    models: ModelOptions,
) -> None:
    """Segment what TEXT refers to in IMAGE with a trained checkpoint; writes a mask PNG."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from trainer.inference.evaluate import predict_image

    try:
        with Image.open(image) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise typer.BadParameter(f"--image {image}: cannot read it as an image ({exc})") from None
    if not text.strip():
        raise typer.BadParameter("--text is empty: give the referring expression")
    mask, score = predict_image(checkpoint, rgb, text, models)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out)
    if overlay is not None:
        tinted = rgb.astype(np.float32)
        tinted[mask] = 0.5 * tinted[mask] + 0.5 * np.array([255.0, 64.0, 64.0])
        overlay.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tinted.astype(np.uint8)).save(overlay)
    console.print(
        f"{out}: {int(mask.sum())} of {mask.size} pixels ({100 * mask.mean():.1f}%), "
        f"confidence {score:.3f}"
    )


def register(app: typer.Typer) -> None:
    """Add `eval` and `predict` to the ppt-labels app."""
    app.command("eval")(user_errors(eval_command))
    app.command("predict")(user_errors(predict))
