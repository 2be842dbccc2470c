"""Bench: glibc's malloc keeping freed memory (`pipeline.models.runtime.keep_freed_memory`)
against its defaults, on the commands a user runs: `ppt-labels build` of the synthetic world
(SAM encode + masks) and a short `ppt-labels train` of configs/cpu-small.yaml (SAM decodes its
points at evaluation; its mask loss is off, as in every CPU run).

Each command runs as its own process, once with the setting and once with
PPT_KEEP_FREED_MEMORY=0 (glibc's defaults), taking turns (which goes first alternates each round)
so both see the same machine load; every round builds into a fresh directory with its own
embedding cache. Printed per command and mode: wall seconds, user and system CPU seconds, minor
page faults and peak RSS (from the child's own rusage), the wall ratio, and whether the two
modes' stores and training metrics are the same bytes (they must be: only where freed memory
goes changes).

    .venv/bin/python bench/malloc_speed.py [--scenes 8] [--rounds 2] [--out DIR]

CPU timings on a shared machine move with its load: compare the numbers of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from scale import run_child

from pipeline.core.hashing import sha256_file, sha256_tree

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("ppt-labels"))
MODES = {"kept": {}, "default": {"PPT_KEEP_FREED_MEMORY": "0"}}
STAGE_LINE = re.compile(r"pipeline\.stages\.runner: (\w+): .* in ([\d.]+)s$")
# configs/cpu-small.yaml with a 5-epoch curriculum
TRAIN = {
    "curriculum": {
        "semantic_epochs": 2,
        "ris_epochs_before_select": 1,
        "ris_epochs": 1,
        "refinement_rounds": 1,
        "refinement_epochs": 1,
    },
    "data": {"eval_splits": ["val"]},
}


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run `cmd`; its wall time, its own rusage (CPU seconds, minor faults, peak RSS) and the
    seconds of each stage its log reports."""
    wall, usage, stderr = run_child(cmd, REPO, {**os.environ, **env})
    stages = {m[1]: float(m[2]) for m in map(STAGE_LINE.search, stderr.splitlines()) if m}
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "minor_faults": usage.ru_minflt, "peak_rss_mb": usage.ru_maxrss / 1024,
            **{f"{stage}_s": seconds for stage, seconds in stages.items()}}  # fmt: skip


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> str:
    """`sha256_tree` of `root` with the contents of files named in `skip` left out."""
    return sha256_tree(root, lambda p: "" if p.name in skip else sha256_file(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="malloc-speed-"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthetic"].update(n_images=args.scenes)
    (out / "params.yaml").parent.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    config = yaml.safe_load((REPO / "configs" / "cpu-small.yaml").read_text())
    for section, values in TRAIN.items():
        config[section].update(values)
    (out / "train.yaml").write_text(yaml.safe_dump(config))
    data = out / "data"
    if not (data / "refs(unc).p").exists():
        synthesize = [CLI, "synthesize", "--out", str(data), "--params", str(out / "params.yaml")]
        subprocess.run(synthesize, check=True, capture_output=True)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    digests: dict[str, dict[str, set[str]]] = {}
    for r in range(args.rounds):
        order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
        for mode in order:
            where = out / f"{mode}-{r}"
            shutil.rmtree(where, ignore_errors=True)
            store, run = where / "labels" / "synthetic", where / "run"
            commands = {
                "build": [CLI, "build", "--dataset", "synthetic", "--data-root", str(data),
                          "--out", str(store), "--params", str(out / "params.yaml")],
                "train": [CLI, "train", "--config", str(out / "train.yaml"), "--labels",
                          str(store), "--data-root", str(data), "--out", str(run), "--sam",
                          "vit_t", "--sam-checkpoint", str(params["encode"]["sam_checkpoint"]),
                          "--allow-random-weights"],
            }  # fmt: skip
            for name, cmd in commands.items():
                got = timed(cmd, MODES[mode])
                results.setdefault(name, {}).setdefault(mode, []).append(got)
                print(f"round {r} {name:5s} {mode:7s} " + ", ".join(
                    f"{k} {v:.6g}" for k, v in got.items()), flush=True)  # fmt: skip
            metrics = {**json.loads((run / "metrics.json").read_text()), "wall_s": 0}
            outputs = {
                "build": tree_digest(where / "labels", skip=("manifest.json",)),
                "train": tree_digest(run, skip=("last.pt", "metrics.json")) + str(metrics),
            }
            for name, value in outputs.items():
                digests.setdefault(name, {}).setdefault(mode, set()).add(value)
    report = {}
    print("\n| command | mode | wall s (best) | encode s | masks s | user s | sys s | minor faults "
          "| peak RSS MB |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, modes in results.items():
        best = {mode: min(runs, key=lambda x: x["wall_s"]) for mode, runs in modes.items()}
        for mode, b in best.items():
            stages = " | ".join(f"{b[k]:.1f}" if k in b else "" for k in ("encode_s", "masks_s"))
            cpu = f"{b['user_s']:.1f} | {b['sys_s']:.1f} | {b['minor_faults']:,}"
            rss = f"{b['peak_rss_mb']:.0f}"
            print(f"| {name} | {mode} | {b['wall_s']:.1f} | {stages} | {cpu} | {rss} |")
        same = len(digests[name]["kept"] | digests[name]["default"]) == 1
        ratio = best["default"]["wall_s"] / best["kept"]["wall_s"]
        report[name] = {"best": best, "runs": modes, "speedup": ratio, "same_bytes": same}
    for name, r in report.items():
        print(f"{name}: default / kept wall = {r['speedup']:.2f}x; same bytes: {r['same_bytes']}")
    (out / "malloc_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'malloc_speed.json'}")


if __name__ == "__main__":
    main()
