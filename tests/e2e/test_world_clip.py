"""bench/world_clip.py at a tiny size: the checkpoint is an ordinary ppt-tiny-vit state dict that
the trainer's loader reads, it moved from the random init, training saw the image at the
trainer's input side exactly as the trainer's feature cache reads it, and the alt-text captions
list an image's objects."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from pipeline.models.frozen import build_clip
from tests.helpers import bench_module
from trainer.network.clip_stages import image_stages

world_clip = bench_module("world_clip")


def test_pretrained_checkpoint_loads_and_trained_at_the_trainers_grid(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--scenes", "16", "--objects", "4", "--steps", "3",
            "--batch-size", "8", "--captions", "objects"]  # fmt: skip
    report = world_clip.main(args)
    assert report["steps"] == 3 and len(report["curve"]) == 1  # the last step logged
    assert report["train_images"] + report["held_out_images"] == 20  # 16 scenes + 4 objects
    assert report["retrieval_trained"]["n"] == report["held_out_images"] > 0
    assert json.loads((tmp_path / "world-clip.json").read_text())["steps"] == 3
    # alt-text captions: every object of the image, no place; an object-centric image shows one
    data = world_clip.corpus(tmp_path / "clip-corpus", 16, 4, 1000)  # generated: read back
    items = data["train"] + data["held_out"]
    assert all(objects and all(o.startswith("a ") for o in objects) for _, _, objects in items)
    centred = [objects for path, _, objects in items if "synthetic-objects/" in path]
    assert len(centred) == 4 and all(len(objects) == 1 for objects in centred)
    assert any(" part" in o for _, _, objects in items for o in objects)  # parts are named
    rng = random.Random(0)
    drawn = {world_clip.caption(items[0], "objects", rng) for _ in range(40)}
    assert set(items[0][1]) < drawn  # sentences and object lists, both drawn
    assert {world_clip.caption(items[0], "sentences", rng) for _ in range(40)} <= set(items[0][1])
    random_init = build_clip("ppt-tiny-vit", allow_random=True)
    trained = build_clip("ppt-tiny-vit", checkpoint=tmp_path / "world-clip.pt")
    assert trained.real_weights and trained.weights_id != random_init.weights_id
    moved = [
        name
        for (name, a), (_, b) in zip(
            random_init.model.state_dict().items(), trained.model.state_dict().items(), strict=True
        )
        if not torch.equal(a, b)
    ]
    assert "visual.positional_embedding" in moved and "token_embedding.weight" in moved
    # what training fed the transformer at 224 is what the trainer's stages read at 224
    visual = trained.model.visual
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = image_stages(visual, x, [0])[0]  # block 0's patch tokens, 14 × 14 grid
    world_clip.any_grid(visual)
    assert visual.transformer.batch_first
    with torch.no_grad():
        tokens = visual.transformer.resblocks[0](visual._embeds(x))
    assert tokens.shape[1] == 1 + 14 * 14
    torch.testing.assert_close(tokens[:, 1:].float(), expected)
