"""`ppt-labels report`: one self-contained HTML page about a training run.

Sections, each an element with a fixed id (what the browser test looks for):

    #curves    loss terms and eval mIoU per epoch (one inline PNG, `curves_plot`)
    #metrics   the final evaluation and the run's facts
    #ablation  bench/ablation.py's table, only when the run has one (or --ablation gives one)
    #select    the run's Select rounds: pairs, kept share, accuracy where truth exists
    #gallery   held-out samples: image, expression, the model's points and mask, the reference

Images are inlined as base64 PNGs, so the one file can be mailed, attached to an issue or
opened from an artifact store without its run directory. All text is HTML-escaped: expressions
come from datasets.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from pipeline.reports.curves_plot import curves_png
from pipeline.reports.gallery import GalleryItem, gallery_png
from pipeline.reports.run_files import (
    RunFiles,
    ablation_metrics,
    ablation_rows,
    metrics_rows,
    select_rows,
)

SECTION_IDS = ("curves", "metrics", "ablation", "select", "gallery")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; margin-top: 32px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
.facts td { text-align: left; } .note { color: #666; font-size: 13px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(500px, 1fr)); gap: 18px; }
figure { margin: 0; } figcaption { font-size: 13px; margin-top: 4px; }
.pos { color: #00a030; font-weight: bold; } .neg { color: #d01010; font-weight: bold; }
.pred { color: #1e90ff; font-weight: bold; } .ref { color: #d0a000; font-weight: bold; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], text_cols: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [
            f"<td{' class=text' if i < text_cols else ''}>{html.escape(str(v))}</td>"
            for i, v in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _percent(value: object) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"  # type: ignore[arg-type]


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{body}</section>'


def select_section(run: RunFiles) -> str:
    """The Select rounds table (a note when the run made none)."""
    rows = select_rows(run.metrics)
    if not rows:
        return '<p class="note">This run made no Select round (no H_ref pairs, or joint).</p>'
    header = ["store", "round", "pairs", "kept", "kept share %", "accuracy on kept %",
              "random pick %", "first candidate %", "accuracy on all %"]  # fmt: skip
    table = [
        [r["store"], r["round"], r.get("pairs", "–"), r.get("kept", "–"),
         _percent(r.get("kept_share")), _percent(r.get("accuracy")),
         _percent(r.get("random_accuracy")), _percent(r.get("first_accuracy")),
         _percent(r.get("accuracy_all"))]
        for r in rows
    ]  # fmt: skip
    note = (
        '<p class="note">Accuracy: the share of kept pairs whose chosen candidate is the '
        "referent's own phrase, where the store carries phrase ground truth (– where not); "
        "random pick and first candidate: what those two rules would score on the same pairs.</p>"
    )
    return _table(header, table) + note


def gallery_section(items: Sequence[GalleryItem]) -> str:
    """The held-out gallery: one figure per sample, the model's panel beside the reference's."""
    if not items:
        return '<p class="note">No held-out sample to show (the eval splits are empty).</p>'
    legend = (
        '<p class="note">Left: the model — <span class="pred">its mask</span>, points '
        '<span class="pos">● positive</span> and <span class="neg">● negative</span>. Right: '
        '<span class="ref">the reference</span> (ground truth, or the pseudo-label where the '
        "dataset has none).</p>"
    )
    figures = []
    for item in items:
        iou = "" if item.iou is None else f" · IoU {item.iou:.1f}%"
        caption = (
            f"<b>“{html.escape(item.expression)}”</b><br>{html.escape(item.store)} · "
            f"{html.escape(item.sample_id)} · {html.escape(item.split)} · confidence "
            f"{item.score:.2f}{iou} · right: {html.escape(item.reference_kind)}"
        )
        picture = _img(gallery_png(item), f"{item.expression} ({item.sample_id})")
        figures.append(
            f'<figure class="sample">{picture}<figcaption>{caption}</figcaption></figure>'
        )
    return legend + f'<div class="gallery">{"".join(figures)}</div>'


def render_report(
    run: RunFiles, gallery: Sequence[GalleryItem], facts: Sequence[tuple[str, str]] = ()
) -> str:
    """The HTML page of a run (module docstring); `facts` head it as a two-column table."""
    sections = [
        _section("curves", "Training curves", _img(curves_png(run.curves), "training curves")),
        _section("metrics", "Metrics", _table(["metric", "value"], metrics_rows(run.metrics))),
    ]
    if run.ablation is not None:
        header = ["row", "variant", *ablation_metrics(run.ablation), "seeds"]
        rows = [[r[k] for k in header] for r in ablation_rows(run.ablation)]
        source = f'<p class="note">From {html.escape(str(run.ablation_path))}.</p>'
        sections.append(_section("ablation", "Ablation", _table(header, rows, 2) + source))
    sections.append(_section("select", "Select rounds", select_section(run)))
    sections.append(_section("gallery", "Held-out samples", gallery_section(gallery)))
    title = f"ppt-labels run report: {run.root}"
    facts_table = _table(["", ""], facts, 2).replace("<table>", '<table class="facts">', 1)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{facts_table if facts else ''}{''.join(sections)}"
        "</body></html>\n"
    )


def write_report(text: str, out: Path) -> Path:
    """Write the page temp-then-rename (a half-written report never opens)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
