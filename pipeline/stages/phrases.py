"""Phrases: every expression → its candidate referent phrases (spaCy noun chunks).

Object-centric sources (ImageNet) need no parsing: their one candidate is the class name.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline import config as config_io
from pipeline import schemas, shards
from pipeline.phrases import PhrasesConfig, extract_phrases
from pipeline.stage import ShardOutput, ShardTask, StageSpec

# Sources whose single candidate is their class, not a parse of the sentence.
CLASS_SOURCES = frozenset({"imagenet"})


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate the [phrases] section."""
    return config_io.to_dict(config_io.from_section(PhrasesConfig, section, "phrases"))


def run_shard(task: ShardTask) -> ShardOutput:
    """One row per candidate phrase of every sample in the shard, in text order."""
    samples = shards.read_parquet(task.inputs["ingest"]).to_pylist()
    cfg = config_io.from_section(PhrasesConfig, task.config, "phrases")
    parsed_rows = [s for s in samples if s["source"] not in CLASS_SOURCES]
    parsed = iter(extract_phrases([s["expression"] for s in parsed_rows], cfg))

    rows: dict[str, list[Any]] = {name: [] for name in schemas.PHRASES.names}

    def add(sample_id: str, idx: int, text: str, start: int, end: int, head: str, fb: bool):
        for name, value in zip(
            schemas.PHRASES.names, (sample_id, idx, text, start, end, head, fb), strict=True
        ):
            rows[name].append(value)

    for sample in samples:
        if sample["source"] in CLASS_SOURCES:
            name = sample["category"]
            start = sample["expression"].find(name)
            add(sample["sample_id"], 0, name, start, start + len(name), name, False)
            continue
        for idx, phrase in enumerate(next(parsed)):
            add(
                sample["sample_id"],
                idx,
                phrase.text,
                phrase.start_char,
                phrase.end_char,
                phrase.head,
                phrase.fallback,
            )
    return ShardOutput(pa.table(rows, schema=schemas.PHRASES))


SPEC = StageSpec(
    name="phrases",
    table="phrases",
    inputs=("ingest",),
    schema=schemas.PHRASES,
    run_shard=run_shard,
    read_config=read_config,
)
