"""Attention: one relevance map (G, G) per (sample, candidate): CLIP, a ground-truth oracle, or
the centre prior.

Maps go to the shard's Zarr array "relevance" (n_candidates, G, G) float16, row-aligned with the
table through `array_row`. Sources are described in `pipeline.labelling.relevance`. The oracles read
the dataset's ground truth; a sample without any (ImageNet) or with a broken annotation is rejected
with the reason, and the build goes on. The "clip" source scores the phrases against the CLIP
dense features that the encode stage cached, with the same CLIP (rebuilt from encode's config).
The "centre" source gives every candidate the same centred prior (`relevance.centre_map`). Each
source is one entry of `MAP_SOURCES`: a function from the shard to (candidate, map) pairs and
rejects.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core import config as config_io
from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.records import Reject, SourceRecord
from pipeline.data.registry import cached_dataset
from pipeline.labelling import relevance
from pipeline.models.clip_surgery import encode_texts
from pipeline.models.encoders import clip_for, encoder_config
from pipeline.models.options import RELEVANCE_SOURCES
from pipeline.models.runtime import reproducible_threads
from pipeline.models.weights import check_weights
from pipeline.stages.runner import ShardOutput, ShardTask, StageContext, StageSpec, upstream_config
from pipeline.store import schemas, shards


@dataclass(frozen=True)
class AttentionConfig:
    """params.yaml [attention]; --relevance overrides `source`."""

    source: str = "gt-mask"  # clip | gt-box | gt-mask (oracles: ground truth pooled) | centre
    grid: int = 28  # side G of gt-* and centre maps; clip maps keep CLIP's patch grid (28 @448)
    centre_sigma: float = 0.3  # centre: the prior's std, a fraction of the image's width / height
    templates: tuple[str, ...] = ("{}",)  # clip: prompt templates averaged per phrase
    redundant: str = "empty"  # clip: surgery against "" (empty) or the sample's phrases (phrases)

    def __post_init__(self) -> None:
        if self.source not in RELEVANCE_SOURCES:
            raise ValueError(f"source {self.source!r}: choose {', '.join(RELEVANCE_SOURCES)}")
        if self.grid < 2:
            raise ValueError("grid must be at least 2")
        if self.centre_sigma <= 0:
            raise ValueError(f"centre_sigma {self.centre_sigma}: must be positive")
        if self.redundant not in ("empty", "phrases"):
            raise ValueError(f"redundant {self.redundant!r}: choose empty or phrases")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates must be non-empty and each hold one {} for the phrase")


def apply_options(section: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """--relevance overrides attention.source."""
    if ctx.models.relevance is not None:
        return {**section, "source": ctx.models.relevance}
    return section


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate the [attention] section."""
    return config_io.to_dict(config_io.from_section(AttentionConfig, section, "attention"))


def _by_sample(phrases: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(sid, list(g)) for sid, g in itertools.groupby(phrases, key=lambda p: p["sample_id"])]


def _oracle_maps(
    task: ShardTask, cfg: AttentionConfig, samples: dict[str, dict[str, Any]], phrases: list
) -> tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]]:
    """(candidate, (G, G) map) for each candidate whose sample has ground truth; the rejects."""
    ctx = task.context
    dataset = cached_dataset(ctx.dataset, str(ctx.data_root))
    fields = [f.name for f in dataclasses.fields(SourceRecord)]
    out, rejects = [], []
    for sample_id, cands in _by_sample(phrases):
        sample = samples[sample_id]
        try:
            gt = dataset.ground_truth(SourceRecord(**{f: sample[f] for f in fields}))
            size = (sample["height"], sample["width"])
            if gt is not None and gt.mask.shape != size:
                raise DatasetError(f"ground-truth mask {gt.mask.shape} differs from image {size}")
        except DatasetError as exc:
            gt, reason = None, f"no usable ground truth for --relevance {cfg.source}: {exc}"
        else:
            reason = (
                f"dataset {ctx.dataset!r} has no ground truth for --relevance {cfg.source}: "
                "use --relevance clip"
            )
        if gt is None:
            rejects.append(Reject("attention", sample["image_path"], sample_id, reason))
            continue
        grid_map = relevance.oracle_map(cfg.source, gt, cfg.grid)  # (G, G)
        out.extend((cand, grid_map) for cand in cands)
    return out, rejects


def _clip_maps(
    task: ShardTask, cfg: AttentionConfig, samples: dict[str, dict[str, Any]], phrases: list
) -> tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]]:
    """(candidate, (G, G) map) for every candidate, from encode's cached CLIP features."""
    import zarr

    arrays = zarr.open_group(str(Path(task.inputs["encode"]).with_suffix(".zarr")), mode="r")
    if "clip_dense" not in arrays:
        raise ConfigError(
            "attention.source clip needs CLIP features from the encode stage: re-run it with "
            "--relevance clip (or encode.clip: true in params.yaml)"
        )
    clip = clip_for(encoder_config(upstream_config(task, "encode")))
    check_weights(dict(arrays.attrs)["clip"], clip, f"CLIP {clip.name}")
    features = arrays["clip_dense"][...]  # (n_images, G, G, D) f16
    table = shards.read_parquet(task.inputs["encode"])
    row_of = {r["image_sha256"]: r["array_row"] for r in table.to_pylist()}

    texts = sorted({p["phrase"] for p in phrases})
    index = {t: i for i, t in enumerate(texts)}
    text_feats = encode_texts(clip, [*texts, ""], cfg.templates)  # (n_texts + 1, D)
    out = []
    for sample_id, cands in _by_sample(phrases):
        image_feats = features[row_of[samples[sample_id]["image_sha256"]]]  # (G, G, D)
        idx = [index[c["phrase"]] for c in cands]
        maps = relevance.clip_maps(image_feats, text_feats[idx], text_feats[-1], cfg.redundant)
        out.extend(zip(cands, maps, strict=True))  # maps: (n_cands, G, G)
    return out, []


def _centre_maps(
    task: ShardTask, cfg: AttentionConfig, samples: dict[str, dict[str, Any]], phrases: list
) -> tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]]:
    """(candidate, the centre prior) for every candidate: no model, no ground truth."""
    prior = relevance.centre_map(cfg.grid, cfg.centre_sigma)  # (G, G)
    return [(cand, prior) for cand in phrases], []


MapSource = Callable[
    [ShardTask, AttentionConfig, dict[str, dict[str, Any]], list],
    tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]],
]
# attention.source → how its maps are made (every key of RELEVANCE_SOURCES has one).
MAP_SOURCES: dict[str, MapSource] = {
    "clip": _clip_maps,
    "gt-box": _oracle_maps,
    "gt-mask": _oracle_maps,
    "centre": _centre_maps,
}


def run_shard(task: ShardTask) -> ShardOutput:
    """One relevance map per candidate of the shard, row-aligned with the table."""
    cfg = config_io.from_section(AttentionConfig, task.config, "attention")
    samples = {s["sample_id"]: s for s in shards.read_parquet(task.inputs["ingest"]).to_pylist()}
    phrases = shards.read_parquet(task.inputs["phrases"]).to_pylist()  # by sample, cand_idx
    with reproducible_threads():
        maps, rejects = MAP_SOURCES[cfg.source](task, cfg, samples, phrases)
    table = pa.table(
        {
            "sample_id": [c["sample_id"] for c, _ in maps],
            "cand_idx": [c["cand_idx"] for c, _ in maps],
            "array_row": list(range(len(maps))),
            "relevance_source": [cfg.source] * len(maps),
        },
        schema=schemas.ATTENTION,
    )
    grid = (cfg.grid, cfg.grid) if not maps else maps[0][1].shape
    stacked = np.stack([m for _, m in maps]) if maps else np.zeros((0, *grid), np.float32)
    arrays = {"relevance": stacked.astype(np.float16)}  # (n_candidates, G, G)
    return ShardOutput(table, rejects, arrays, attrs={"source": cfg.source, "grid": list(grid)})


SPEC = StageSpec(
    name="attention",
    inputs=("ingest", "phrases", "encode"),
    schema=schemas.ATTENTION,
    run_shard=run_shard,
    read_config=read_config,
    apply_options=apply_options,
)
