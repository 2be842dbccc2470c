"""Points: M point labels per candidate, uniform in its mask's box, labelled by the mask.

These are the point targets the trainer's point head learns (DESIGN §6): positives where the
pseudo-mask is, negatives in the rest of its box. Each candidate's draw is seeded by a stable hash
of (seed, sample_id, cand_idx), so it does not depend on shard layout, order or process. Points
are normalised by the image's width and height to [0, 1]; a candidate with an empty mask (no box)
gets no points.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import config as config_io
from pipeline import schemas, shards
from pipeline.rle import decode_rle
from pipeline.stage import ShardOutput, ShardTask, StageSpec


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


def candidate_rng(seed: int, sample_id: str, cand_idx: int) -> np.random.Generator:
    """A generator seeded by a stable hash (not Python's salted `hash`) of the candidate."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}\0{cand_idx}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_points(
    mask: np.ndarray, bbox: list[float], m: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """m points uniform in the xywh box of an (H, W) mask, label = mask at the point's pixel.

    Returns [{"x", "y", "label"}] with x, y normalised to [0, 1] by width and height.
    """
    height, width = mask.shape
    x0, y0, w, h = bbox
    if w <= 0 or h <= 0:
        return []
    xs = x0 + rng.random(m) * w  # (m,) pixels, in [x0, x0 + w)
    ys = y0 + rng.random(m) * h  # (m,)
    px = np.clip(xs.astype(np.int64), 0, width - 1)
    py = np.clip(ys.astype(np.int64), 0, height - 1)
    labels = mask[py, px].astype(np.int8)  # (m,) 1 inside, 0 outside
    xs_n = np.clip(xs / width, 0.0, 1.0).astype(np.float32)
    ys_n = np.clip(ys / height, 0.0, 1.0).astype(np.float32)
    return [
        {"x": float(x), "y": float(y), "label": int(lab)}
        for x, y, lab in zip(xs_n, ys_n, labels, strict=True)
    ]


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
    table="points",
    inputs=("ingest", "masks"),
    schema=schemas.POINTS,
    run_shard=run_shard,
    read_config=read_config,
)
