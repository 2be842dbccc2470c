"""Split: each sample into its training subset, each candidate its initial referent label c.

- ImageNet (D_sem): one candidate, the class; it is the referent (c=1).
- Composites (D_ref): E objects; c=1 for the one the expression denotes, 0 for the context
  objects, as the composite adapter gives them (`GIVEN_REFERENTS`).
- One candidate (H_sem): the only phrase must name the referent (c=1).
- Several candidates (H_ref): which phrase is the referent is unknown (c=0) until the trainer's
  Select rounds decide and write `rounds/<k>/selection.parquet`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pyarrow as pa

from pipeline.data.registry import cached_dataset
from pipeline.stages.spec import ShardOutput, ShardTask, StageSpec
from pipeline.store import schemas, shards

OBJECT_CENTRIC = {
    "imagenet": "D_sem",
    "synthetic-objects": "D_sem",
    "mosaic": "D_ref",
    "fusion": "D_ref",
}


def subset_of(source: str, n_candidates: int) -> str:
    """The training subset of a sample (DESIGN §1)."""
    if source in OBJECT_CENTRIC:
        return OBJECT_CENTRIC[source]
    return "H_sem" if n_candidates == 1 else "H_ref"


def _given_referents(task: ShardTask, sample_id: str) -> list[int]:
    dataset = cached_dataset(task.context.dataset, str(task.context.data_root))
    return [c.referent for c in dataset.given_candidates(sample_id)]


# Sources whose referent flags the dataset gives: source → (task, sample_id) → c by cand_idx.
GIVEN_REFERENTS: dict[str, Callable[[ShardTask, str], list[int]]] = {
    "mosaic": _given_referents,
    "fusion": _given_referents,
}


def run_shard(task: ShardTask) -> ShardOutput:
    """Label every candidate with its sample's subset and initial referent flag."""
    samples = shards.read_parquet(task.inputs["ingest"]).select(["sample_id", "source"])
    source = dict(zip(*(samples.column(c).to_pylist() for c in samples.column_names), strict=True))
    phrases = shards.read_parquet(task.inputs["phrases"]).select(["sample_id", "cand_idx"])
    sample_ids = phrases.column("sample_id").to_pylist()
    cand_idx = phrases.column("cand_idx").to_pylist()
    counts = Counter(sample_ids)
    subsets = [subset_of(source[s], counts[s]) for s in sample_ids]
    given = {s: GIVEN_REFERENTS[source[s]](task, s) for s in counts if source[s] in GIVEN_REFERENTS}
    referents = [
        given[s][i] if s in given else (0 if subset == "H_ref" else 1)
        for s, i, subset in zip(sample_ids, cand_idx, subsets, strict=True)
    ]
    table = pa.table(
        {
            "sample_id": sample_ids,
            "cand_idx": phrases.column("cand_idx"),
            "subset": subsets,
            "n_candidates": [counts[s] for s in sample_ids],
            "referent": referents,
        },
        schema=schemas.SPLIT,
    )
    return ShardOutput(table)


SPEC = StageSpec(
    name="split",
    inputs=("ingest", "phrases"),
    schema=schemas.SPLIT,
    run_shard=run_shard,
)
