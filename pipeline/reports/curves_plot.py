"""A training run's curves as one PNG: loss terms per epoch above, eval mIoU per epoch below.

Curriculum phases are shaded and named, so a jump in the loss can be read against the phase
(and the Select round) that began there. mIoU is drawn with markers: runs that evaluate only at
the end (`data.eval_every: 0`) have one point, which a line alone would not show.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are made on servers without a display
import matplotlib.pyplot as plt

from pipeline.reports.run_files import loss_terms, phase_spans

PHASE_SHADES = ("#f2f2f2", "#ffffff")


def curves_png(curves: Sequence[dict[str, Any]], dpi: int = 100) -> bytes:
    """PNG bytes of the loss terms and eval mIoU of `curves` (curves.json rows) per epoch."""
    fig, (loss_ax, miou_ax) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for i, (phase, first, last) in enumerate(phase_spans(curves)):
        for ax in (loss_ax, miou_ax):
            ax.axvspan(first - 0.5, last + 0.5, color=PHASE_SHADES[i % 2], zorder=0)
        loss_ax.text((first + last) / 2, 1.0, phase, transform=loss_ax.get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=8)  # fmt: skip
    for key in loss_terms(curves):
        points = [(r["epoch"], r[key]) for r in curves if r.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            width = 2.2 if key == "loss" else 1.2
            loss_ax.plot(xs, ys, marker=".", lw=width, label=key)
    loss_ax.set_ylabel("loss (epoch mean)")
    loss_ax.legend(fontsize=8, loc="upper right")
    loss_ax.grid(alpha=0.3)
    evaluated = [(r["epoch"], r["mIoU"]) for r in curves if r.get("mIoU") is not None]
    if evaluated:
        xs, ys = zip(*evaluated, strict=True)
        miou_ax.plot(xs, ys, marker="o", color="#2ca02c", label="eval mIoU")
        for x, y in evaluated:
            miou_ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6),
                             ha="center", fontsize=8)  # fmt: skip
        miou_ax.legend(fontsize=8, loc="lower right")
    else:
        miou_ax.text(0.5, 0.5, "no evaluation during the run", ha="center", va="center",
                     transform=miou_ax.transAxes, color="grey")  # fmt: skip
    miou_ax.set_ylabel("mIoU (%)")
    miou_ax.set_xlabel("epoch")
    miou_ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
