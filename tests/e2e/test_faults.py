"""Fault injection through the real CLI: kill -9 at random points, two writers at once.

Each chain starts a command, kills its process group with SIGKILL at a seeded random moment, starts
it again, and so on; then lets it finish and compares with an uninterrupted run: the same bytes
(build: the session's `tiny_store`; training: the Select round's files, the weights, the curves;
export: every file). Every kill is printed (`pytest -s`) with where it landed. Byte damage and its
repair are in tests/formats/test_repair.py; fuzzed inputs in tests/unit/test_fuzz_inputs.py.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from pipeline.store.lock import LOCK_FILE
from pipeline.store.validate import validate
from tests.helpers import CLI, SAM_VIT_T, TINY_PARAMS, TINY_TRAIN, copy_store, needs_sam, tree_bytes

STAGE_ORDER = (
    "samples",
    "phrases",
    "split",
    "encode",
    "attention",
    "masks",
    "points",
)  # build order


def _kill_chain(
    cmd: list[str],
    started: Callable[[], bool],
    rng: random.Random,
    kills: int,
    window: tuple[float, float],
    where: Callable[[], str],
    stop_when_done: bool = True,
) -> list[str]:
    """Run `cmd` up to `kills` times, each killed (SIGKILL, whole process group) after a delay
    drawn from `window` seconds past `started()`; a run that finishes first ends the chain
    (unless not `stop_when_done`: then the next run goes over the finished output).
    Returns one line per kill that landed: its delay and `where()` at that moment."""
    landed = []
    for _ in range(kills):
        proc = subprocess.Popen(cmd, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 300
        while not started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        delay = rng.uniform(*window)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            context = where()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            landed.append(f"killed {delay:5.2f}s in: {context}")
            continue
        if stop_when_done:
            break  # finished before the kill: the chain is over
    return landed


def _report(name: str, landed: list[str]) -> None:
    print(f"\n{name}: {len(landed)} kills")
    for line in landed:
        print(f"  {line}")


def _build_where(store: Path) -> Callable[[], str]:
    def where() -> str:
        done = [t for t in STAGE_ORDER if (store / t / "_stage.json").exists()]
        running = next((t for t in STAGE_ORDER if t not in done), "finalize")
        parts = sorted(p.name for p in (store / running).glob("part-*.parquet"))
        return f"{running} ({len(parts)} shards written)"

    return where


def _after_random_shards(
    cmd: list[str], store: Path, shard_files: list[str], rng: random.Random, kills: int
) -> list[str]:
    """Kill `cmd` 0–0.5 s after a shard file it has yet to write appears: drawn from the next
    1/kills-left of those not on disk yet, so each kill lands past the last one's progress and
    the kills spread over the stages."""
    landed: list[str] = []
    for left in range(kills, 0, -1):
        remaining = [f for f in shard_files if not (store / f).exists()]
        if not remaining:
            break
        marker = store / rng.choice(remaining[: max(1, len(remaining) // left)])
        landed += _kill_chain(cmd, marker.exists, rng, 1, (0.0, 0.5), _build_where(store))
    return landed


def test_random_kills_of_build_resume_to_identical_bytes(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    seed = 0
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    store = tmp_path / "store"
    cmd = [CLI, "build", "--dataset", "synthetic", "--data-root", str(tiny_root),
           "--out", str(store), "--params", str(params)]  # fmt: skip
    shard_files = [f"{t}/{p.name}" for t in STAGE_ORDER
                   for p in sorted((tiny_store / t).glob("part-*.parquet"))]  # fmt: skip
    landed = _after_random_shards(cmd, store, shard_files, random.Random(seed), 6)
    _report(f"build, seed {seed}", landed)
    assert len(landed) >= 5, "the kills did not land mid-build"
    if not (store / "manifest.json").exists():
        assert validate(store)  # an interrupted store is reported incomplete, never valid
    subprocess.run(cmd, check=True, capture_output=True)
    assert tree_bytes(store) == tree_bytes(tiny_store), f"seed {seed}: {landed}"


def test_two_writers_one_fails_with_the_holder_one_waits(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    store = tmp_path / "store"
    copy_store(tiny_store, store)
    common = ["--dataset", "synthetic", "--data-root", str(tiny_root), "--params", str(params)]
    # The first writer recomputes the masks stage (seconds of SAM decoding) under the lock.
    stage = [CLI, "stage", "masks", "--store", str(store), "--force", *common]
    first = subprocess.Popen(stage, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (store / LOCK_FILE).read_text():
        assert time.monotonic() < deadline and first.poll() is None, "the lock was never taken"
        time.sleep(0.02)
    build = [CLI, "build", "--out", str(store), *common]
    second = subprocess.run(build, capture_output=True, text=True)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    (line,) = [x for x in second.stderr.splitlines() if x.startswith("error:")]
    assert f"pid {first.pid} on " in line and "ppt-labels stage masks" in line, line
    assert "--wait" in line and "since" in line, line
    waiter = subprocess.run([*build, "--wait"], capture_output=True, text=True)  # queues behind
    assert first.wait() == 0, first.stderr.read()
    assert waiter.returncode == 0, waiter.stderr
    assert "waiting for pid" in waiter.stderr and "up to date" in waiter.stderr, waiter.stderr
    assert validate(store) == []
    assert tree_bytes(store) == tree_bytes(tiny_store)


def _train_cmd(cfg: Path, store: Path, root: Path, out: Path) -> list[str]:
    return [CLI, "train", "--config", str(cfg), "--labels", str(store), "--data-root", str(root),
            "--out", str(out), "--clip-model", "ppt-tiny-vit", "--allow-random-weights",
            "--sam", "vit_t", "--sam-checkpoint", str(SAM_VIT_T), "--device", "cpu"]  # fmt: skip


def _written_since(path: Path, t0: float) -> bool:
    try:
        return path.stat().st_mtime > t0
    except FileNotFoundError:
        return False


# Moments of a training run after which a kill lands (0–2 s later), in run order; t0 is when this
# (re)started run began, so "a checkpoint" is the next epoch's, wherever the run resumed from.
TRAIN_EVENTS: dict[str, Callable[[Path, Path, float], bool]] = {
    "start": lambda out, store, t0: True,
    "feature cache built": lambda out, store, t0: any(out.glob("feature_cache/*/done.json")),
    "a checkpoint written": lambda out, store, t0: _written_since(out / "last.pt", t0),
    "Select round 1 written": lambda out, store, t0: _written_since(
        store / "rounds" / "1" / "report.json", t0
    ),
}


def _train_where(out: Path, store: Path) -> Callable[[], str]:
    def where() -> str:
        rounds = sorted(p.parent.name for p in (store / "rounds").glob("*/selection.parquet"))
        try:
            state = f"after epoch {torch.load(out / 'last.pt', weights_only=True)['epoch']}"
        except Exception:  # absent, or being replaced at this very moment
            state = "no readable checkpoint"
        cache = "cache built" if any(out.glob("feature_cache/*/done.json")) else "cache not built"
        return f"{state}, {cache}, rounds written: {rounds or 'none'}"

    return where


@needs_sam
def test_random_kills_of_training_and_select_resume_to_the_same_run(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    config = {**TINY_TRAIN, "curriculum": {**TINY_TRAIN["curriculum"], "refinement_rounds": 1,
                                           "refinement_epochs": 1}}  # fmt: skip
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config))
    runs = {}
    for name in ("whole", "killed"):
        store = tmp_path / name / "store"
        copy_store(tiny_store, store)
        runs[name] = (store, tmp_path / name / "run")
    store, out = runs["whole"]
    subprocess.run(_train_cmd(cfg, store, tiny_root, out), check=True, capture_output=True)
    assert any((store / "rounds").glob("*/selection.parquet")), "no Select round was written"

    store, out = runs["killed"]
    cmd = _train_cmd(cfg, store, tiny_root, out)
    rng = random.Random(7)
    names = list(TRAIN_EVENTS)
    landed = []
    for name in sorted(rng.choices(names, k=6), key=names.index):  # a repeat: killed there twice
        t0 = time.time()
        event = functools.partial(TRAIN_EVENTS[name], out, store, t0)
        lines = _kill_chain(cmd, event, rng, 1, (0.0, 2.0), _train_where(out, store))
        landed += [f"{line} (after: {name})" for line in lines]
    _report("train + Select", landed)
    assert len(landed) >= 5
    subprocess.run(cmd, check=True, capture_output=True)

    (a_store, a_out), (b_store, b_out) = runs["whole"], runs["killed"]
    assert tree_bytes(a_store / "rounds") == tree_bytes(b_store / "rounds")
    assert (a_out / "curves.csv").read_bytes() == (b_out / "curves.csv").read_bytes()
    a, b = (json.loads((o / "metrics.json").read_text()) for o in (a_out, b_out))
    assert {**a, "wall_s": 0} == {**b, "wall_s": 0}
    wa, wb = (torch.load(o / "last.pt", weights_only=True)["model"] for o in (a_out, b_out))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list(b_out.glob(".*.tmp-*")) and not list(b_store.rglob(".*.tmp-*"))


def test_random_kills_of_export_give_the_same_files(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    def export(out: Path) -> list[str]:
        return [CLI, "labels", "export", str(tiny_store), "--format", "refer", "--out", str(out),
                "--data-root", str(tiny_root), "--images", "copy"]  # fmt: skip

    whole = tmp_path / "whole"
    started = time.monotonic()
    subprocess.run(export(whole), check=True, capture_output=True)
    span = time.monotonic() - started
    killed = tmp_path / "killed"

    def where() -> str:
        names = sorted(p.name for p in killed.iterdir()) if killed.exists() else []
        return f"{len(list(killed.glob('images/*')))} images placed; top level: {names}"

    # An export spends most of its life starting up and writes for milliseconds at the end:
    # the kills aim around the end of an uninterrupted run's time; runs that finish first are
    # re-exports over a finished export, and the chain goes on.
    landed = _kill_chain(export(killed), lambda: True, random.Random(3), 10,
                         (0.5 * span, 1.1 * span), where, stop_when_done=False)  # fmt: skip
    _report("export", landed)
    assert len(landed) >= 3
    # what a kill inside the write leaves: a temporary and a half-copied image
    (killed / "images").mkdir(parents=True, exist_ok=True)
    (killed / ".refs(ppt).p.tmp-99999").write_bytes(b"half a pickle")
    image = next((whole / "images").iterdir())
    (killed / "images" / image.name).write_bytes(image.read_bytes()[:100])
    subprocess.run(export(killed), check=True, capture_output=True)
    assert tree_bytes(killed) == tree_bytes(whole)
