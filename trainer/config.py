"""The training config: one frozen dataclass per section, read from a small YAML file.

    clip:        which frozen CLIP the features come from and at which input side
    model:       `PointGeneratorConfig` (K, M, widths, CLIP stages)
    loss:        `LossConfig` (matching costs = loss weights)
    optim:       Adam, learning-rate schedule, batch size, AMP, seed
    data:        which splits train and which evaluate
    curriculum:  the three stages of DESIGN §6 (epochs, Select rounds and thresholds)

`configs/paper.yaml` is the paper's setting (Adam 1e-3, batch 64, 10 / 30 / 10 epochs);
`configs/cpu-small.yaml` is sized for the learning test on a laptop CPU. Only `load_config` and
the `build_*` functions read these; modules take built parts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.config import from_section, key_names, read_yaml_mapping, to_dict
from pipeline.core.errors import ConfigError
from trainer.data.feature_cache import CacheSpec
from trainer.data.samples import LabelMinimums
from trainer.loss.criterion import LossConfig
from trainer.network.point_generator import PointGeneratorConfig


@dataclass(frozen=True)
class ClipConfig:
    """[clip]: the frozen CLIP whose features are cached (weights come from the command line)."""

    model: str = "ViT-B-16"  # open_clip architecture; "ppt-tiny-vit" for tests
    input_size: int = 224  # images are squashed to input_size² (grid = input_size / patch)
    batch_size: int = 16  # images per encoder forward while caching
    # text blocks the word features go through (null: all, CLIP's own; 0: token embeddings;
    # a random-init text tower mixes words away, see trainer.network.clip_stages.word_features)
    text_layers: int | None = None

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.batch_size < 1:
            raise ValueError("input_size must be ≥ 16 and batch_size ≥ 1")


@dataclass(frozen=True)
class OptimConfig:
    """[optim]: optimiser, schedule, batching."""

    lr: float = 1e-3  # Adam learning rate (the paper's)
    weight_decay: float = 0.0  # Adam L2 weight decay
    scheduler: str = "cosine"  # cosine (to min_lr_ratio · lr over all epochs) | step | constant
    min_lr_ratio: float = 0.01  # cosine: final lr / lr
    step_epochs: int = 10  # step: decay every step_epochs epochs
    step_gamma: float = 0.1  # step: decay factor
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    batch_size: int = 64  # samples per step (per process under DDP)
    num_workers: int = 0  # DataLoader workers
    amp: bool = True  # bf16/fp16 autocast on CUDA (ignored on CPU)
    seed: int = 0  # weights, shuffling, dropout

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("lr must be > 0, batch_size ≥ 1, num_workers ≥ 0")
        if self.scheduler not in ("cosine", "step", "constant"):
            raise ValueError(f"scheduler {self.scheduler!r}: choose cosine, step or constant")


@dataclass(frozen=True)
class DataConfig:
    """[data]: the splits that train and that evaluate."""

    train_splits: tuple[str, ...] = ("train",)  # samples of these splits train
    eval_splits: tuple[str, ...] = ("val",)  # evaluated after every stage and at the end
    eval_every: int = 1  # evaluate every N epochs (0 = only at the end of the run)
    # shuffled batches keep an image's expressions together (trainer.data.batches: fewer
    # feature reads, correlated samples per batch); off: the batches of a plain shuffle
    group_by_image: bool = False
    # pseudo-labels SAM scored below this are not training targets (H_sem, D_sem, D_ref; an
    # H_ref pair keeps every candidate for Select to match against); 0 keeps every label
    min_label_score: float = 0.0
    # likewise for pseudo-labels whose agreement with the map that prompted them (the masks
    # stage's relevance_score, a soft IoU) is below this: a map that lights several objects
    # agrees with none of their masks, so its label is a guess among them; 0 keeps every label
    min_label_relevance: float = 0.0

    def __post_init__(self) -> None:
        for key in ("min_label_score", "min_label_relevance"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key} {getattr(self, key)}: give a value in [0, 1)")

    @property
    def label_minimums(self) -> LabelMinimums:
        """The two minimums as the trainer's data code takes them."""
        return LabelMinimums(sam_score=self.min_label_score,
                             relevance_score=self.min_label_relevance)  # fmt: skip


@dataclass(frozen=True)
class CurriculumConfig:
    """[curriculum]: epochs of the three stages (DESIGN §6) and the Select rounds."""

    semantic_epochs: int = 10  # stage 1 on H_sem ∪ D_sem
    ris_epochs_before_select: int = 15  # stage 2a on H_sem ∪ D_sem ∪ D_ref → θ_refD
    ris_epochs: int = 15  # stage 2b on all four, H_ref' selected by θ_refD
    refinement_rounds: int = 2  # R: stage 3 rounds, each Select then train
    refinement_epochs: int = 5  # epochs per refinement round (paper: 10 in all)
    select_threshold: float = 0.5  # Select drops H_ref pairs whose overlap (IoU) is lower
    # Ablations (Table 3): leave these subsets out of every phase ("w/o D_ref", "w/o IMG" =
    # D_sem and D_ref), and `joint`: no curriculum, one phase over every remaining subset for
    # all the epochs above, H_ref with its candidates as unlabelled targets (no Select).
    exclude_subsets: tuple[str, ...] = ()
    joint: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.exclude_subsets) - {"H_sem", "H_ref", "D_sem", "D_ref"}
        if unknown:
            raise ValueError(
                f"exclude_subsets {sorted(unknown)}: choose H_sem, H_ref, D_sem, D_ref"
            )
        epochs = (
            self.semantic_epochs,
            self.ris_epochs_before_select,
            self.ris_epochs,
            self.refinement_rounds,
            self.refinement_epochs,
        )
        if min(epochs) < 0:
            raise ValueError("curriculum epochs and rounds must be ≥ 0")
        if not 0.0 <= self.select_threshold <= 1.0:
            raise ValueError("select_threshold must be in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The whole training config (sections above)."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    model: PointGeneratorConfig = field(default_factory=PointGeneratorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

    def cache_spec(self) -> CacheSpec:
        """The frozen features this model reads (`trainer.data.feature_cache`)."""
        return CacheSpec(
            tuple(self.model.stage_indices),
            self.clip.input_size,
            self.clip.batch_size,
            self.model.sam_stage,
            self.clip.text_layers,
            self.model.relevance_input,
            self.model.phrase_priors,
        )


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """A `TrainConfig` from a {section: {key: value}} dict; unknown sections or keys are errors."""
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {key_names(unknown)}; known: {', '.join(SECTIONS)}"
        )
    parts = {
        name: from_section(cls, data.get(name) or {}, f"{where}: {name}")
        for name, cls in SECTIONS.items()
    }
    return TrainConfig(**parts)


def read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config YAML as {section: {key: value}}, its `extends:` base (a path relative to it)
    merged underneath: a variant lists only the keys it changes (configs/ablation/)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file (see configs/paper.yaml)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    data = read_yaml_mapping(path, "sections")
    base = data.pop("extends", None)
    if base is None:
        return data
    merged = read_config_file(path.parent / str(base), (*seen, path.resolve()))
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def load_config(path: Path) -> TrainConfig:
    """Read a training config YAML (see configs/); missing sections take their defaults."""
    return config_from_dict(read_config_file(path), str(path))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON-able data (for checkpoints and metrics)."""
    return to_dict(cfg)
