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
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="--image: the mask PNG to write (0 / 255); --texts: a folder."
        ),
    ],
    image: Annotated[Path | None, typer.Option("--image", help="One RGB image file.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Its referring expression.")] = None,
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="--image: also the mask over the image.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Many: the folder the CSV's images are in.")
    ] = None,
    texts: Annotated[
        Path | None,
        typer.Option(
            "--texts", help="Many: a CSV of image,text rows (image relative to --images)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="--texts: rows per batch through the model.")
    ] = 8,
    *,
    models: ModelOptions,
) -> None:
    """Segment what a text refers to in an image with a trained checkpoint: --image IMG --text
    TEXT writes one mask PNG; --images DIR --texts FILE.csv writes OUT/masks/<row>.png per row and
    OUT/predictions.json (COCO, RLE masks, the text on each annotation)."""
    if images is not None and texts is not None and image is None and text is None:
        predict_many(checkpoint, images, texts, out, batch_size, models)
        return
    if image is None or text is None or images is not None or texts is not None:
        raise typer.BadParameter("give --image and --text, or --images and --texts")
    import numpy as np
    from PIL import Image

    from trainer.inference.evaluate import predict_image
    from trainer.inference.predict_images import read_rgb

    rgb = read_rgb(image, "--image")
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


def predict_many(
    checkpoint: Path, images: Path, texts: Path, out: Path, batch_size: int, models: ModelOptions
) -> None:
    """`predict --images DIR --texts FILE.csv`: every row checked first, then batches."""
    from pipeline.data.queries import read_queries
    from pipeline.models.runtime import resolve_device
    from trainer.inference.predict import load_for_inference
    from trainer.inference.predict_images import check_image_input, predict_queries

    queries = read_queries(texts, images)  # a bad row stops here, before any model loads
    device = resolve_device(models.device)
    model, clip, sam, cfg = load_for_inference(checkpoint, models, device)
    check_image_input(cfg, checkpoint)
    what = f"predictions of {checkpoint} for {texts} over {images}"
    document = predict_queries(
        model, clip, sam, cfg, queries, images, out, device, batch_size, what
    )
    empty = sum(a["area"] == 0 for a in document["annotations"])
    console.print(
        f"[green]predicted[/] {len(queries)} rows on {len(document['images'])} images → "
        f"{out}/masks/, {out}/predictions.json" + (f" ({empty} empty masks)" if empty else "")
    )


def register(app: typer.Typer) -> None:
    """Add `eval` and `predict` to the ppt-labels app."""
    app.command("eval")(user_errors(eval_command))
    app.command("predict")(user_errors(predict))
