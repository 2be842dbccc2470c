"""The paper's Table 3 in miniature, on the synthetic world, scored on its held-out test split.

    .venv/bin/python bench/ablation.py --rows 1,5 --seeds 2 --world-seed 0 --out DIR

`--world-seed` generates the whole world (scenes, object-centric images; the augment stage makes
the Mosaic / fusion composites) from that seed under DIR/data, and builds its label stores under
DIR/labels with `--relevance simulated` (the CLIP-like stand-in, pipeline/labelling/simulated.py):
the scenes (H_sem / H_ref), the object-centric set (D_sem, + augment) and its composites (D_ref).
Stores are built once and reused by every row. Every row is a config under configs/ablation/
(variants as data): row 1 is CLIP + SAM without training (the whole sentence's relevance →
SAM with box_points, the `eval --baseline clip-sam` path); rows 2-10 train the point generator
on the stores and score its masks on the test split against ground truth. Each (row, seed)
result is cached in DIR/results/ with a hash of its config and the world's params, and trains in
DIR/runs/row<NN>-<hash>-seed<S>, so a killed table resumes (mid-row too) and a changed config runs
again from scratch; `--report` runs nothing and tabulates every cached
(row, seed) of `--rows` (rows may have different numbers of seeds). Seeds: the training seed
(optim.seed) for rows 2-10; for row 1, which trains nothing, the simulation's seed of the
test split's maps (attention.simulated.seed), i.e. another draw of CLIP's noise.

Writes DIR/ablation.json (row → metrics mean and std over seeds, per-seed values, Select
reports), DIR/ablation.md and DIR/ablation.png (a bar chart of mIoU ± std).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipeline.core.config import jsonable, read_yaml_mapping
from pipeline.core.hashing import sha256_file
from pipeline.models.options import ModelOptions
from pipeline.models.runtime import resolve_device
from pipeline.reports.run_files import mean_std
from pipeline.scoring.failures import CLASSES
from pipeline.scoring.metrics import SUMMARY_KEYS
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.reader import LabelStore
from trainer.config import config_from_dict, read_config_file
from trainer.inference.evaluate import eval_baseline
from trainer.loop.runner import frozen_models, train

REPO = Path(__file__).resolve().parents[1]
ROWS_DIR = REPO / "configs" / "ablation"
WORLD_PARAMS = REPO / "configs" / "world-params.yaml"
SIM = ModelOptions(relevance="simulated", allow_random_weights=True)
log = logging.getLogger("ablation")


def row_configs() -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """Row number → (its `ablation` metadata, its training config dict) from configs/ablation/."""
    rows = {}
    for path in sorted(ROWS_DIR.glob("row*.yaml")):
        data = read_config_file(path)
        meta = data.pop("ablation")
        rows[int(meta["row"])] = (meta, data)
    return rows


def world_params(args: argparse.Namespace) -> dict[str, Any]:
    """configs/world-params.yaml with this world's seed and sizes."""
    params = read_yaml_mapping(args.params, "stage sections")
    synthetic = {**params.get("synthetic", {}), "seed": args.world_seed}
    if args.n_images:
        synthetic["n_images"] = args.n_images
    if args.n_objects is not None:
        synthetic["n_object_images"] = args.n_objects
    return {**params, "synthetic": synthetic}


def build_world(out: Path, params: dict[str, Any]) -> dict[str, Path]:
    """The world's stores (built once; a re-run finds them up to date)."""
    data, labels = out / "data", out / "labels"
    stores = {"synthetic": labels / "synthetic", "objects": labels / "synthetic-objects"}
    ex = InProcessExecutor()
    for name, store in (
        ("synthetic", stores["synthetic"]),
        ("synthetic-objects", stores["objects"]),
    ):
        start = time.perf_counter()
        build(name, data, store, params, ex, models=SIM)
        log.info("store %s in %.0fs", name, time.perf_counter() - start)
    stores["composites"] = labels / "synthetic-objects-ref"
    start = time.perf_counter()
    build("synthetic-objects-ref", stores["objects"], stores["composites"], params, ex, models=SIM)
    log.info("store synthetic-objects-ref in %.0fs", time.perf_counter() - start)
    return stores


def run_baseline(out: Path, params: dict[str, Any], seed: int, split: str) -> dict[str, Any]:
    """Row 1: the whole sentence's simulated relevance → SAM on the test split."""
    attention = params.get("attention") or {}
    simulated = {**(attention.get("simulated") or {}), "seed": seed}
    row_params = {**params, "attention": {**attention, "simulated": simulated}}
    labels = out / "labels" / f"baseline-{split}-seed{seed}"
    return eval_baseline("clip-sam", "synthetic", split, out / "data", labels, row_params, SIM)


def run_dir(out: Path, name: str, seed: int) -> Path:
    """Where `run_training` trains the run `name` of optim seed `seed` (its last.pt and metrics)."""
    return out / "runs" / f"{name}-seed{seed}"


def clip_options(checkpoint: Path | None) -> tuple[ModelOptions, str | None]:
    """The rows' model options with `checkpoint` as their frozen CLIP (a --clip-checkpoint, e.g.
    bench/world_clip.py's), and its sha256; None: random-init (SIM), no sha."""
    if checkpoint is None:
        return SIM, None
    return dataclasses.replace(SIM, clip_checkpoint=checkpoint), sha256_file(checkpoint)


def run_training(
    out: Path,
    stores: dict[str, Path],
    config: dict[str, Any],
    seed: int,
    name: str,
    options: ModelOptions = SIM,
) -> dict[str, Any]:
    """A row's curriculum on the world's stores, scored on the eval split (the config's);
    CLIP's weights from `options` (random-init unless it names a --clip-checkpoint)."""
    config = {**config, "optim": {**config.get("optim", {}), "seed": seed}}
    cfg = config_from_dict(config, name)
    store_dirs = [stores["synthetic"], stores["objects"], stores["composites"]]
    roots = [out / "data", out / "data", stores["objects"]]
    device = resolve_device("cpu")
    clip, sam = frozen_models([LabelStore(d) for d in store_dirs], cfg.clip.model, options, device)
    run = run_dir(out, name, seed)
    metrics = train(cfg, store_dirs, roots, run, clip, sam, device, out / "feature_cache")
    return {**metrics["eval"], "select": metrics.get("select"), "wall_s": metrics["wall_s"]}


def summary(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every metric, per row."""
    out = {}
    for row, result in sorted(rows.items()):
        seeds = result["seeds"]
        stats = {}
        for key in SUMMARY_KEYS:
            values = [s[key] for s in seeds.values() if s.get(key) is not None]
            mean = statistics.fmean(values) if values else None
            std = statistics.pstdev(values) if len(values) > 1 else None  # one seed: unknown
            stats[key] = {"mean": mean, "std": std, "per_seed": values}
        failures = [s["failures"] for s in seeds.values() if s.get("failures")]
        if failures:  # what the misses hit instead, share of samples, mean over seeds
            stats["failures"] = {c: statistics.fmean(f[c] for f in failures) for c in CLASSES}
        out[str(row)] = {"name": result["name"], **stats, "seeds": seeds}
    return out


def write_outputs(out: Path, table: dict[str, Any]) -> None:
    """ablation.json, ablation.md and ablation.png."""
    (out / "ablation.json").write_text(json.dumps(jsonable(table), indent=2) + "\n")
    lines = [
        "| row | variant | mIoU | oIoU | P@0.3 | P@0.5 | P@0.7 | n | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in table.items():
        cells = [mean_std(r[k]) for k in SUMMARY_KEYS[:-1]]
        tail = f" | {r['n']['mean']:.0f} | {len(r['seeds'])} |"
        lines.append(f"| {row} | {r['name']} | " + " | ".join(cells) + tail)
    failing = {row: r["failures"] for row, r in table.items() if r.get("failures")}
    if failing:
        lines += [
            "",
            "What each row's test masks hit (pipeline.scoring.failures; % of samples, mean over "
            "seeds):",
            "",
            "| row | " + " | ".join(CLASSES) + " |",
            "|---|" + "---|" * len(CLASSES),
        ]
        for row, shares in failing.items():
            lines.append(f"| {row} | " + " | ".join(f"{shares[c]:.1f}" for c in CLASSES) + " |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(1.1 * len(table) + 2, 4))
    names = [f"{row}" for row in table]
    means = [r["mIoU"]["mean"] for r in table.values()]
    stds = [r["mIoU"]["std"] or 0.0 for r in table.values()]  # one seed: no error bar
    ax.bar(names, means, yerr=stds, capsize=4, color="#4c72b0")
    ax.set_xlabel("Table 3 row")
    ax.set_ylabel("test mIoU (mean ± std over seeds)")
    ax.set_title("PPT ablation in miniature (synthetic world, simulated CLIP)")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Build the world once, run every (row, seed) not yet cached, write the table (`argv`:
    the command line's arguments, default sys.argv's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,5,6,7,8,9,10")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=WORLD_PARAMS, help="the world's params")
    parser.add_argument("--n-images", type=int, default=None, help="scenes (default: params)")
    parser.add_argument("--n-objects", type=int, default=None, help="object-centric images")
    parser.add_argument("--schedule", type=Path, default=None,
                        help="YAML merged over every row's config (e.g. fewer epochs)")  # fmt: skip
    parser.add_argument("--clip-checkpoint", type=Path, default=None,
                        help="the rows' frozen CLIP (an open_clip state dict, e.g. "
                        "bench/world_clip.py's); default random-init")  # fmt: skip
    parser.add_argument("--report", action="store_true",
                        help="run nothing: tabulate the cached (row, seed)s of --rows")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("distributed", "PIL", "matplotlib"):  # not "root": that is the root logger
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    params = world_params(args)
    stores = {} if args.report else build_world(args.out, params)
    overrides = read_yaml_mapping(args.schedule, "sections") if args.schedule else {}
    configs = row_configs()
    options, clip_weights = clip_options(args.clip_checkpoint)
    wanted = [int(r) for r in args.rows.split(",")]
    unknown = sorted(set(wanted) - set(configs))
    if unknown:
        raise SystemExit(f"--rows {unknown}: no configs/ablation/row*.yaml for them")
    results: dict[int, dict[str, Any]] = {}
    for row in wanted:
        meta, config = configs[row]
        for section, values in overrides.items() if not meta.get("baseline") else ():
            config[section] = {**config.get(section, {}), **values}  # trains: the schedule
        # a cached result counts only for the very config (and world params, and the CLIP
        # checkpoint of a trained row) it was run with; random-init CLIP adds nothing
        trained_clip = clip_weights if clip_weights and not meta.get("baseline") else None
        recipe_of = [config, params] + ([trained_clip] if trained_clip else [])
        recipe = hashlib.sha256(
            json.dumps(jsonable(recipe_of), sort_keys=True).encode()
        ).hexdigest()[:16]
        results[row] = {"name": meta["name"], "seeds": {}}
        seeds = range(args.seeds) if not args.report else range(1 << 10)
        for seed in seeds:
            cached = args.out / "results" / f"row{row:02d}-seed{seed}.json"
            if cached.is_file():
                result = json.loads(cached.read_text())
                if result.get("recipe") == recipe:
                    results[row]["seeds"][seed] = result
                    continue
                what = "left out" if args.report else "running again"
                log.info("row %d seed %d: cached for another config; %s", row, seed, what)
            if args.report:
                continue
            start = time.perf_counter()
            if meta.get("baseline"):
                split = config.get("data", {}).get("eval_splits", ["test"])[0]
                result = run_baseline(args.out, params, seed, split)
            else:
                # its run directory is the recipe's: a killed row resumes, a changed one starts over
                name = f"row{row:02d}-{recipe}"
                result = run_training(args.out, stores, config, seed, name, options)
            result["wall_s"] = round(time.perf_counter() - start, 1)
            result["recipe"] = recipe
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(jsonable(result), indent=2) + "\n")
            log.info(
                "row %d seed %d: mIoU %.1f (%.0fs)", row, seed, result["mIoU"], result["wall_s"]
            )
            results[row]["seeds"][seed] = result
        if not results[row]["seeds"]:
            del results[row]
    table = summary(results)
    write_outputs(args.out, table)
    print((args.out / "ablation.md").read_text())


if __name__ == "__main__":
    main()
