"""`ppt-labels train`: the curriculum on label stores (a thin layer over `trainer.loop.runner`).

Under `torchrun --nproc_per_node N` each process joins the process group and trains its share
of every batch (`trainer.loop.distributed`); without torchrun it is one process, as ever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import console, user_errors
from cli.options import with_model_options
from pipeline.models.options import ModelOptions


@with_model_options(exclude=("relevance",))
def train(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Training config YAML (configs/).")
    ],
    labels: Annotated[
        list[Path], typer.Option("--labels", "-l", help="Label store dir (repeatable).")
    ],
    data_root: Annotated[
        list[Path],
        typer.Option(
            "--data-root",
            help="Dataset root of each --labels, same order (images for the CLIP cache, ground "
            "truth for evaluation); one root is shared by every store.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run dir: checkpoints, metrics.")],
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from OUT/last.pt if present.")
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="CLIP feature cache (default OUT/feature_cache)."),
    ] = None,
    *,
    models: ModelOptions,
) -> None:
    """Train the point generator through the curriculum; writes OUT/last.pt, metrics.json and
    curves.csv (per-epoch loss and mIoU). Several GPUs (or CPU processes): start it with
    `torchrun --nproc_per_node N -m cli.main train ...`; --device picks cuda or cpu."""
    from pipeline.models.runtime import resolve_device
    from pipeline.store.reader import LabelStore
    from trainer.config import load_config
    from trainer.loop.distributed import is_main_process, process_group
    from trainer.loop.runner import frozen_models
    from trainer.loop.runner import train as run_train

    cfg = load_config(config)
    roots = list(data_root) * len(labels) if len(data_root) == 1 else list(data_root)
    if len(roots) != len(labels):
        raise typer.BadParameter(
            f"{len(labels)} --labels but {len(data_root)} --data-root: give one root, or one "
            "per store in the same order"
        )
    with process_group(resolve_device(models.device)) as device:
        stores = [LabelStore(p) for p in labels]
        clip, sam = frozen_models(stores, cfg.clip.model, models, device)
        metrics = run_train(cfg, labels, roots, out, clip, sam, device, cache_dir, resume)
        main = is_main_process()
    if not main:  # rank 0 reports for every rank
        return
    ev = metrics["eval"]
    console.print(
        f"[green]trained[/] {metrics['epochs']} epochs in {metrics['wall_s']}s: mIoU "
        f"{ev['mIoU']}, oIoU {ev['oIoU']} on {ev['n']} samples → {out}/metrics.json"
    )


def register(app: typer.Typer) -> None:
    """Add the `train` command to the ppt-labels app."""
    app.command("train")(user_errors(train))
