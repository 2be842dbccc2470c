"""Masks: each candidate's relevance map → SAM point/box prompts → one mask (DESIGN §4).

SAM's mask decoder runs on the image embedding the encode stage cached (the embedding cache, so
no image is encoded again), through an unmodified `SamPredictor` whose image state is set from
the cache, once for all the maps of an image (`pipeline.labelling.prompting.prompt_masks`:
prompts on SAM's low-res frame, one decoder batch, only the kept masks upsampled). The prompting
rule is `pipeline.labelling.prompting`'s (params.yaml masks.rule). Each mask is stored as COCO RLE
counts at the image's original size, with its box, SAM's predicted IoU and its agreement with the
relevance map (the soft IoU of `pipeline.labelling.grid.agreement`). Masks that fail the quality
gates (`pipeline.labelling.gates`: nearly empty, nearly the whole image, far from the map; D_sem
only by default) get no row but a reject naming the gate.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from segment_anything import SamPredictor

from pipeline.core import config as config_io
from pipeline.core.rle import encode_rle
from pipeline.data.records import Reject
from pipeline.labelling.gates import Gates, gate_reason
from pipeline.labelling.prompting import PROMPT_RULES, prompt_masks
from pipeline.models.encoders import cached_predictor, encoder_config, sam_for
from pipeline.models.runtime import reproducible_threads
from pipeline.models.weights import check_weights
from pipeline.stages.runner import upstream_config
from pipeline.stages.spec import ShardOutput, ShardTask, StageSpec
from pipeline.store import schemas, shards
from pipeline.store.embeddings import shard_embeddings

DEFAULT_RULE = "box_points"  # bench/prompting_rules.py: best on gt-box and gt-mask maps alike


@dataclass(frozen=True)
class MasksConfig:
    """params.yaml [masks]."""

    rule: str = (
        DEFAULT_RULE  # pipeline.labelling.prompting.PROMPT_RULES key: box_points, clip_surgery, ...
    )
    # Quality gates (pipeline/gates.py: why D_sem only) on the mask's share of the image and on
    # its agreement with the relevance map.
    min_area_frac: float = 0.01  # below: nearly empty, rejected
    max_area_frac: float = 0.95  # above: nearly the whole image, rejected
    min_relevance: float = 0.05  # agreement below: far from the relevance map, rejected
    gated_subsets: tuple[str, ...] = ("D_sem",)  # subsets the gates apply to

    def __post_init__(self) -> None:
        if self.rule not in PROMPT_RULES:
            raise ValueError(f"rule {self.rule!r}: choose one of {', '.join(PROMPT_RULES)}")
        self.gates  # noqa: B018 - validates the thresholds

    @property
    def gates(self) -> Gates:
        """The gate thresholds as their own value."""
        return Gates(
            self.min_area_frac, self.max_area_frac, self.min_relevance, tuple(self.gated_subsets)
        )


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate the [masks] section."""
    return config_io.to_dict(config_io.from_section(MasksConfig, section, "masks"))


def run_shard(task: ShardTask) -> ShardOutput:
    """Prompt SAM for every candidate that has a relevance map; one row per candidate."""
    import zarr

    cfg = config_io.from_section(MasksConfig, task.config, "masks")
    samples = {s["sample_id"]: s for s in shards.read_parquet(task.inputs["ingest"]).to_pylist()}
    images = {r["image_sha256"]: r for r in shards.read_parquet(task.inputs["encode"]).to_pylist()}
    cache, keys = shard_embeddings(task.inputs["encode"])
    maps = zarr.open_group(str(Path(task.inputs["attention"]).with_suffix(".zarr")), mode="r")
    relevance = maps["relevance"][...]  # (n_candidates, G, G) f16
    cands = shards.read_parquet(task.inputs["attention"]).to_pylist()
    split = shards.read_parquet(task.inputs["split"]).to_pylist()
    subset = {(r["sample_id"], r["cand_idx"]): r["subset"] for r in split}

    sam = sam_for(encoder_config(upstream_config(task, "encode")))
    if images:
        pack = cache.group(cache.entry(keys["sam"], next(iter(images))))
        check_weights(dict(pack.attrs)["sam"], sam, f"SAM {sam.variant}")
    predictor = SamPredictor(sam.model)
    embeddings = functools.partial(cache.row, keys["sam"])
    with reproducible_threads():
        results = _prompt_all(cfg.rule, cands, samples, images, embeddings, relevance, predictor)
    keys, rows, rejects = [], [], []
    for c in cands:  # the attention table's order
        key = (c["sample_id"], c["cand_idx"])
        *row, area_frac = results[key]
        reason = gate_reason(cfg.gates, subset[key], area_frac, row[3])
        if reason is not None:
            image = samples[key[0]]["image_path"]
            rejects.append(Reject("masks", image, f"{key[0]}#{key[1]}", reason))
            continue
        keys.append(key)
        rows.append(row)
    table = pa.table(
        {
            "sample_id": [k[0] for k in keys],
            "cand_idx": [k[1] for k in keys],
            "mask_rle": [r[0] for r in rows],
            "bbox": [r[1] for r in rows],
            "sam_score": [r[2] for r in rows],
            "relevance_score": [r[3] for r in rows],
        },
        schema=schemas.MASKS,
    )
    return ShardOutput(table, rejects)


def _prompt_all(
    rule: str,
    cands: list[dict[str, Any]],
    samples: dict[str, dict[str, Any]],
    images: dict[str, dict[str, Any]],
    embeddings: Callable[[str], np.ndarray],
    relevance: np.ndarray,
    predictor: SamPredictor,
) -> dict[tuple[str, int], tuple[str, list[float], float, float, float]]:
    """(sample_id, cand_idx) → (RLE counts, xywh box, SAM score, agreement, area fraction).

    embeddings: image sha256 → its (256, 64, 64) SAM embedding; relevance: (n_candidates, G, G)
    maps indexed by array_row.
    """

    def image_of(cand: dict[str, Any]) -> str:
        return samples[cand["sample_id"]]["image_sha256"]

    results: dict[tuple[str, int], tuple[str, list[float], float, float, float]] = {}
    # Candidates grouped by image: the predictor's image state is set once per image, and SAM's
    # decoder runs for all the image's maps together (`prompt_masks`).
    for digest, group in itertools.groupby(sorted(cands, key=image_of), key=image_of):
        image = images[digest]
        size = (image["height"], image["width"])
        embedding = embeddings(digest)  # (256, 64, 64) f16
        cached_predictor(predictor, embedding, size, (image["input_height"], image["input_width"]))
        # Equal maps on one image give equal masks (the rule is deterministic): an oracle map
        # is shared by every candidate and sentence of a referent, a CLIP map by equal phrases.
        group = list(group)
        keys = [relevance[cand["array_row"]].tobytes() for cand in group]  # (G, G) f16 bytes
        unique: dict[bytes, np.ndarray] = {}
        for key, cand in zip(keys, group, strict=True):
            unique.setdefault(key, relevance[cand["array_row"]].astype(np.float32))
        masks = prompt_masks(rule, list(unique.values()), predictor, size)
        by_map = {
            key: (*encode_rle(r.mask), r.score, r.agreement, float(r.mask.mean()))  # area share
            for key, r in zip(unique, masks, strict=True)
        }
        for key, cand in zip(keys, group, strict=True):
            results[(cand["sample_id"], cand["cand_idx"])] = by_map[key]
    return results


SPEC = StageSpec(
    name="masks",
    inputs=("ingest", "split", "encode", "attention"),
    schema=schemas.MASKS,
    run_shard=run_shard,
    read_config=read_config,
    # 2: prompts built on SAM's low-res frame, agreement on it, one decoder batch per image
    # (pipeline.labelling.prompting): masks, scores and agreements differ slightly from version 1.
    version=2,
)
