"""`ppt-labels show`: samples of a label store drawn to one PNG.

Each panel shows the image, the expression as its title, the candidate phrases in their colours,
and whatever later stages added: candidate masks (filled, the referent outlined), point prompts
(positive ○ green, negative × red) and the relevance heat map (the whole expression's). Given a
model's predictions (`show --checkpoint`), its mask is outlined dashed in white and its points
drawn as stars, positive ★ yellow and negative ★ magenta. Composites (D_ref, E objects of
which one is the referent) are drawn as outlines: every object's mask outlined in its colour, the
referent filled and outlined thick in `REFERENT_COLOUR`, only the referent's points, so the
expression in the title can be checked against the picture at a glance.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the pipeline runs on servers without a display
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from pipeline.core.errors import DatasetError
from pipeline.core.rle import decode_rle
from pipeline.store import shards
from pipeline.store.reader import LabelStore

log = logging.getLogger(__name__)

PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#8c564b"]
REFERENT_COLOUR = "#00ff40"  # composites: the referent's fill and outline
OUTLINE_SUBSETS = frozenset({"D_ref"})  # subsets drawn as outlines with the referent highlighted


def choose_samples(
    store: LabelStore,
    n: int,
    sample_ids: list[str] | None = None,
    split: str | None = None,
    subset: str | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows of the samples view to draw: the given ids, else `n` chosen at random under `seed`."""
    rows = store.samples().to_pylist()
    if sample_ids:
        by_id = {r["sample_id"]: r for r in rows}
        missing = [s for s in sample_ids if s not in by_id]
        if missing:
            raise DatasetError(f"{store.root}: no sample {missing[0]!r} (--sample-id)")
        return [by_id[s] for s in sample_ids]
    rows = [r for r in rows if split is None or r["split"] == split]
    rows = [r for r in rows if subset is None or r.get("subset") == subset]
    if not rows:
        raise DatasetError(f"{store.root}: no sample matches --split {split} --subset {subset}")
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


def draw_prediction(ax: Any, prediction: Any, width: int, height: int) -> None:
    """The model's mask (dashed white outline) and points (stars: yellow +, magenta -).

    `prediction` has `mask` (H, W) bool, `points` (M, 2) x / W, y / H and `positive` (M,) bool.
    """
    if prediction.mask.any():
        ax.contour(prediction.mask, levels=[0.5], colors=["white"], linewidths=2.0,
                   linestyles="dashed")  # fmt: skip
    for (x, y), positive in zip(prediction.points, prediction.positive, strict=True):
        colour = "yellow" if positive else "magenta"
        ax.plot(x * width, y * height, "*", ms=9, mfc=colour, mec="black", mew=0.6)


def draw_sample(
    ax: Any,
    image: np.ndarray,
    sample: dict[str, Any],
    candidates: list[dict[str, Any]],
    heatmap: np.ndarray | None = None,
    prediction: Any = None,
) -> None:
    """Draw one sample on a matplotlib axis (a model's `prediction` on top, if given)."""
    height, width = image.shape[:2]
    ax.imshow(image)
    if heatmap is not None:
        # Cells with no relevance stay clear, so the image remains readable under the map.
        shown = np.ma.masked_less(heatmap, 0.05 * float(heatmap.max() or 1.0))
        ax.imshow(shown, cmap="jet", alpha=0.45, extent=(0, width, height, 0))
    legend = []
    outline = sample.get("subset") in OUTLINE_SUBSETS
    for cand in candidates:
        is_referent = cand.get("referent") == 1
        colour = PALETTE[cand["cand_idx"] % len(PALETTE)]
        if outline and is_referent:
            colour = REFERENT_COLOUR
        rgb = np.array(matplotlib.colors.to_rgb(colour))
        if cand.get("mask_rle"):
            mask = decode_rle(cand["mask_rle"], height, width)
            if is_referent or not outline:
                overlay = np.zeros((height, width, 4))
                overlay[mask] = (*rgb, 0.35)
                ax.imshow(overlay)
            lw = (3.0 if outline else 2.5) if is_referent else 1.5
            ax.contour(mask, levels=[0.5], colors=[colour], linewidths=lw)
        # A composite's context points would hide the picture: only the referent's are drawn.
        points = [] if outline and not is_referent else cand.get("points") or []
        for point in points:
            x, y = point["x"], point["y"]
            if point["label"]:
                ax.plot(x * width, y * height, "o", ms=4, mfc="none", mec="lime", mew=1.2)
            else:
                ax.plot(x * width, y * height, "x", ms=4, color="red", mew=1.2)
        tag = " (referent)" if cand.get("referent") == 1 else ""
        legend.append((colour, f"{cand['cand_idx']}: {cand['phrase']}{tag}"))
    if prediction is not None:
        draw_prediction(ax, prediction, width, height)
    title = "\n".join(textwrap.wrap(sample["expression"], 38))
    ax.set_title(title, fontsize=9)
    subtitle = f"{sample.get('subset') or ''} {sample['split']}  " + "  ".join(
        text for _, text in legend[:4]
    )
    ax.set_xlabel("\n".join(textwrap.wrap(subtitle, 48)), fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def render(
    store: LabelStore,
    samples: list[dict[str, Any]],
    image_loader: Callable[[dict[str, Any]], np.ndarray],
    out: Path,
    heatmaps: Callable[[dict[str, Any]], np.ndarray | None] | None = None,
    columns: int = 4,
    predictions: dict[str, Any] | None = None,
) -> Path:
    """Draw `samples` in a grid and save it as a PNG at `out` (with a model's `predictions`,
    sample_id → `trainer.loop.engine.Predicted`, where given)."""
    candidates: dict[str, list[dict[str, Any]]] = {}
    wanted = {s["sample_id"] for s in samples}
    for cand in store.candidates().to_pylist():
        if cand["sample_id"] in wanted:
            candidates.setdefault(cand["sample_id"], []).append(cand)
    columns = min(columns, len(samples))
    rows = (len(samples) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.8 * rows), squeeze=False)
    for ax in axes.flat[len(samples) :]:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples, strict=False):
        heat = heatmaps(sample) if heatmaps else None
        pred = (predictions or {}).get(sample["sample_id"])
        cands = candidates.get(sample["sample_id"], [])
        draw_sample(ax, image_loader(sample), sample, cands, heat, pred)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    log.info("wrote %s (%d samples)", out, len(samples))
    return out


def render_each(
    store: LabelStore,
    samples: list[dict[str, Any]],
    image_loader: Callable[[dict[str, Any]], np.ndarray],
    out_dir: Path,
    heatmaps: Callable[[dict[str, Any]], np.ndarray | None] | None = None,
    predictions: dict[str, Any] | None = None,
) -> list[Path]:
    """Draw each sample to its own PNG in `out_dir` (named by sample_id, "/" → "_")."""
    paths = []
    for sample in samples:
        name = sample["sample_id"].replace("/", "_") + ".png"
        path = Path(out_dir) / name
        paths.append(render(store, [sample], image_loader, path, heatmaps, 1, predictions))
    return paths


def relevance_heatmaps(store: LabelStore) -> Callable[[dict[str, Any]], np.ndarray | None]:
    """Heat maps for `render`: each sample's whole-expression map where the store has them (what
    CLIP + SAM prompts with and a relevance-reading model reads), else its referent's map (its
    first candidate's in H_ref).

    Returns a function giving None for every sample when the store has no attention stage.
    """
    if "attention" not in store.tables:
        return lambda sample: None
    sentences = store.sentence_relevance()
    if sentences:
        return lambda sample: (
            None
            if sample["sample_id"] not in sentences
            else np.asarray(sentences[sample["sample_id"]], dtype=np.float32)
        )
    index: dict[tuple[str, int], tuple[str, int]] = {}
    for entry in store.manifest["shards"]:
        path = entry["path"]
        if path.startswith("attention/part-") and path.endswith(".parquet"):
            table = shards.read_parquet(store.root / path).to_pylist()
            for row in table:
                index[(row["sample_id"], row["cand_idx"])] = (Path(path).stem, row["array_row"])
    referent = {
        (c["sample_id"]): c["cand_idx"]
        for c in store.candidates().to_pylist()
        if c.get("referent") == 1
    }

    def heatmap(sample: dict[str, Any]) -> np.ndarray | None:
        key = (sample["sample_id"], referent.get(sample["sample_id"], 0))
        if key not in index:
            return None
        shard, row = index[key]
        return np.asarray(store.arrays("attention", shard)["relevance"][row], dtype=np.float32)

    return heatmap


def image_from_root(data_root: Path) -> Callable[[dict[str, Any]], np.ndarray]:
    """An image loader reading `image_path` under --data-root, with a clear error if missing."""

    def load(sample: dict[str, Any]) -> np.ndarray:
        path = data_root / sample["image_path"]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as exc:
            raise DatasetError(
                f"{path}: cannot read image of {sample['sample_id']} ({exc})"
            ) from None

    return load
