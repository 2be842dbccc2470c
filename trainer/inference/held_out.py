"""The trainer's half of `ppt-labels report`: a run's model on a few held-out samples.

The checkpoint names the label stores it trained on and each one's dataset root (images, ground
truth); `--labels` / `--data-root` replace them where the run was moved or the checkpoint
predates recording roots. Samples come from the config's eval splits (held out: never trained
on), those with ground truth first, `n` of them picked under a seed, and go through the same
inference as `eval` (`predict_store_points`: cached CLIP features, SAM on the store's embedding),
so the gallery shows what the metrics scored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.core.errors import ConfigError, DatasetError, StoreError
from pipeline.core.rle import decode_rle
from pipeline.models.options import ModelOptions
from pipeline.models.runtime import resolve_device
from pipeline.reports.gallery import GalleryItem
from pipeline.reports.show import image_from_root
from pipeline.scoring.label_eval import ground_truth_rles
from pipeline.store.reader import LabelStore
from trainer.config import config_from_dict
from trainer.data.feature_cache import manifest_hash
from trainer.inference.predict import load_for_inference, predict_store_points
from trainer.loop.checkpoint import LAST, load_checkpoint

log = logging.getLogger(__name__)


def run_stores(
    state: dict[str, Any],
    stores: Sequence[Path] | None = None,
    data_roots: Sequence[Path] | None = None,
) -> list[tuple[LabelStore, Path]]:
    """(store, dataset root) of each store a checkpoint trained on, with the overrides applied.

    Raises:
        ConfigError: a count of --labels / --data-root that does not fit, or no root known.
        StoreError: a store that is no longer where the checkpoint says (names --labels).
    """
    recorded = state.get("stores") or []
    paths = [Path(p) for p in stores] if stores else [Path(s["root"]) for s in recorded]
    roots: list[Path | None] = [Path(r) for r in data_roots or ()]
    if len(roots) == 1:
        roots *= len(paths)
    elif not roots:
        roots = [Path(s["data_root"]) if s.get("data_root") else None for s in recorded]
    if len(roots) != len(paths):
        raise ConfigError(
            f"{len(paths)} label stores but {len(roots)} --data-root: give one root, or one per "
            "store in the checkpoint's order"
        )
    out = []
    for i, (path, root) in enumerate(zip(paths, roots, strict=True)):
        if not (path / "manifest.json").is_file():
            raise StoreError(
                f"{path}: no label store there (the run's store {i + 1}); pass --labels with "
                "the stores it trained on, in order"
            )
        if root is None:
            raise ConfigError(
                f"{path}: the checkpoint does not record its dataset root; pass --data-root"
            )
        store = LabelStore(path)
        if i < len(recorded) and manifest_hash(store) != recorded[i]["manifest_sha256"]:
            log.warning("%s: changed since the run trained on it (manifest sha256)", path)
        out.append((store, root))
    return out


def _pool(
    store: LabelStore, index: int, root: Path, splits: Sequence[str]
) -> list[tuple[int, dict[str, Any], Any]]:
    """(store index, sample row, reference) of the store's eval-split samples; the reference is
    the ground truth (a COCO RLE dict), else the referent pseudo-label (counts str), else None."""
    rows = [r for r in store.samples().to_pylist() if r["split"] in splits]
    if not rows:
        return []
    try:
        truths = ground_truth_rles(store, root, sample_ids=[r["sample_id"] for r in rows])
    except (DatasetError, StoreError) as exc:
        log.info("%s: no ground truth (%s); the gallery shows pseudo-labels", store.root, exc)
        truths = {}
    referents = {
        c["sample_id"]: c["mask_rle"]
        for c in store.candidates().select(["sample_id", "referent", "mask_rle"]).to_pylist()
        if c.get("referent") == 1 and c.get("mask_rle")
    }
    return [(index, r, truths.get(r["sample_id"]) or referents.get(r["sample_id"])) for r in rows]


def _choose(pool: list[tuple[int, dict[str, Any], Any]], n: int, seed: int) -> list:
    """`n` of `pool` under `seed`: samples with ground truth first, then with a pseudo-label,
    then the rest; in store and sample order."""
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, dict[str, Any], Any]] = []
    for tier in ((dict,), (str,), (type(None),)):
        members = [p for p in pool if isinstance(p[2], tier)]
        chosen += [members[i] for i in rng.permutation(len(members))[: n - len(chosen)]]
    return sorted(chosen, key=lambda p: (p[0], p[1]["sample_id"]))


def _reference(ref: Any, row: dict[str, Any]) -> np.ndarray | None:
    if ref is None:
        return None
    if isinstance(ref, str):
        return decode_rle(ref, row["height"], row["width"])
    return mask_utils.decode({"size": ref["size"], "counts": ref["counts"]}).astype(bool)


def held_out_gallery(
    run_dir: Path,
    options: ModelOptions | None = None,
    n: int = 6,
    stores: Sequence[Path] | None = None,
    data_roots: Sequence[Path] | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
) -> tuple[list[GalleryItem], list[tuple[str, str]]]:
    """`n` held-out samples of the run in `run_dir` with its model's answers, and the run's facts
    (checkpoint, stores, models) for the report's head.

    Args:
        cache_dir: the CLIP feature cache (default RUN_DIR/feature_cache, training's own).
    """
    options = options or ModelOptions()
    checkpoint = Path(run_dir) / LAST
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"], f"{checkpoint} config")
    opened = run_stores(state, stores, data_roots)
    splits = list(cfg.data.eval_splits)
    pool = [p for i, (s, root) in enumerate(opened) for p in _pool(s, i, root, splits)]
    chosen = _choose(pool, n, seed)
    device = resolve_device(options.device)
    models = state["models"]
    facts = [
        ("checkpoint", f"{checkpoint} (epoch {state['epoch']}, stage {state['stage']}, "
                       f"round {state['round']})"),
        ("stores", ", ".join(f"{s.root} ({root})" for s, root in opened)),
        ("CLIP", f"{models['clip']['model']} weights {models['clip']['weights'][:16]}"),
        ("SAM", f"{models['sam']['variant']} weights {models['sam']['weights'][:16]}"),
        ("held-out gallery", f"{len(chosen)} samples of split(s) {', '.join(splits)}, seed {seed}"),
    ]  # fmt: skip
    if not chosen:
        return [], facts
    model, clip, sam, cfg = load_for_inference(checkpoint, options, device)
    items = []
    for index, (store, root) in enumerate(opened):
        mine = [(row, ref) for i, row, ref in chosen if i == index]
        if not mine:
            continue
        predicted = predict_store_points(
            model, clip, sam, cfg, store, root, Path(cache_dir or Path(run_dir) / "feature_cache"),
            device, sample_ids=[row["sample_id"] for row, _ in mine],
        )  # fmt: skip
        load = image_from_root(root)
        for row, ref in mine:
            p = predicted[row["sample_id"]]
            kind = (
                "none"
                if ref is None
                else "pseudo-label"
                if isinstance(ref, str)
                else "ground truth"
            )
            items.append(GalleryItem(
                store.root.name, row["sample_id"], row["split"], row["expression"], load(row),
                p.mask, p.points, p.positive, p.score, _reference(ref, row), kind,
            ))  # fmt: skip
    return items, facts
