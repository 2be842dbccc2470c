"""Per-unit costs behind bench/scale.py --table, each measured in this run for each code tree.

- masks: CPU seconds per SAM prompt (one `prompt_mask` call: one distinct relevance map of an
  image) of the masks stage's own shard function (`pipeline.stages.masks.SPEC.run_shard`, the
  tree's code, in a child process with that tree first on PYTHONPATH) over a built store's real
  maps and real SAM embeddings, after a warm-up pass (SAM loaded once, as a stage process does):
  the shard's wall time less the time inside SAM's prompt encoder and mask decoder (the networks
  a GPU runs; reported apart), i.e. prompt building, upsampling, host copies, agreement, RLE.
- dvc: `dvc add`, `dvc push`, `dvc status` and `status -c` against a local remote, in a fresh
  git + DVC repository, on (a) one 1-byte file, (b) one large file, (c) copies of each tree's
  built store up to `min_files` files. Seconds = start-up + files × per-file + bytes × per-byte,
  fitted to all runs (non-negative least squares).
- loader: samples/s per worker of each tree's trainer loader (`bench/loader_speed.py`'s sides,
  alternating rounds, each side on a store built by its own code), and whether both made the
  same batches (sample ids of every batch; epoch 0's tensors).

    python bench/scale_units.py --child masks STORE REPEATS   # what the masks child runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loader_speed

MASKS_INPUTS = {"ingest": "samples", "split": "split", "encode": "encode", "attention": "attention"}
# name → arguments; `status` (workspace against cache: every file stat'ed) and `status -c`
# (cache against the remote) change nothing, so they are timed REPEATS times, the best kept
DVC_COMMANDS = {"add": ("add", "data"), "push": ("push",), "status": ("status",),
                "status_c": ("status", "-c")}  # fmt: skip
REPEATS = 3


# ----------------------------------------------------------------------------- masks


def masks_child(store: Path, repeats: int) -> None:
    """Time the masks stage's shard function over every shard of `store` (module docstring);
    print one JSON line."""
    from types import SimpleNamespace

    import pipeline.stages.masks as masks

    calls = [0]
    # the prompts (distinct maps) the stage asks SAM for: one a `prompt_mask` call in trees
    # before the batched masks stage (version 2), the maps of each `prompt_masks` call after
    batched = hasattr(masks, "prompt_masks")
    prompt = masks.prompt_masks if batched else masks.prompt_mask

    def counted(rule: str, relevance: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += len(relevance) if batched else 1
        return prompt(rule, relevance, *args, **kwargs)

    setattr(masks, prompt.__name__, counted)
    decoder = [0.0]  # seconds inside SAM's prompt encoder and mask decoder (a GPU's work)
    for module in _sam_modules():
        module.forward = _timed(module.forward, decoder)
    record = json.loads((store / "masks" / "_stage.json").read_text())
    tasks = [
        SimpleNamespace(config=record["config"], inputs={
            stage: str(store / table / shard["name"]) for stage, table in MASKS_INPUTS.items()})
        for shard in record["shards"]
    ]  # fmt: skip
    candidates = sum(len(masks.SPEC.run_shard(t).table) for t in tasks)  # warm-up: SAM loaded
    prompts, calls[0], decoder[0] = calls[0], 0, 0.0
    start = time.perf_counter()
    for _ in range(repeats):
        for task in tasks:
            masks.SPEC.run_shard(task)
    seconds = (time.perf_counter() - start) / repeats
    cpu = seconds - decoder[0] / repeats  # everything but SAM's networks: the CPU's work
    print(json.dumps({"module": masks.__file__, "shards": len(tasks), "candidates": candidates,
                      "prompts": prompts, "seconds": seconds, "decoder_s": decoder[0] / repeats,
                      "cpu_s_per_prompt": cpu / max(prompts, 1),
                      "decoder_s_per_prompt": decoder[0] / repeats / max(prompts, 1)}))  # fmt: skip


def _sam_modules() -> list[Any]:
    """SAM's prompt encoder and mask decoder classes (segment_anything's and MobileSAM's)."""
    import mobile_sam.modeling as mobile
    import segment_anything.modeling as sam

    return [m.MaskDecoder for m in (sam, mobile)] + [m.PromptEncoder for m in (sam, mobile)]


def _timed(forward: Any, total: list[float]) -> Any:
    """`forward` that adds its wall seconds to total[0]."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return forward(self, *args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    return wrapper


def masks_cost(tree: Path, store: Path, repeats: int) -> dict[str, Any]:
    """`masks_child` of `tree`'s code on `store` (built by that tree); its report."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "masks", str(store),
           str(repeats)]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"masks child ({tree}) failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(report["module"]).resolve().parents[2] != tree.resolve():
        raise RuntimeError(f"masks child imported {report['module']}, not {tree}'s")
    return report


# ----------------------------------------------------------------------------- dvc


def _dvc_repo(root: Path, fill: Any) -> dict[str, Any]:
    """A fresh git + DVC repository at `root` with a local remote; `fill(root / "data")`, then
    each command of DVC_COMMANDS timed; files and bytes of data/."""
    dvc = str(Path(sys.executable).parent / "dvc")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"],
                [dvc, "config", "core.analytics", "false"],
                [dvc, "remote", "add", "-d", "local", str(root) + "-remote"]):  # fmt: skip
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    fill(root / "data")
    files = [p for p in (root / "data").rglob("*") if p.is_file()]
    out: dict[str, Any] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    for name, args in DVC_COMMANDS.items():
        seconds = []
        for _ in range(REPEATS if args[0] == "status" else 1):
            start = time.perf_counter()
            subprocess.run([dvc, *args, "-q"], cwd=root, check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        out[name] = min(seconds)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(str(root) + "-remote", ignore_errors=True)
    return out


def dvc_costs(
    stores: dict[str, Path], scratch: Path, min_files: int, big_mb: int
) -> dict[str, Any]:
    """Seconds of each DVC command = start-up + files × a file + bytes × a byte, fitted
    (non-negative least squares) to runs on one tiny file, one large file and each store's copies
    (module docstring): DVC's cost a file is its own, whatever the layout that makes the files."""
    from scipy.optimize import nnls

    def tiny(data: Path) -> None:
        data.mkdir()
        (data / "one").write_bytes(b"1")

    def big(data: Path) -> None:
        data.mkdir()
        with (data / "big").open("wb") as handle:
            for _ in range(big_mb):
                handle.write(os.urandom(2**20))

    runs = {"tiny": _dvc_repo(scratch / "tiny", tiny), "big": _dvc_repo(scratch / "big", big)}
    for label, store in stores.items():
        copies = max(1, math.ceil(min_files / sum(1 for p in store.rglob("*") if p.is_file())))

        def replicate(data: Path, store: Path = store, copies: int = copies) -> None:
            for i in range(copies):  # hard links: DVC reads and caches them as files
                shutil.copytree(store, data / f"copy-{i:03d}", copy_function=os.link)

        runs[label] = {"copies": copies, **_dvc_repo(scratch / label, replicate)}
    design = np.array([[1.0, r["files"], r["bytes"] / 1e9] for r in runs.values()])
    fit = {}
    for command in DVC_COMMANDS:
        coef, _ = nnls(design, np.array([r[command] for r in runs.values()]))
        fit[command] = dict(zip(("startup_s", "file_s", "gb_s"), map(float, coef), strict=True))
    return {"runs": runs, "fit": fit}


def dvc_seconds(costs: dict[str, Any], files: float, size: float) -> dict[str, float]:
    """Projected seconds of each DVC command on `files` files of `size` bytes in all."""
    return {
        c: f["startup_s"] + files * f["file_s"] + size / 1e9 * f["gb_s"]
        for c, f in costs["fit"].items()
    }


# ----------------------------------------------------------------------------- loader


def loader_rates(
    trees: dict[str, Path], stores: dict[str, Path], data_root: Path, work: Path,
    splits: tuple[str, ...], epochs: int, batch: int, rounds: int,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each tree's loader report (bench/loader_speed.py `child`), best of `rounds` alternating."""
    args = argparse.Namespace(stores=stores, data_root=data_root, epochs=epochs, batch=batch,
                              splits=splits)  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    reports: dict[str, dict[str, Any]] = {label: {} for label in trees}
    for _ in range(rounds):
        for label, tree in trees.items():
            side = loader_speed.run_side(label, tree, args, work)
            reports[label] = loader_speed.best(reports[label], side)
    out = {label: {k: v for k, v in r.items() if k != "ids"} for label, r in reports.items()}
    if set(reports) == {"old", "new"}:  # the same batches: sample ids, epoch 0's tensors
        same = reports["old"]["ids"] == reports["new"]["ids"]
        out["new"]["same_batches"] = {"ids": same, **loader_speed.compare_tensors(work)}
    return out


if __name__ == "__main__":
    if sys.argv[1:3] == ["--child", "masks"]:
        masks_child(Path(sys.argv[3]), int(sys.argv[4]))
