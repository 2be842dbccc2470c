"""`labels export` and `labels diff`: pseudo-labels out to other tools, and what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import console, user_errors

FORMATS = ("refer", "coco")


def export(
    store: Annotated[Path, typer.Argument(help="Label store dir.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="refer | coco.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="refer: the data root to write; coco: a .json file or a dir."
        ),
    ],
    round_index: Annotated[
        int | None,
        typer.Option(
            "--round", help="Select round whose choices H_ref takes (default: the latest; 0: none)."
        ),
    ] = None,
    subset: Annotated[
        list[str] | None,
        typer.Option("--subset", help="Only these subsets (repeatable): H_sem H_ref D_sem D_ref."),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="refer: the store's dataset root, for the images."),
    ] = None,
    images: Annotated[
        str, typer.Option("--images", help="refer: symlink | copy the images, or none.")
    ] = "symlink",
) -> None:
    """Export each sample's referent pseudo-label: the refer toolkit's layout (refs(ppt).p,
    instances.json, images/; build it back with --dataset ppt-export) or one COCO JSON."""
    from pipeline.export.coco_json import coco_document
    from pipeline.export.refer_files import write_refer
    from pipeline.export.referents import referent_labels
    from pipeline.store.reader import LabelStore
    from pipeline.store.shards import write_json
    from pipeline.store.validate import verify_store

    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    verify_store(store)  # a damaged store or round is named, never exported
    found = referent_labels(LabelStore(store), round_index, subset)
    what = f"pseudo-labels of {store} (Select round {found.round_index or 'none'} for H_ref)"
    if fmt == "refer":
        write_refer(found.labels, out, what, images, data_root)
        target = out
    else:
        target = out / "instances.json" if out.suffix.lower() != ".json" else out
        write_json(coco_document(found.labels, what), target)
    left_out = sum(found.left_out.values())
    console.print(
        f"[green]exported[/] {len(found.labels)} pseudo-labels ({fmt}) → {target}"
        + (f"; {left_out} samples left out (see the log)" if left_out else "")
    )


def diff(
    a: Annotated[Path, typer.Argument(help="A store, or <store>/rounds/<k>.")],
    b: Annotated[Path, typer.Argument(help="A store, or <store>/rounds/<k>.")],
    show: Annotated[int, typer.Option("--show", help="Example keys to print per kind.")] = 5,
) -> None:
    """What B added, removed and changed relative to A, per table (two stores), or the pairs
    whose chosen candidate or kept flag changed (two rounds). Exit 1 when they differ."""
    from rich.table import Table

    from pipeline.store.diff import diff_paths

    diffs = diff_paths(a, b)
    table = Table(title=f"{a} → {b}")
    for column in ("table", "rows A", "rows B", "added", "removed", "changed"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for d in diffs:
        table.add_row(d.name, str(d.rows_a), str(d.rows_b), str(len(d.added)),
                      str(len(d.removed)), str(len(d.changed)))  # fmt: skip
    console.print(table)
    for d in diffs:
        for kind, keys in (("added", d.added), ("removed", d.removed)):
            if keys and show:
                console.print(f"{d.name} {kind}: " + ", ".join(map(str, keys[:show])))
        for key, columns in list(d.changed.items())[:show]:
            console.print(f"{d.name} changed {key}: {', '.join(columns)}")
    if not all(d.same for d in diffs):
        raise typer.Exit(1)


def register(labels_app: typer.Typer) -> None:
    """Add `labels export` and `labels diff`."""
    labels_app.command("export")(user_errors(export))
    labels_app.command("diff")(user_errors(diff))
