"""Training checkpoints: written after every epoch, temp-then-rename, read with weights_only=True.

A checkpoint holds only tensors, primitives, lists and dicts (so `torch.load(weights_only=True)`
reads it):

    model       the point generator's state dict (the frozen CLIP and SAM are named by "models")
    optimizer   optimizer.state_dict();  scheduler: scheduler.state_dict()
    epoch       epochs completed over the whole curriculum; stage, round: where they ended
    config      the TrainConfig as a dict
    stores      [{root, data_root, manifest_sha256}] of the label stores trained on
    models      {"clip": {model, weights}, "sam": {variant, weights}}
    selections  {store index (str): {sample_id: cand_idx}} of the latest Select round, or None
    history     the per-epoch curve rows so far
    rng         torch CPU (and CUDA) generator states: dropout resumes where it stopped

`last.pt` in the run directory is the latest; resume reads it and the run continues to the same
final weights as an uninterrupted one. Under torchrun rank 0 alone writes it, holding the
unwrapped generator's weights, so a checkpoint resumes on any number of ranks (each rank then
reseeds its dropout per epoch: `trainer.loop.curriculum`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.weights import load_tensors
from pipeline.store.shards import remove_leftovers
from trainer.config import TrainConfig, config_to_dict

log = logging.getLogger(__name__)

LAST = "last.pt"
FORMAT = 1  # bump when the layout changes


def generator_of(model: nn.Module) -> nn.Module:
    """The point generator of a PointPromptModel, unwrapped from DDP if wrapped."""
    gen = model.generator
    return getattr(gen, "module", gen)


def rng_state() -> dict[str, Any]:
    """The torch generator states (CPU, and every CUDA device when present)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`'s states (CUDA only where both sides have it)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (see the module docstring) to `path`, temp-then-rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)  # of a killed run
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": FORMAT, **state}, tmp)
    tmp.replace(path)


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    epoch: int,
    stage: str,
    round_index: int,
    config: dict[str, Any],
    stores: list[dict[str, str]],
    models: dict[str, Any],
    selections: dict[int, dict[str, int]] | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The checkpoint dict of a run after `epoch` completed epochs."""
    return {
        "model": generator_of(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "stage": stage,
        "round": round_index,
        "config": config,
        "stores": stores,
        "models": models,
        "selections": None
        if selections is None
        else {str(k): dict(v) for k, v in selections.items()},
        "history": history,
        "rng": rng_state(),
    }


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (weights_only: no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--checkpoint {path}: no such file (a run writes <out>/{LAST})")
    state = load_tensors(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: not a ppt-labels training checkpoint of format {FORMAT}; retrain or use "
            "the ppt-labels version that wrote it"
        )
    return state


def restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    """Load model, optimizer, scheduler and RNG states from a checkpoint dict."""
    generator_of(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])


def check_stores(state: dict[str, Any], stores: list[dict[str, str]]) -> None:
    """Refuse to resume on label stores other than the checkpoint's."""
    before = [s["manifest_sha256"] for s in state["stores"]]
    now = [s["manifest_sha256"] for s in stores]
    if before != now:
        raise ConfigError(
            "the label stores differ from the ones this checkpoint trained on (manifest sha256): "
            "pass the same --labels in the same order, or --no-resume to start over"
        )


# run-time settings a resumed run may change: they do not change what the run computes
RESUMABLE_CHANGES = {("optim", "num_workers"), ("data", "eval_every")}


def check_config(state: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to resume under another config than the checkpoint's: the run would not reach the
    same weights, or (another architecture) not even load them. A key the checkpoint's config
    lacks (added to the code since) reads as its default."""
    before, defaults = state["config"], config_to_dict(TrainConfig())

    def old(section: str, key: str) -> Any:
        values = before.get(section, {})
        return values[key] if key in values else defaults.get(section, {}).get(key)

    changed = [
        f"{section}.{key}: {old(section, key)!r} -> {value!r}"
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if (section, key) not in RESUMABLE_CHANGES and old(section, key) != value
    ]
    if changed:
        raise ConfigError(
            "this run's checkpoint was made under another config (" + "; ".join(changed) + "): "
            "use the checkpoint's config, another --out, or --no-resume to start over"
        )
