"""Attention: one relevance map (G, G) per (sample, candidate): CLIP, a ground-truth oracle, or
the centre prior.

Maps go to the shard's Zarr array "relevance" (n_candidates, G, G) float16, row-aligned with the
table through `array_row`, and one more per sample for its whole expression, "sentence_relevance"
(n_samples, G, G), rows named by the attrs' `sentence_ids` (the map CLIP + SAM prompts with, and
the point generator's view of CLIP's response). Sources are described in
`pipeline.labelling.relevance`. The oracles read the dataset's ground truth; a sample without any
(ImageNet) or with a broken annotation is rejected with the reason, and the build goes on. The
"clip" source scores the phrases against the CLIP dense features that the encode stage cached,
with the same CLIP (rebuilt from encode's config). The "centre" source gives every candidate the
same centred prior (`relevance.centre_map`). Each source is one entry of `MAP_SOURCES`: a function
from the shard to (candidate, map) pairs and rejects.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core import config as config_io
from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.dataset import denotation_mask
from pipeline.data.records import Reject, SourceRecord
from pipeline.data.registry import cached_dataset
from pipeline.labelling import relevance
from pipeline.labelling.grid import mask_to_grid
from pipeline.labelling.simulated import PhraseQuery, SimulatedConfig, query_words, simulated_map
from pipeline.models.options import RELEVANCE_SOURCES
from pipeline.stages.runner import upstream_config
from pipeline.stages.spec import ShardOutput, ShardTask, StageContext, StageSpec
from pipeline.store import schemas, shards
from pipeline.store.embeddings import shard_embeddings


@dataclass(frozen=True)
class AttentionConfig:
    """params.yaml [attention]; --relevance overrides `source`."""

    # clip | centre | diagnostics: gt-box, gt-mask (the referent), gt-phrase (the candidate's own
    # denotation), simulated (CLIP-like, from the denotation; pipeline.labelling.simulated)
    source: str = "gt-mask"
    grid: int = 28  # side G of gt-* and centre maps; clip maps keep CLIP's patch grid (28 @448)
    centre_sigma: float = 0.3  # centre: the prior's std, a fraction of the image's width / height
    templates: tuple[str, ...] = ("{}",)  # clip: prompt templates averaged per phrase
    redundant: str = "empty"  # clip: surgery against "" (empty) or the sample's phrases (phrases)
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)  # simulated's knobs

    def __post_init__(self) -> None:
        if isinstance(self.simulated, dict):
            knobs = config_io.from_section(SimulatedConfig, self.simulated, "attention.simulated")
            object.__setattr__(self, "simulated", knobs)
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
    # CLIP's code (torch, open_clip) is imported for this source only: the others are numpy, and
    # each DVC stage is a process of its own, where these imports cost seconds a run.
    from pipeline.models.clip_surgery import clip_maps, encode_texts
    from pipeline.models.encoders import clip_for, encoder_config
    from pipeline.models.runtime import reproducible_threads
    from pipeline.models.weights import check_weights

    cache, keys = shard_embeddings(task.inputs["encode"])
    if "clip" not in keys:
        raise ConfigError(
            "attention.source clip needs CLIP features from the encode stage: re-run it with "
            "--relevance clip (or encode.clip: true in params.yaml)"
        )
    clip = clip_for(encoder_config(upstream_config(task, "encode")))
    table = shards.read_parquet(task.inputs["encode"])
    digests = [r["image_sha256"] for r in table.to_pylist()]
    if digests:
        pack = cache.group(cache.entry(keys["clip"], digests[0]))
        check_weights(dict(pack.attrs)["clip"], clip, f"CLIP {clip.name}")
    features = cache.rows(keys["clip"], digests) if digests else None  # (n_images, G, G, D) f16
    row_of = {digest: i for i, digest in enumerate(digests)}

    texts = sorted({p["phrase"] for p in phrases})
    index = {t: i for i, t in enumerate(texts)}
    out = []
    with reproducible_threads():
        text_feats = encode_texts(clip, [*texts, ""], cfg.templates)  # (n_texts + 1, D)
        for sample_id, cands in _by_sample(phrases):
            image_feats = features[row_of[samples[sample_id]["image_sha256"]]]  # (G, G, D)
            idx = [index[c["phrase"]] for c in cands]
            maps = clip_maps(image_feats, text_feats[idx], text_feats[-1], cfg.redundant)
            out.extend(zip(cands, maps, strict=True))  # maps: (n_cands, G, G)
    return out, []


def _centre_maps(
    task: ShardTask, cfg: AttentionConfig, samples: dict[str, dict[str, Any]], phrases: list
) -> tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]]:
    """(candidate, the centre prior) for every candidate: no model, no ground truth."""
    prior = relevance.centre_map(cfg.grid, cfg.centre_sigma)  # (G, G)
    return [(cand, prior) for cand in phrases], []


def _truth(task: ShardTask) -> Any:
    """The dataset adapter, refusing one without phrase ground truth."""
    dataset = cached_dataset(task.context.dataset, str(task.context.data_root))
    if getattr(dataset, "truth", None) is None:
        raise ConfigError(
            f"--relevance gt-phrase / simulated need phrase ground truth, which dataset "
            f"{task.context.dataset!r} has none of (the synthetic world has it): use clip"
        )
    return dataset


def _phrase_maps(
    task: ShardTask, cfg: AttentionConfig, samples: dict[str, dict[str, Any]], phrases: list
) -> tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]]:
    """gt-phrase: each candidate's own denotation pooled to the grid (zeros: denotes nothing)."""
    dataset = _truth(task)
    out = []
    for sample_id, cands in _by_sample(phrases):
        objects = {o.ann_id: o for o in dataset.objects(samples[sample_id]["image_id"])}
        shape = samples[sample_id]["height"], samples[sample_id]["width"]
        for cand in cands:
            union = denotation_mask(objects, cand.get("denotes"), shape)
            out.append((cand, mask_to_grid(union, cfg.grid).astype(np.float32)))
    return out, []


def _names(obj: Any, shape: str | None, colour: str | None) -> bool:
    """Whether a phrase with these class / colour words (at least one) names `obj`."""
    return bool(shape or colour) and shape in (None, obj.shape) and colour in (None, *obj.colours)


def _simulated_maps(
    task: ShardTask, cfg: AttentionConfig, samples: dict[str, dict[str, Any]], phrases: list
) -> tuple[list[tuple[dict[str, Any], np.ndarray]], list[Reject]]:
    """simulated: a CLIP-like map per candidate from its denotation (labelling.simulated)."""
    dataset = _truth(task)
    out = []
    for sample_id, cands in _by_sample(phrases):
        sample = samples[sample_id]
        objects = dataset.objects(sample["image_id"])
        truths = dataset.phrase_truth(sample_id) or []
        mentioned = tuple(a for t in truths if t.role != "sentence" for a in t.ann_ids)
        for cand in cands:
            shape, colour = query_words(cand["phrase"], objects)
            denotes = cand.get("denotes")
            if denotes is None:  # no truth phrase matched: what its words pick out
                denotes = [o.ann_id for o in objects if _names(o, shape, colour)]
            whole = cand.get("truth_role") == "sentence"
            query = PhraseQuery(tuple(denotes), shape, colour, mentioned if whole else ())
            key = f"{sample_id}#{cand['cand_idx']}"
            grid_map = simulated_map(objects, query, cfg.simulated, sample["image_sha256"], key)
            out.append((cand, grid_map))
    return out, []


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
    "gt-phrase": _phrase_maps,
    "simulated": _simulated_maps,
}


def _sentences(task: ShardTask, samples: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One pseudo-candidate per sample: its whole expression (cand_idx -1), denoting the referent.

    Its map is the relevance of the sentence as the paper's CLIP + SAM reads it, and the input
    the point generator reads as CLIP's response (trainer `relevance_input`).
    """
    dataset = cached_dataset(task.context.dataset, str(task.context.data_root))
    truth = getattr(dataset, "phrase_truth", None) if getattr(dataset, "truth", None) else None
    out = []
    for sample_id, sample in samples.items():
        rows = (truth(sample_id) or []) if truth else []
        referent = [list(t.ann_ids) for t in rows if t.role == "sentence"]
        out.append(
            {
                "sample_id": sample_id,
                "cand_idx": -1,
                "phrase": sample["expression"],
                "truth_role": "sentence",
                "denotes": referent[0] if referent else None,
            }
        )
    return out


def run_shard(task: ShardTask) -> ShardOutput:
    """One relevance map per candidate of the shard, row-aligned with the table."""
    cfg = config_io.from_section(AttentionConfig, task.config, "attention")
    samples = {s["sample_id"]: s for s in shards.read_parquet(task.inputs["ingest"]).to_pylist()}
    phrases = shards.read_parquet(task.inputs["phrases"]).to_pylist()  # by sample, cand_idx
    maps, rejects = MAP_SOURCES[cfg.source](task, cfg, samples, phrases)
    sentences, _ = MAP_SOURCES[cfg.source](task, cfg, samples, _sentences(task, samples))
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
    whole = np.stack([m for _, m in sentences]) if sentences else np.zeros((0, *grid), np.float32)
    arrays = {
        "relevance": stacked.astype(np.float16),  # (n_candidates, G, G)
        "sentence_relevance": whole.astype(np.float16),  # (n_samples, G, G)
    }
    attrs = {
        "source": cfg.source,
        "grid": list(grid),
        "sentence_ids": [c["sample_id"] for c, _ in sentences],  # rows of sentence_relevance
    }
    return ShardOutput(table, rejects, arrays, attrs=attrs)


SPEC = StageSpec(
    name="attention",
    version=2,  # 2: each sample's whole-expression map (sentence_relevance)
    inputs=("ingest", "phrases", "encode"),
    schema=schemas.ATTENTION,
    run_shard=run_shard,
    read_config=read_config,
    apply_options=apply_options,
)
