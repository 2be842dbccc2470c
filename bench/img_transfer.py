"""Does what the generator learns on the object-centric data reach the scenes?

    .venv/bin/python bench/img_transfer.py --out DIR [--seeds 1] [--long-epochs 40]
        [--clip-checkpoint bench/world_clip.py's world-clip.pt]

A diagnostic, never a result. Row 5's config (configs/ablation/row05.yaml) is trained on the
object-centric data alone (`curriculum.exclude_subsets: [H_sem, H_ref]`: D_sem, then D_sem and
D_ref) and shown no relevance map (`model.relevance_input` off, as label_ceiling's "no maps"), so
whatever it finds it finds from the words and the image. It is scored like every row on the
scenes' held-out test split, and on its own training samples of D_ref and D_sem against their
transferred and ground-truth masks: that is fit, not generalisation (the world holds no held-out
composites). Beside each, an untrained generator of the same config (torch seed 0). Variants:

    row schedule   row 5's epochs (D_ref trains in its two RIS phases, 14 epochs)
    long           one phase of --long-epochs epochs over D_sem and D_ref

DIR is a `bench/ablation.py --out` directory (run that first; with `augment.colour_words` in its
params the composites name colours). Writes DIR/img-transfer.json and DIR/img-transfer.md, or,
with --clip-checkpoint (the frozen CLIP the generator reads; default random-init), the same
names with `-clip-<its sha256's first 8>` before the suffix, its runs named likewise.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import torch

# bench/: the script's own folder
from ablation import clip_options, row_configs, run_dir, run_training
from label_ceiling import NO_MAPS, world_args

from pipeline.core.config import jsonable
from pipeline.models.frozen import FrozenClip, FrozenSam
from pipeline.store.reader import LabelStore
from trainer.config import TrainConfig
from trainer.inference.predict import load_for_inference
from trainer.loop.engine import evaluate, reference_masks
from trainer.loop.runner import eval_loader, ground_truths, prepare_data
from trainer.network.prompt_model import PointPromptModel, build_model

STAMP = "diagnostic: trained on the object-centric data alone, no maps (not a result)"
IMG_ONLY = {"exclude_subsets": ["H_sem", "H_ref"]}
log = logging.getLogger("img_transfer")


def own_sets(
    out: Path, world: dict[str, Path], clip: FrozenClip, sam: FrozenSam, cfg: TrainConfig
) -> dict[str, tuple[Any, dict, int]]:
    """D_ref's and D_sem's train samples: part → (eval loader, reference masks, count)."""
    stores_and_roots = {"D_ref": (world["composites"], world["objects"]),
                        "D_sem": (world["objects"], out / "data")}  # fmt: skip
    sets = {}
    for name, (store, root) in stores_and_roots.items():
        stores = [LabelStore(store)]
        data = prepare_data(stores, [root], clip, sam, cfg, out / "feature_cache")
        loader, samples = eval_loader(data, ["train"], 16)
        sets[name] = (loader, reference_masks(samples, ground_truths(stores, [root])),
                      len(samples))  # fmt: skip
    return sets


def own_fit(
    model: PointPromptModel, sam: FrozenSam, sets: dict[str, tuple[Any, dict, int]]
) -> dict[str, float]:
    """A model's mIoU on each of `own_sets`' parts."""
    cpu = torch.device("cpu")
    return {name: evaluate(model, loader, sam, refs, cpu)["mIoU"]
            for name, (loader, refs, _) in sets.items()}  # fmt: skip


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--long-epochs", type=int, default=40,
                            help="the long variant's epochs over D_sem + D_ref")  # fmt: skip
        parser.add_argument("--clip-checkpoint", type=Path, default=None,
                            help="the generator's frozen CLIP (default random-init)")  # fmt: skip

    args, world = world_args(__doc__.splitlines()[0], seeds=1, options=options)
    models, clip_sha = clip_options(args.clip_checkpoint)
    suffix = f"-clip-{clip_sha[:8]}" if clip_sha else ""
    _, config = row_configs()[5]
    model = {**config.get("model", {}), **NO_MAPS}
    schedules = {
        "row schedule": {**config.get("curriculum", {}), **IMG_ONLY},
        "long": {**config.get("curriculum", {}), **IMG_ONLY, "semantic_epochs": 0,
                 "ris_epochs_before_select": args.long_epochs, "ris_epochs": 0,
                 "refinement_rounds": 0},
    }  # fmt: skip
    results: dict[str, Any] = {"stamp": STAMP, "variants": {}}
    sets, untrained = None, {}  # the same samples and untrained model for every run
    for name, curriculum in schedules.items():
        tag = "img-only-" + name.replace(" ", "-") + suffix
        seeds = []
        for seed in range(args.seeds):
            cfg = {**config, "model": model, "curriculum": curriculum}
            scenes = run_training(args.out, world, cfg, seed, tag, models)
            trained, clip, sam, run_cfg = load_for_inference(
                run_dir(args.out, tag, seed) / "last.pt", models
            )
            if sets is None:
                sets = own_sets(args.out, world, clip, sam, run_cfg)
                torch.manual_seed(0)
                untrained = own_fit(build_model(run_cfg.model, clip, sam).eval(), sam, sets)
            fit = own_fit(trained, sam, sets)
            own = {part: {"trained": fit[part], "untrained": untrained[part], "n": n}
                   for part, (_, _, n) in sets.items()}  # fmt: skip
            log.info("%s seed %d: own samples %s", tag, seed, own)
            seeds.append({"scenes": scenes, "own": own})
        results["variants"][name] = seeds
    results["clip"] = str(args.clip_checkpoint) if args.clip_checkpoint else "random-init"
    report = json.dumps(jsonable(results), indent=2) + "\n"
    (args.out / f"img-transfer{suffix}.json").write_text(report)
    lines = [f"# Row 5 {STAMP}; CLIP {results['clip']}", "", "| variant | scenes test mIoU "
             "| own D_ref mIoU (untrained) | own D_sem mIoU (untrained) | seeds |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, seeds in results["variants"].items():
        own = []
        for part in ("D_ref", "D_sem"):
            trained = statistics.fmean(s["own"][part]["trained"] for s in seeds)
            untrained = statistics.fmean(s["own"][part]["untrained"] for s in seeds)
            own.append(f"{trained:.1f} ({untrained:.1f})")
        scenes = statistics.fmean(s["scenes"]["mIoU"] for s in seeds)
        lines.append(f"| {name} | {scenes:.1f} | {own[0]} | {own[1]} | {len(seeds)} |")
    (args.out / f"img-transfer{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
