"""Points: M point labels per candidate, uniform in its mask's box, labelled by the mask.

These are the point targets the trainer's point head learns (DESIGN §6): positives where the
pseudo-mask is, negatives in the rest of its box. Each candidate's draw is seeded by a stable hash
of (seed, sample_id, cand_idx), so it does not depend on shard layout, order or process. Points
are normalised by the image's width and height to [0, 1]; a candidate with an empty mask (no box)
gets no points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.core import config as config_io
from pipeline.core.rle import decode_rle
from pipeline.labelling.points import candidate_rng, sample_points
from pipeline.stages.spec import ShardOutput, ShardTask, StageSpec
from pipeline.store import schemas, shards


@dataclass(frozen=True)
class PointsConfig:
    """params.yaml [points]."""

    m: int = 16  # points per candidate
    seed: int = 0  # with (sample_id, cand_idx), seeds each candidate's draw

    def __post_init__(self) -> None:
        if self.m < 1:
            raise ValueError("m must be at least 1")


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate the [points] section."""
    return config_io.to_dict(config_io.from_section(PointsConfig, section, "points"))


def run_shard(task: ShardTask) -> ShardOutput:
    """M labelled points for every candidate with a mask."""
    cfg = config_io.from_section(PointsConfig, task.config, "points")
    samples = {s["sample_id"]: s for s in shards.read_parquet(task.inputs["ingest"]).to_pylist()}
    masks = shards.read_parquet(task.inputs["masks"]).to_pylist()
    points = []
    for row in masks:
        sample = samples[row["sample_id"]]
        mask = decode_rle(row["mask_rle"], sample["height"], sample["width"])  # (H, W)
        rng = candidate_rng(cfg.seed, row["sample_id"], row["cand_idx"])
        points.append(sample_points(mask, row["bbox"], cfg.m, rng))
    table = pa.table(
        {
            "sample_id": [r["sample_id"] for r in masks],
            "cand_idx": [r["cand_idx"] for r in masks],
            "points": points,
        },
        schema=schemas.POINTS,
    )
    return ShardOutput(table)


SPEC = StageSpec(
    name="points",
    inputs=("ingest", "masks"),
    schema=schemas.POINTS,
    run_shard=run_shard,
    read_config=read_config,
)
