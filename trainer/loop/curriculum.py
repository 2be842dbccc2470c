"""The curriculum (DESIGN §6): an outer loop over stage specs calling train_one_epoch / evaluate.

Phases, from `CurriculumConfig` (`curriculum_phases`):

    semantic      H_sem ∪ D_sem
    ris_pre       H_sem ∪ D_sem ∪ D_ref                       → θ_refD
    ris           Select round 1 on H_ref with θ_refD, then H_sem ∪ D_sem ∪ D_ref ∪ H_ref'
    refine_i      Select round i + 1 with θ^(i-1), then H_ref^(i) ∪ H_sem       (i = 1..R)

A subset a store set lacks (refer stores have no D_*, ImageNet stores only D_sem) is left out
with a log line; a phase left with no samples, or with zero epochs, is skipped. Epochs are
counted over the whole curriculum, so the learning-rate schedule and resuming depend only on the
global epoch: a checkpoint after epoch e resumes at e + 1, re-running a phase's Select only when
it had not run yet (else the checkpoint's selection is reused).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.models.frozen import FrozenSam
from trainer.config import CurriculumConfig
from trainer.data.loaders import TrainingData
from trainer.data.samples import SUBSETS, collect_samples, subset_counts
from trainer.loop.checkpoint import LAST, save_checkpoint, training_state
from trainer.loop.distributed import is_main_process, rank_and_world
from trainer.loop.engine import needs_masks, train_one_epoch
from trainer.loop.select import select
from trainer.loss.criterion import SetCriterion
from trainer.network.prompt_model import PointPromptModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One stage spec of the curriculum."""

    name: str  # semantic | ris_pre | ris | refine_<i>
    stage: str  # semantic | ris | refinement (the paper's three stages)
    subsets: tuple[str, ...]  # training subsets; H_ref means "as selected by the last round"
    epochs: int
    select_round: int = 0  # k > 0: run Select round k on H_ref before the first epoch
    threshold: float = 0.5  # Select's overlap threshold
    unselected: bool = False  # H_ref trains with its candidates unlabelled (c unknown), no Select


def curriculum_phases(cfg: CurriculumConfig) -> list[Phase]:
    """The phases of DESIGN §6 with the configured epochs (module docstring), less the
    excluded subsets; with `joint`, one phase over every subset for all the epochs."""
    if cfg.joint:
        subsets = tuple(s for s in SUBSETS if s not in cfg.exclude_subsets)
        total = (
            cfg.semantic_epochs + cfg.ris_epochs_before_select + cfg.ris_epochs
            + cfg.refinement_rounds * cfg.refinement_epochs
        )  # fmt: skip
        return [Phase("joint", "joint", subsets, total, unselected=True)]
    phases = [
        Phase("semantic", "semantic", ("H_sem", "D_sem"), cfg.semantic_epochs),
        Phase("ris_pre", "ris", ("H_sem", "D_sem", "D_ref"), cfg.ris_epochs_before_select),
        Phase(
            "ris",
            "ris",
            ("H_sem", "D_sem", "D_ref", "H_ref"),
            cfg.ris_epochs,
            1,
            cfg.select_threshold,
        ),
    ]
    for i in range(1, cfg.refinement_rounds + 1):
        phases.append(
            Phase(
                f"refine_{i}",
                "refinement",
                ("H_ref", "H_sem"),
                cfg.refinement_epochs,
                i + 1,
                cfg.select_threshold,
            )
        )
    keep = [
        dataclasses.replace(p, subsets=tuple(s for s in p.subsets if s not in cfg.exclude_subsets))
        for p in phases
    ]
    return [p for p in keep if p.subsets]


@dataclass
class RunState:
    """What the curriculum carries between epochs (and what a checkpoint restores)."""

    epoch: int = 0  # epochs completed over the whole curriculum
    selections: dict[int, dict[str, int]] | None = None  # latest Select round's kept pairs
    history: list[dict[str, Any]] | None = None  # per-epoch curve rows


def run_curriculum(
    model: PointPromptModel,
    criterion: SetCriterion,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    phases: Sequence[Phase],
    data: TrainingData,
    sam: FrozenSam,
    device: torch.device,
    out_dir: Path,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    amp: bool = True,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    evaluate_fn: Callable[[int], dict[str, Any]] | None = None,
    eval_every: int = 1,
    checkpoint_extra: dict[str, Any] | None = None,
    state: RunState | None = None,
    stop_after: int | None = None,
) -> RunState:
    """Train through `phases`, checkpointing `out_dir/last.pt` after every epoch.

    Args:
        evaluate_fn: global epoch → metrics, called every `eval_every` epochs and after the
            last one (rank 0 logs and records them in the history).
        checkpoint_extra: config, stores, models: written into every checkpoint as is.
        state: a restored `RunState` to resume from (None: a fresh run).
        stop_after: stop once this many global epochs are done (tests: simulate a kill).
    """
    state = state or RunState()
    state.history = list(state.history or [])
    extra = checkpoint_extra or {}
    total = sum(p.epochs for p in phases)
    start = 0
    round_index = 0
    for phase in phases:
        end = start + phase.epochs
        report: dict[str, Any] | None = None
        if phase.select_round:
            round_index = phase.select_round
        if end <= state.epoch or phase.epochs == 0:
            start = end
            continue
        if phase.select_round and state.epoch == start:
            h_ref = collect_samples(data.stores, ("H_ref",), data.train_splits)
            if h_ref:
                loader = data.loader(h_ref, batch_size, num_workers, None)
                result = select(
                    model,
                    loader,
                    h_ref,
                    data.stores,
                    sam,
                    device,
                    phase.threshold,
                    phase.select_round,
                    amp,
                )
                state.selections, report = result.kept, result.reports
            else:
                log.info(
                    "phase %s: no H_ref samples, Select round %d skipped",
                    phase.name,
                    phase.select_round,
                )
                state.selections = state.selections or {}
        samples = data.samples(phase.subsets, state.selections, phase.unselected)
        counts = subset_counts(samples)
        missing = [s for s in phase.subsets if counts[s] == 0]
        if missing:
            log.info("phase %s: no %s samples; trains on the rest", phase.name, ", ".join(missing))
        log.info(
            "phase %s (%d epochs): %s",
            phase.name,
            phase.epochs,
            {k: v for k, v in counts.items() if v},
        )
        for epoch in range(max(state.epoch, start), end):
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "phase": phase.name,
                "stage": phase.stage,
                "round": round_index,
                "lr": optimizer.param_groups[0]["lr"],
                "samples": len(samples),
            }
            if report is not None:  # the phase's Select round, with its first epoch's row
                row["select"], report = report, None
            if samples:
                decode = needs_masks(criterion)
                loader = data.loader(
                    samples, batch_size, num_workers, seed * 100_003 + epoch, decode, decode
                )
                rank, world = rank_and_world()
                if world > 1:  # each rank its own dropout draws, reproducible on resume
                    torch.manual_seed(seed * 100_003 + epoch + 1_000_003 * rank)
                bar = f"epoch {epoch + 1}/{total} {phase.name}" if is_main_process() else None
                losses = train_one_epoch(
                    model, criterion, loader, optimizer, device, scaler, amp, grad_clip, bar
                )
                row.update(losses)
            else:
                log.info("phase %s: no samples, epoch %d skipped", phase.name, epoch + 1)
            scheduler.step()
            state.epoch = epoch + 1
            last = state.epoch == total
            if evaluate_fn is not None and (last or (eval_every and state.epoch % eval_every == 0)):
                row.update(evaluate_fn(state.epoch))
            state.history.append(row)
            log.info(
                "epoch %d/%d %s",
                state.epoch,
                total,
                ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)),
            )
            if is_main_process():
                save_checkpoint(
                    Path(out_dir) / LAST,
                    training_state(
                        model,
                        optimizer,
                        scheduler,
                        epoch=state.epoch,
                        stage=phase.stage,
                        round_index=round_index,
                        selections=state.selections,
                        history=state.history,
                        config=extra.get("config", {}),
                        stores=extra.get("stores", []),
                        models=extra.get("models", {}),
                    ),
                )
            if stop_after is not None and state.epoch >= stop_after:
                return state
        start = end
    return state
