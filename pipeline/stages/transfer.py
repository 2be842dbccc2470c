"""Transferred labels: the masks and points tables of a dataset whose adapter holds the labels.

A composite (D_ref) store never prompts SAM: every object's mask and points were transformed
exactly from its D_sem source by the augment stage. These two stages write them into the store's
`masks` and `points` directories, with the very schemas of the SAM stages, so that
`LabelStore.candidates()` reads a composite store exactly as any other (sam_score and
relevance_score are the source pseudo-label's). Rows follow the phrases stage's candidates:
cand_idx = object order.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.core.errors import ConfigError
from pipeline.data.dataset import GivenCandidate
from pipeline.data.registry import cached_dataset
from pipeline.stages.spec import ShardOutput, ShardTask, StageSpec
from pipeline.store import schemas, shards


def _given(task: ShardTask) -> list[tuple[str, int, GivenCandidate]]:
    """(sample_id, cand_idx, given candidate) for every sample of the shard, in shard order."""
    dataset = cached_dataset(task.context.dataset, str(task.context.data_root))
    if not hasattr(dataset, "given_candidates"):
        raise ConfigError(
            f"dataset {task.context.dataset!r} holds no labels to transfer: build it with the "
            "attention, masks and points stages instead"
        )
    samples = shards.read_parquet(task.inputs["ingest"]).column("sample_id").to_pylist()
    return [
        (sid, idx, cand)
        for sid in samples
        for idx, cand in enumerate(dataset.given_candidates(sid))
    ]


def run_masks(task: ShardTask) -> ShardOutput:
    """One masks row per given candidate (its transferred COCO RLE, box and source scores)."""
    given = _given(task)
    table = pa.table(
        {
            "sample_id": [sid for sid, _, _ in given],
            "cand_idx": [idx for _, idx, _ in given],
            "mask_rle": [c.mask_rle for _, _, c in given],
            "bbox": [list(c.bbox) for _, _, c in given],
            "sam_score": [c.sam_score for _, _, c in given],
            "relevance_score": [c.relevance_score for _, _, c in given],
        },
        schema=schemas.MASKS,
    )
    return ShardOutput(table)


def run_points(task: ShardTask) -> ShardOutput:
    """One points row per candidate with a masks row: its transferred, re-labelled points."""
    masked = shards.read_parquet(task.inputs["transfer_masks"]).select(["sample_id", "cand_idx"])
    keep = set(zip(*(masked.column(c).to_pylist() for c in masked.column_names), strict=True))
    given = [(sid, idx, c) for sid, idx, c in _given(task) if (sid, idx) in keep]
    points: list[list[dict[str, Any]]] = [list(c.points) for _, _, c in given]
    table = pa.table(
        {
            "sample_id": [sid for sid, _, _ in given],
            "cand_idx": [idx for _, idx, _ in given],
            "points": points,
        },
        schema=schemas.POINTS,
    )
    return ShardOutput(table)


MASKS_SPEC = StageSpec(
    name="transfer_masks",
    inputs=("ingest",),
    schema=schemas.MASKS,
    run_shard=run_masks,
)

POINTS_SPEC = StageSpec(
    name="transfer_points",
    inputs=("ingest", "transfer_masks"),
    schema=schemas.POINTS,
    run_shard=run_points,
)
