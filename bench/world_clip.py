"""Pretrain the trainer's tiny CLIP on the synthetic world: CLIP's web data in miniature.

    .venv/bin/python bench/world_clip.py --out DIR [--scenes 1500] [--objects 500] [--steps 600]
        [--captions sentences|objects]

A diagnostic for issue 11's item 6, never a result: does a CLIP that has learnt the world's words
carry what the generator learns on the object-centric data to the scenes, where random-init
CLIP features do not (README, "The evaluation world": it does not)? Its corpus is a world of its own
(--corpus-seed, default 1000, so none of an ablation world's images; configs/world-params.yaml's
look), each image paired with captions: image-text pairs, no mask, box or phrase is read.
`--captions sentences`: a scene's referring sentences, an object-centric image's expression.
`--captions objects`: as alt-text would, half of the draws instead list every object the image
shows, in random order ("a red circle with a blue part, a green square"; from the world's object
list: class, colour and part colour, no place). The model is the trainer's CLIP architecture
(ppt-tiny-vit, from the trainer's own random init; --seed draws the batches and captions) at
the trainer's input side (--input-size 224): its 7×7 positional embedding is interpolated to the
14×14 grid in every step exactly as the trainer's feature cache does, so the checkpoint loads as
an ordinary ppt-tiny-vit state dict and is read at 224 as it was trained. Loss: open_clip's ClipLoss
(symmetric InfoNCE, learned temperature), a caption drawn at random per image per step; AdamW
(weight decay 0.1), cosine schedule over --steps batches of --batch-size (a step budget, not a
wall-clock one, so a rerun trains the same steps; 600 of 128 take about 12 minutes on this
2-core CPU).

Writes DIR/world-clip.pt (open_clip state dict; pass it as --clip-checkpoint) and
DIR/world-clip.json: steps, the loss curve, and held-out retrieval (the corpus's val and test
images, batches of 64, one caption each: top-1 image→text and text→image, chance 1/64) for the
trained model and the random-init one it started from.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from PIL import Image

from pipeline.core.config import from_section, read_yaml_mapping
from pipeline.data.registry import open_dataset
from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic
from pipeline.models.clip_surgery import preprocess_image
from pipeline.models.frozen import build_clip  # registers ppt-tiny-vit with open_clip
from trainer.network.clip_stages import embed_patches

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("world_clip")


def object_list(objects: Any) -> list[str]:
    """An image's objects as alt-text phrases: "a red circle" / "a red circle with a blue part"."""
    phrases = []
    for o in objects:
        part = f" with a {o.part_colour} part" if o.part_colour else ""
        phrases.append(f"a {o.colour} {o.shape}{part}")
    return phrases


def corpus(
    root: Path, scenes: int, objects: int, seed: int
) -> dict[str, list[tuple[str, list, list]]]:
    """Split → [(image path, its captions, its objects as phrases)]: the corpus world, generated
    under `root`."""
    params = read_yaml_mapping(REPO / "configs" / "world-params.yaml", "stage sections")
    section = {**params["synthetic"], "n_images": scenes, "n_object_images": objects, "seed": seed,
               "train_frac": 0.8, "val_frac": 0.05, "test_frac": 0.15}  # fmt: skip
    generate_synthetic(root, from_section(SyntheticConfig, section, "synthetic"))
    out: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
    for name in ("synthetic", "synthetic-objects"):
        dataset = open_dataset(name, root)
        records, _ = dataset.records()
        for r in records:
            held = "train" if r.split == "train" else "held_out"
            images = out.setdefault(held, {})
            if r.image_path not in images:
                images[r.image_path] = ([], object_list(dataset.objects(r.image_id) or ()))
            images[r.image_path][0].append(r.expression)
    return {split: [(path, *v) for path, v in sorted(images.items())]
            for split, images in out.items()}  # fmt: skip


def pixels(root: Path, items: list[tuple[str, list]], size: int, clip: Any) -> torch.Tensor:
    """Every image squashed to size² and normalised as the feature cache does: (n, 3, S, S)."""
    out = torch.empty(len(items), 3, size, size, dtype=torch.float16)
    for i, (path, *_) in enumerate(items):
        with Image.open(root / path) as image:
            out[i] = preprocess_image(np.asarray(image.convert("RGB")), size, clip.mean, clip.std)
    return out


def any_grid(visual: torch.nn.Module) -> None:
    """Let `visual` read any square side: its `_embeds` becomes the trainer's own
    (trainer.network.clip_stages.embed_patches: the positional embedding resized to the grid)."""
    visual._embeds = types.MethodType(embed_patches, visual)


def caption(item: tuple[str, list, list], kind: str, rng: random.Random) -> str:
    """One training caption of an image: a sentence, or (objects, half the draws) its objects."""
    _, sentences, objects = item
    if kind == "objects" and objects and rng.random() < 0.5:
        return ", ".join(rng.sample(objects, len(objects)))
    return rng.choice(sentences)


@torch.no_grad()
def retrieval(model: Any, tokenizer: Any, images: torch.Tensor, items: list, batch: int = 64):
    """Top-1 image→text and text→image accuracy (%) in batches of `batch` held-out images, each
    with its first caption."""
    model.eval()
    batch = min(batch, len(items))
    hits_i, hits_t, n = 0, 0, 0
    for start in range(0, len(items) - batch + 1, batch):
        img = F.normalize(model.encode_image(images[start : start + batch].float()), dim=-1)
        txt = tokenizer([caps[0] for _, caps, _ in items[start : start + batch]])
        txt = F.normalize(model.encode_text(txt), dim=-1)
        sim = img @ txt.T
        target = torch.arange(len(img))
        hits_i += int((sim.argmax(1) == target).sum())
        hits_t += int((sim.argmax(0) == target).sum())
        n += len(img)
    return {"image_to_text": 100 * hits_i / n, "text_to_image": 100 * hits_t / n, "n": n,
            "batch": batch}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Generate the corpus, train, write the checkpoint and the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--corpus-seed", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--captions", choices=("sentences", "objects"), default="sentences")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "clip-corpus"
    data = corpus(root, args.scenes, args.objects, args.corpus_seed)
    reference = build_clip("ppt-tiny-vit", allow_random=True)  # the trainer's random init
    model = reference.model.requires_grad_(True)  # built frozen: trained here
    any_grid(model.visual)
    tokenizer = reference.tokenizer
    train_px = pixels(root, data["train"], args.input_size, reference)
    held_px = pixels(root, data["held_out"], args.input_size, reference)
    log.info("corpus: %d train images, %d held out", len(train_px), len(held_px))
    before = retrieval(model, tokenizer, held_px, data["held_out"])
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    loss_fn = ClipLoss()
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        lr = 0.5 * args.lr * (1 + math.cos(math.pi * (step - 1) / args.steps))
        for group in optim.param_groups:
            group["lr"] = lr
        model.train()
        idx = torch.randperm(len(train_px))[: args.batch_size]
        captions = [caption(data["train"][i], args.captions, rng) for i in idx.tolist()]
        img = F.normalize(model.encode_image(train_px[idx].float()), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps:
            value = float(loss.detach())
            curve.append({"step": step, "loss": value, "s": time.perf_counter() - start})
            log.info("step %d/%d loss %.3f", step, args.steps, value)
    after = retrieval(model, tokenizer, held_px, data["held_out"])
    torch.save(model.state_dict(), args.out / "world-clip.pt")
    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": args.steps,
        "wall_s": round(time.perf_counter() - start, 1),
        "train_images": len(train_px),
        "held_out_images": len(held_px),
        "retrieval_random_init": before,
        "retrieval_trained": after,
        "curve": curve,
    }
    (args.out / "world-clip.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("retrieval, random-init %s → trained %s", before, after)
    return report


if __name__ == "__main__":
    main()
