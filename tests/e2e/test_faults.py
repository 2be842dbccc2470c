"""Fault injection through the real CLI: kill -9 at random points, two writers at once.

Each chain starts a command, kills its process group with SIGKILL at a seeded random moment, starts
it again, and so on; then lets it finish and compares with an uninterrupted run: the same bytes
(build: the session's `tiny_store`; training: the Select round's files, the weights, the curves;
export: every file). Every kill is printed (`pytest -s`) with where it landed. Byte damage and its
repair are in tests/formats/test_repair.py; fuzzed inputs in tests/unit/test_fuzz_inputs.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.store.lock import LOCK_FILE
from pipeline.store.validate import validate
from tests.helpers import CLI, SAM_VIT_T, TINY_PARAMS, TINY_TRAIN, needs_sam, tree_bytes

STAGE_ORDER = ("samples", "phrases", "encode", "attention", "masks", "points", "split")


def _kill_chain(
    cmd: list[str],
    started: Callable[[], bool],
    rng: random.Random,
    kills: int,
    window: tuple[float, float],
    where: Callable[[], str],
    env: dict[str, str] | None = None,
) -> list[str]:
    """Run `cmd` up to `kills` times, each killed (SIGKILL, whole process group) after a delay
    drawn from `window` seconds past `started()`; stops early when a run finishes by itself.
    Returns one line per kill that landed: its delay and `where()` at that moment."""
    landed = []
    for _ in range(kills):
        proc = subprocess.Popen(cmd, start_new_session=True, env=env,
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


@pytest.mark.parametrize("seed", [0, 1])
def test_random_kills_of_build_resume_to_identical_bytes(
    tmp_path: Path, tiny_root: Path, tiny_store: Path, seed: int
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    store = tmp_path / "store"
    cmd = [CLI, "build", "--dataset", "synthetic", "--data-root", str(tiny_root),
           "--out", str(store), "--params", str(params)]  # fmt: skip
    # The lock file appears when the build starts writing; the build then runs ~30 s here.
    landed = _kill_chain(cmd, (store / LOCK_FILE).exists, random.Random(seed), 5, (0.5, 25.0),
                         _build_where(store))  # fmt: skip
    _report(f"build, seed {seed}", landed)
    assert len(landed) >= 3, "the kills did not land mid-build"
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
    cmd = [CLI, "build", "--dataset", "synthetic", "--data-root", str(tiny_root),
           "--out", str(store), "--params", str(params)]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (store / LOCK_FILE).exists() or not (store / LOCK_FILE).read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 2
    line = second.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert f"pid {first.pid} on " in line and "ppt-labels build" in line, line
    assert "--wait" in line and "since" in line, line
    waiter = subprocess.run([*cmd, "--wait"], capture_output=True, text=True)  # queues behind it
    assert first.wait() == 0, first.stderr.read()
    assert waiter.returncode == 0, waiter.stderr
    assert "waiting for" in waiter.stderr and "up to date" in waiter.stderr, waiter.stderr
    assert validate(store) == []
    assert tree_bytes(store) == tree_bytes(tiny_store)


def _train_cmd(cfg: Path, store: Path, root: Path, out: Path) -> list[str]:
    return [CLI, "train", "--config", str(cfg), "--labels", str(store), "--data-root", str(root),
            "--out", str(out), "--clip-model", "ppt-tiny-vit", "--allow-random-weights",
            "--sam", "vit_t", "--sam-checkpoint", str(SAM_VIT_T), "--device", "cpu"]  # fmt: skip


def _train_where(out: Path, store: Path) -> Callable[[], str]:
    def where() -> str:
        rounds = sorted(p.parent.name for p in (store / "rounds").glob("*/selection.parquet"))
        state = "no checkpoint"
        if (out / "last.pt").exists():
            try:
                ckpt = torch.load(out / "last.pt", weights_only=True)
                state = f"after epoch {ckpt['epoch']}"
            except Exception:  # being replaced at this very moment
                state = "checkpoint being written"
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
        shutil.copytree(tiny_store, store)
        runs[name] = (store, tmp_path / name / "run")
    store, out = runs["whole"]
    started = time.monotonic()
    subprocess.run(_train_cmd(cfg, store, tiny_root, out), check=True, capture_output=True)
    span = time.monotonic() - started
    assert any((store / "rounds").glob("*/selection.parquet")), "no Select round was written"

    store, out = runs["killed"]
    cmd = _train_cmd(cfg, store, tiny_root, out)
    landed = _kill_chain(cmd, lambda: True, random.Random(7), 6, (0.3 * span, 0.95 * span),
                         _train_where(out, store))  # fmt: skip
    _report("train + Select", landed)
    assert len(landed) >= 4
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
    where = lambda: f"{len(list(killed.rglob('*')))} files written"  # noqa: E731
    landed = _kill_chain(export(killed), lambda: True, random.Random(3), 6, (0.5, span), where)
    _report("export", landed)
    assert len(landed) >= 3
    subprocess.run(export(killed), check=True, capture_output=True)
    assert tree_bytes(killed) == tree_bytes(whole)
