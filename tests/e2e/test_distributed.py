"""Data-parallel training on CPU: `torchrun --nproc_per_node 2` (gloo) against one process.

Two epochs of TINY_TRAIN on the 24-image synthetic store, with dropout 0 (dropout draws differ
between world sizes, so no two world sizes could agree with it on) and a Select round before the
second epoch. The two ranks must end on the one process's weights within float rounding
(ATOL below), write the same round, write each checkpoint once (rank 0), and read disjoint shares
of every batch; a checkpoint of either world size resumes in the other to the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.store.rounds import selection_path
from tests.helpers import REPO, SAM_VIT_T, TINY_TRAIN, copy_store, needs_sam
from trainer.config import config_from_dict

pytestmark = pytest.mark.slow

CONFIG = {**TINY_TRAIN, "model": {**TINY_TRAIN["model"], "dropout": 0.0}}
# Two ranks sum a batch's gradients in another order than one process: float32 rounding only
# (measured max |Δ| 1.2e-7 over the parameters below, after 24 Adam steps).
ATOL = 1e-5
# Except attention's key biases (in_proj_bias[D:2D]): softmax ignores a shift shared by all keys,
# so their gradient is 0 in exact arithmetic and float noise, which Adam scales up to steps of
# about lr, is all they learn (measured |Δ| 3e-4 — as large as their values). Left out.


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Max |a - b| over every parameter, attention key biases excepted (see ATOL)."""
    assert a.keys() == b.keys()
    diffs = []
    for k in a:
        d = (a[k] - b[k]).abs()
        if k.endswith("attn.in_proj_bias"):  # (3 D,): query, key, value biases
            dim = len(d) // 3
            d = torch.cat([d[:dim], d[2 * dim :]])
        diffs.append(float(d.max()))
    return max(diffs)


# torchrun runs this instead of `-m cli.main`: the same CLI app, called in one launch (starting
# processes is the largest cost here) for each of the two commands that "--then" separates, with
# spies that record, one JSON line per call and rank, which rank saves checkpoints (keeping epoch
# 1's of the first run), writes rounds and reads which samples.
SPY = """
import json, os, shutil, sys
import torch.distributed as dist
from cli.main import app
from trainer.loop import curriculum, engine, select

log = open(os.environ["SPY_LOG"] + "." + os.environ["RANK"], "a")
save, write_round, to_device = curriculum.save_checkpoint, select.write_round, engine.to_device

def record(**call):
    log.write(json.dumps(call) + "\\n")
    log.flush()

def spied_save(path, state):
    save(path, state)
    record(save=state["epoch"])
    if state["epoch"] == 1 and not os.path.exists(os.environ["KEEP"]):
        shutil.copy(path, os.environ["KEEP"])

def spied_round(root, k, *args):
    record(round=k)
    write_round(root, k, *args)

def spied_batch(batch, device):
    record(batch=[list(key) for key in batch["key"]])
    return to_device(batch, device)

curriculum.save_checkpoint, select.write_round = spied_save, spied_round
engine.to_device = spied_batch
# The first run's CLI joins the process group; it is kept for the second (gloo's re-joining in
# one launch races on the rendezvous keys of the first).
destroy, dist.destroy_process_group = dist.destroy_process_group, lambda: None
args = sys.argv[1:]
for i, command in enumerate((args[: args.index("--then")], args[args.index("--then") + 1 :])):
    record(run=i)
    app(command, prog_name="ppt-labels", standalone_mode=False)
destroy()
"""


def _cli(config: Path, store: Path, root: Path, out: Path, cache: Path) -> list[str]:
    return ["train", "--config", str(config), "--labels", str(store), "--data-root", str(root),
            "--out", str(out), "--cache-dir", str(cache), "--device", "cpu",
            "--sam-checkpoint", str(SAM_VIT_T), "--allow-random-weights"]  # fmt: skip


def _torchrun(entry: list[str], args: list[str], env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", *entry, *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _selection(store: Path) -> list[dict]:
    return pq.read_table(selection_path(store, 1)).to_pylist()


def _same_selection(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        for k in ("sample_id", "cand_idx", "kept", "threshold", "round"):
            assert x[k] == y[k], (k, x, y)
        assert x["confidence"] == pytest.approx(y["confidence"], abs=1e-4)
        assert x["overlap"] == pytest.approx(y["overlap"], abs=1e-4)


@needs_sam
def test_two_ranks_train_as_one_process_and_resume_across_world_sizes(
    tmp_path: Path, store_copy: Path, synthetic_root: Path, tiny_clip, sam_t, monkeypatch
) -> None:
    from trainer.loop import curriculum
    from trainer.loop.runner import train

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    cache = tmp_path / "cache"
    cfg = config_from_dict(CONFIG)
    from_one, from_two = tmp_path / "from-one", tmp_path / "from-two"
    from_one.mkdir(), from_two.mkdir()
    kept = tmp_path / "two-epoch-1.pt"

    def run_one(out: Path) -> None:
        # one thread, as each torchrun rank (OMP_NUM_THREADS=1): on 2 busy cores more only contend
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train(cfg, [store_copy], [synthetic_root], out, tiny_clip, sam_t,
                  torch.device("cpu"), cache)  # fmt: skip
        finally:
            torch.set_num_threads(threads)

    # One process, uninterrupted; its checkpoint of epoch 1 is kept for the 2-rank resume.
    real_save = curriculum.save_checkpoint

    def save_and_keep(path: Path, state: dict) -> None:
        real_save(path, state)
        if state["epoch"] == 1:
            shutil.copy(path, from_one / "last.pt")

    monkeypatch.setattr(curriculum, "save_checkpoint", save_and_keep)
    one = tmp_path / "one"
    run_one(one)
    monkeypatch.undo()
    selection = _selection(store_copy)

    # Two ranks through the CLI with the spies, in one launch: (0) uninterrupted, keeping its
    # epoch 1; (1) resuming the one process's epoch 1, on a store copy of its own (rounds).
    (tmp_path / "spy.py").write_text(SPY)
    store_two = tmp_path / "store-two"
    copy_store(store_copy, store_two)
    two, log = tmp_path / "two", tmp_path / "calls"
    args = [*_cli(config, store_copy, synthetic_root, two, cache), "--then",
            *_cli(config, store_two, synthetic_root, from_one, cache)]  # fmt: skip
    _torchrun([str(tmp_path / "spy.py")], args, {"SPY_LOG": str(log), "KEEP": str(kept)})
    diff = _max_diff(_weights(one), _weights(two))
    print(f"2 ranks vs 1 process: max |Δ| {diff:.3g}")
    assert diff <= ATOL
    _same_selection(_selection(store_copy), selection)
    diff = _max_diff(_weights(one), _weights(from_one))
    print(f"1-process epoch 1 resumed in 2 ranks: max |Δ| {diff:.3g}")
    assert diff <= ATOL
    _same_selection(_selection(store_two), selection)

    calls = [_runs(Path(f"{log}.{r}")) for r in (0, 1)]
    assert [c["save"] for c in calls[0][0] if "save" in c] == [1, 2]  # rank 0, once an epoch
    assert [c["save"] for c in calls[0][1] if "save" in c] == [2]
    assert [c["round"] for run in calls[0] for c in run if "round" in c] == [1, 1]
    assert not [c for run in calls[1] for c in run if "save" in c or "round" in c]
    # Each rank reads its own share: in every step (training, Select, evaluation) the two
    # ranks' samples are disjoint (an 8-sample batch splits 4 / 4; no batch here is < 2).
    for rank0, rank1 in zip(calls[0], calls[1], strict=True):
        steps = [[c["batch"] for c in run if "batch" in c] for run in (rank0, rank1)]
        assert len(steps[0]) == len(steps[1]) > 0
        for a, b in zip(*steps, strict=True):
            assert not {tuple(k) for k in a} & {tuple(k) for k in b}
    metrics = json.loads((one / "metrics.json").read_text())
    assert json.loads((two / "metrics.json").read_text())["epochs"] == metrics["epochs"] == 2

    # Epoch 1 of two ranks resumes in one process.
    shutil.copy(kept, from_two / "last.pt")
    run_one(from_two)
    diff = _max_diff(_weights(one), _weights(from_two))
    print(f"2-rank epoch 1 resumed in 1 process: max |Δ| {diff:.3g}")
    assert diff <= ATOL
    _same_selection(_selection(store_copy), selection)


def _runs(log: Path) -> list[list[dict]]:
    """A rank's spy records, one list per CLI run."""
    runs: list[list[dict]] = []
    for line in log.read_text().splitlines():
        call = json.loads(line)
        if "run" in call:
            runs.append([])
        else:
            runs[-1].append(call)
    return runs


def test_ranks_split_every_global_batch_into_contiguous_shares() -> None:
    from torch.utils.data import BatchSampler, SequentialSampler

    from trainer.loop.distributed import RankBatches

    batches = BatchSampler(SequentialSampler(range(11)), 8, drop_last=False)  # 8 + 3
    shares = [list(RankBatches(batches, rank, 3)) for rank in range(3)]
    assert shares == [[[0, 1, 2], [8]], [[3, 4, 5], [9]], [[6, 7], [10]]]
    # a global batch smaller than the world: the empty rank repeats its first sample
    tail = BatchSampler(SequentialSampler(range(9)), 8, drop_last=False)
    assert [list(RankBatches(tail, rank, 2))[-1] for rank in (0, 1)] == [[8], [8]]
