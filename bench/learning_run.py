"""Learning run (issue 6's target): untrained vs trained vs trivial baselines on held-out scenes.

On a synthetic label store (built with SAM vit_t and `--relevance gt-mask`), with the random-init
CLIP of a CPU config, this scores on the config's eval splits against ground truth:

    untrained     the point generator as initialised (same seed as training)
    centre        SAM prompted with one click at the image centre (trainer.baselines)
    random_cand   a random candidate's pseudo-label, the expression's own candidates
    random_object a random candidate mask of the image (with gt-mask relevance every candidate
                  of an expression carries the referent's mask, so this is the baseline that
                  says whether a model reads the expression)
    trained       after the config's curriculum (wall time reported)

    .venv/bin/python bench/learning_run.py --labels L --data-root D \
        --config configs/cpu-small.yaml --out runs/learning [--json-out F] [--baselines-cache F]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from pipeline.models.options import ModelOptions
from pipeline.store.reader import LabelStore
from trainer.config import load_config
from trainer.inference.baselines import centre_prompt_masks, random_candidate_masks, score_masks
from trainer.loop.curriculum import curriculum_phases
from trainer.loop.engine import evaluate, reference_masks
from trainer.loop.runner import eval_loader, frozen_models, ground_truths, prepare_data, train
from trainer.network.prompt_model import build_model

log = logging.getLogger("learning_run")


def untrained_metrics(cfg, store, data_root, clip, sam, cache_dir, device) -> dict[str, float]:
    """The initialised model (seed as training) on the eval splits."""
    data = prepare_data([store], [data_root], clip, sam, cfg, cache_dir)
    torch.manual_seed(cfg.optim.seed)
    model = build_model(cfg.model, clip, sam).to(device)
    loader, samples = eval_loader(data, cfg.data.eval_splits, cfg.optim.batch_size)
    refs = reference_masks(samples, ground_truths([store], [data_root]))
    return evaluate(model, loader, sam, refs, device, cfg.optim.amp), [s.sample_id for s in samples]


def main() -> None:
    """Run and print the comparison; exit status 0 always (the numbers are the result)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=Path("configs/cpu-small.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/learning"))
    parser.add_argument("--sam-checkpoint", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: a shared CPU)"
    )
    parser.add_argument(
        "--baselines-cache", type=Path, default=None, help="reuse/write baseline scores here"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    torch.set_num_threads(args.threads)  # oversubscribed cores make multi-threaded ops crawl
    cfg = load_config(args.config)
    device = torch.device(args.device)
    store = LabelStore(args.labels)
    options = ModelOptions(sam_checkpoint=args.sam_checkpoint, allow_random_weights=True)
    clip, sam = frozen_models([store], cfg.clip.model, options, device)
    cache_dir = args.out / "feature_cache"
    t0 = time.perf_counter()
    untrained, eval_ids = untrained_metrics(
        cfg, store, args.data_root, clip, sam, cache_dir, device
    )
    log.info("untrained: %s (%.0fs incl. CLIP cache)", untrained, time.perf_counter() - t0)
    saved = args.baselines_cache  # baselines depend on the store and eval splits only
    if saved is not None and saved.is_file():
        baselines = json.loads(saved.read_text())
    else:
        baselines = {
            "centre": score_masks(centre_prompt_masks(store, sam, eval_ids), store, args.data_root),
            "random_cand": score_masks(
                random_candidate_masks(store, eval_ids), store, args.data_root
            ),
            "random_object": score_masks(
                random_candidate_masks(store, eval_ids, pool="image"), store, args.data_root
            ),
        }
        if saved is not None:
            saved.write_text(json.dumps(baselines, indent=2) + "\n")
    log.info("baselines: %s", baselines)
    t0 = time.perf_counter()
    metrics = train(cfg, [args.labels], [args.data_root], args.out, clip, sam, device,
                    cache_dir, resume=False)  # fmt: skip
    wall = time.perf_counter() - t0
    trained = metrics["eval"]
    result = {
        "config": str(args.config),
        "eval_splits": list(cfg.data.eval_splits),
        "epochs": sum(p.epochs for p in curriculum_phases(cfg.curriculum)),
        "trainable_params": metrics["trainable_params"],
        "train_wall_s": round(wall, 1),
        "untrained": untrained,
        **baselines,
        "trained": trained,
        "gain_over_untrained": trained["mIoU"] - untrained["mIoU"],
        "gain_over_best_baseline": trained["mIoU"] - max(b["mIoU"] for b in baselines.values()),
    }
    rows = ["untrained", "centre", "random_cand", "random_object", "trained"]
    lines = [f"{'':14s} {'mIoU':>6s} {'oIoU':>6s} {'P@0.5':>6s} {'n':>5s}"]
    for r in rows:
        m = result[r]
        lines.append(f"{r:14s} {m['mIoU']:6.1f} {m['oIoU']:6.1f} {m['P@0.5']:6.1f} {m['n']:5d}")
    log.info("\n%s\ntrain wall %.0fs, %d trainable params", "\n".join(lines), wall,
             metrics["trainable_params"])  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
