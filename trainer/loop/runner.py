"""`train`: label stores + a TrainConfig → a trained point generator, checkpoints, metrics, curves.

The library function behind `ppt-labels train`. It caches the CLIP features of every store once,
builds model, criterion, Adam and the schedule from the config, resumes from `<out>/last.pt`
when asked, runs the curriculum, and writes into `out`:

    last.pt        the latest checkpoint (`trainer.checkpoint`)
    metrics.json   final evaluation (DESIGN §7 keys) and run facts, for `dvc metrics show`
    curves.csv     one row per epoch: loss terms, lr, mIoU… for `dvc plots show`
    curves.json    the same rows as JSON

Evaluation scores the eval splits against ground truth where the dataset has it (its
--data-root), else against the referent pseudo-label.

Under torchrun (`trainer.loop.distributed`) the point generator is wrapped in
DistributedDataParallel after any resume (a checkpoint of any world size loads, as it holds the
unwrapped weights); each rank reads its share of every batch, and rank 0 alone writes the CLIP
cache, the checkpoints, metrics and curves.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline.core.config import jsonable
from pipeline.core.errors import DatasetError, StoreError
from pipeline.models.encoders import frozen_pair
from pipeline.models.frozen import FrozenClip, FrozenSam
from pipeline.models.options import ModelOptions
from pipeline.scoring.failures import object_truths
from pipeline.scoring.label_eval import ground_truth_rles
from pipeline.scoring.metrics import SUMMARY_KEYS
from pipeline.store.reader import LabelStore
from pipeline.store.validate import verify_store
from trainer.config import OptimConfig, TrainConfig, config_to_dict
from trainer.data.batches import Batches
from trainer.data.dataset import PromptDataset
from trainer.data.feature_cache import ClipCache, build_clip_cache, manifest_hash
from trainer.data.loaders import TrainingData, make_loader
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.data.samples import SUBSETS, collect_samples
from trainer.loop.checkpoint import LAST, check_config, check_stores, load_checkpoint, restore
from trainer.loop.curriculum import RunState, curriculum_phases, run_curriculum
from trainer.loop.distributed import barrier, is_distributed, is_main_process, rank_share
from trainer.loop.engine import Key, evaluate, reference_masks
from trainer.loop.outputs import select_reports, write_curves
from trainer.loss.criterion import build_criterion
from trainer.network.prompt_model import PointPromptModel, build_model

log = logging.getLogger(__name__)


def build_optimizer(model: PointPromptModel, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam over the point generator's parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_epochs: int) -> Any:
    """The per-epoch learning-rate schedule of `cfg.scheduler`."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total_epochs, 1), eta_min=cfg.lr * cfg.min_lr_ratio
        )
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_epochs, cfg.step_gamma)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1 << 30, gamma=1.0)


def leaves_heads_unused(cfg: TrainConfig) -> bool:
    """Whether a training step leaves some generator parameters without a gradient, which
    DistributedDataParallel must then look for (a graph traversal a step, so only then): map
    mode never reads point_head, and without point or mask losses no loss reads the points."""
    loss = cfg.loss
    return cfg.model.point_mode == "map" or not (
        loss.point_l1 or loss.point_bce or loss.mask_dice or loss.mask_bce
    )


def ground_truths(
    stores: Sequence[LabelStore], data_roots: Sequence[Path | None]
) -> dict[Key, dict[str, Any]]:
    """(store index, sample_id) → ground-truth RLE for every store whose dataset has it."""
    out: dict[Key, dict[str, Any]] = {}
    for i, (store, root) in enumerate(zip(stores, data_roots, strict=True)):
        if root is None:
            continue
        try:
            truths = ground_truth_rles(store, Path(root))
        except (DatasetError, StoreError) as exc:
            log.info("%s: no ground truth (%s); scoring against pseudo-labels", store.root, exc)
            continue
        out.update({(i, sid): rle for sid, rle in truths.items()})
    return out


def failure_truths(
    stores: Sequence[LabelStore], data_roots: Sequence[Path | None], keys: Sequence[Key]
) -> dict[Key, tuple[int, int, str, str]]:
    """(store index, sample_id) → `object_truths` of the eval samples whose dataset has them."""
    out: dict[Key, tuple[int, int, str, str]] = {}
    for i, (store, root) in enumerate(zip(stores, data_roots, strict=True)):
        wanted = {sid for j, sid in keys if j == i}
        if root is None or not wanted:
            continue
        try:
            found = object_truths(store.manifest["dataset"], Path(root), wanted) or {}
        except (DatasetError, StoreError) as exc:
            log.info("%s: no object truth (%s); no failure classes", store.root, exc)
            continue
        out.update({(i, sid): truth for sid, truth in found.items()})
    return out


def prepare_data(
    stores: Sequence[LabelStore],
    data_roots: Sequence[Path],
    clip: FrozenClip,
    sam: FrozenSam,
    cfg: TrainConfig,
    cache_dir: Path,
) -> TrainingData:
    """Cache CLIP features (rank 0 first) and open every store's caches."""

    def cache(store: LabelStore, root: Path) -> Path:
        return build_clip_cache(store, root, clip, cfg.cache_spec(), cache_dir)

    paths = []
    for store, root in zip(stores, data_roots, strict=True):
        if is_main_process():
            cache(store, root)  # rank 0 computes; the others then find the cache complete
        barrier()
        paths.append(cache(store, root))
    return TrainingData(
        stores=list(stores),
        clip_caches=[ClipCache(p) for p in paths],
        sam_embeddings=[SamEmbeddings(s, sam) for s in stores],
        train_splits=cfg.data.train_splits,
        grid_side=cfg.model.sam_stage if cfg.model.point_mode == "map" else 0,
        share=rank_share,
        cache_dir=Path(cache_dir),  # the target caches sit beside the CLIP caches
        pin_memory=torch.device(clip.device).type == "cuda",
        group_by_image=cfg.data.group_by_image,
        minimums=cfg.data.label_minimums,
    )


def eval_loader(data: TrainingData, splits: Sequence[str], batch_size: int) -> tuple[Any, list]:
    """Loader over every sample of `splits` (any subset, no targets) and its samples."""
    samples = collect_samples(data.stores, SUBSETS, splits, require_targets=False)
    dataset = PromptDataset(samples, data.clip_caches, data.sam_embeddings, with_targets=False)
    batches = Batches(len(samples), batch_size)  # in order; each rank its share under DDP
    loader = make_loader(dataset, data.share(batches) if data.share else batches, 0,
                         data.pin_memory)  # fmt: skip
    return loader, samples


def train(
    cfg: TrainConfig,
    store_dirs: Sequence[Path],
    data_roots: Sequence[Path],
    out_dir: Path,
    clip: FrozenClip,
    sam: FrozenSam,
    device: torch.device,
    cache_dir: Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run the whole curriculum; returns (and writes) metrics.json's content.

    Args:
        store_dirs: label stores (all built with `sam`'s weights).
        data_roots: each store's dataset root (images for the CLIP cache, ground truth).
        cache_dir: CLIP feature cache (default `out_dir/feature_cache`).
        resume: continue from `out_dir/last.pt` when it exists.
        stop_after: stop after this many global epochs (tests: simulate a killed run).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(store_dirs) != len(data_roots):
        raise StoreError("give one --data-root per --labels, in the same order")
    for d in store_dirs:
        verify_store(Path(d), rounds=False)  # a damaged store is named, never trained on
    stores = [LabelStore(Path(d)) for d in store_dirs]
    torch.manual_seed(cfg.optim.seed)
    data = prepare_data(stores, data_roots, clip, sam, cfg, cache_dir or out_dir / "feature_cache")
    model = build_model(cfg.model, clip, sam).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    criterion = build_criterion(cfg.loss)
    phases = curriculum_phases(cfg.curriculum)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, sum(p.epochs for p in phases))
    use_fp16 = device.type == "cuda" and cfg.optim.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    # Each store's dataset root too: `ppt-labels report` draws held-out images from it.
    store_ids = [
        {"root": str(s.root), "data_root": str(root), "manifest_sha256": manifest_hash(s)}
        for s, root in zip(stores, data_roots, strict=True)
    ]
    models = {
        "clip": {"model": clip.name, "weights": clip.weights_id},
        "sam": {"variant": sam.variant, "weights": sam.weights_id},
    }

    state = None
    if resume and (out_dir / LAST).is_file():
        ckpt = load_checkpoint(out_dir / LAST)
        check_stores(ckpt, store_ids)
        check_config(ckpt, config_to_dict(cfg))
        restore(ckpt, model, optimizer, scheduler)
        sel = ckpt["selections"]
        state = RunState(
            ckpt["epoch"],
            None if sel is None else {int(k): v for k, v in sel.items()},
            ckpt["history"],
        )
        log.info("resuming %s after epoch %d", out_dir / LAST, state.epoch)
    if is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        model.generator = DistributedDataParallel(
            model.generator, device_ids=ids, find_unused_parameters=leaves_heads_unused(cfg)
        )

    loader, eval_samples = eval_loader(data, cfg.data.eval_splits, cfg.optim.batch_size)
    references = reference_masks(eval_samples, ground_truths(stores, data_roots))
    objects = failure_truths(stores, data_roots, [s.key for s in eval_samples])
    amp = cfg.optim.amp

    def evaluate_fn(epoch: int) -> dict[str, Any]:
        return evaluate(model, loader, sam, references, device, amp, objects)

    state = run_curriculum(
        model,
        criterion,
        optimizer,
        scheduler,
        phases,
        data,
        sam,
        device,
        out_dir,
        batch_size=cfg.optim.batch_size,
        num_workers=cfg.optim.num_workers,
        seed=cfg.optim.seed,
        amp=amp,
        grad_clip=cfg.optim.grad_clip,
        scaler=scaler,
        evaluate_fn=evaluate_fn,
        eval_every=cfg.data.eval_every,
        state=state,
        stop_after=stop_after,
        checkpoint_extra={"config": config_to_dict(cfg), "stores": store_ids, "models": models},
    )
    final = next((r for r in reversed(state.history or []) if "mIoU" in r), None)
    if final is None:
        final = evaluate_fn(state.epoch)
    metrics = {
        "eval": jsonable({k: final[k] for k in (*SUMMARY_KEYS, "failures") if k in final}),
        "eval_splits": list(cfg.data.eval_splits),
        "epochs": state.epoch,
        "trainable_params": trainable,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    rounds = select_reports(state.history or [])
    if rounds:
        metrics["select"] = jsonable(rounds)
    if is_main_process():
        write_curves(state.history or [], out_dir)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def frozen_models(
    stores: Sequence[LabelStore], clip_model: str, options: ModelOptions, device: torch.device
) -> tuple[FrozenClip, FrozenSam]:
    """The frozen CLIP and SAM for training on `stores`: SAM's variant and weights are the
    stores' (their embeddings were made with them), CLIP's architecture the config's."""
    sams = {(s.manifest.get("models", {}).get("sam") or {}).get("variant") for s in stores}
    weights = {(s.manifest.get("models", {}).get("sam") or {}).get("weights") for s in stores}
    if len(sams) != 1 or None in sams or len(weights) != 1:
        raise StoreError(
            f"the label stores were encoded with different or unknown SAMs "
            f"({sorted(map(str, sams))}, weights {sorted(map(str, weights))}): train on stores "
            "built with one SAM"
        )
    return frozen_pair(sams.pop(), weights.pop(), clip_model, options, device)
