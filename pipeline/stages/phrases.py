"""Phrases: every expression → its candidate referent phrases (spaCy noun chunks).

Some sources need no parsing: their candidates are given (`GIVEN`, source → function). ImageNet's
(and the synthetic object-centric set's) one candidate is its class name; a composite's are its
E objects' class nouns in object order, which the composite adapter holds
(`pipeline.data.composite`). With `phrases.whole_expression` every expression is its own single
candidate (the CLIP + SAM baseline reads the whole sentence).

Where the dataset has phrase ground truth (the synthetic world), each candidate is matched to the
generator's noun phrase whose head word it contains (a whole-expression candidate to the
sentence) and carries that phrase's role and denoted annotations; elsewhere both are null. The
truth is for scoring and diagnostics (`gt-phrase`, `simulated`); training never reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from pipeline.core import config as config_io
from pipeline.data.dataset import PhraseTruth
from pipeline.data.registry import cached_dataset
from pipeline.labelling.phrases import PhrasesConfig, extract_phrases
from pipeline.stages.spec import ShardOutput, ShardTask, StageSpec
from pipeline.store import schemas, shards

# (text, start_char, end_char, head, fallback): one candidate phrase row after its ids.
Phrase = tuple[str, int, int, str, bool]


def _class_candidate(sample: dict[str, Any], task: ShardTask) -> list[Phrase]:
    """ImageNet: the class name, located in "the {class} in the middle"."""
    name = sample["category"]
    start = sample["expression"].find(name)
    return [(name, start, start + len(name), name, False)]


def _given_candidates(sample: dict[str, Any], task: ShardTask) -> list[Phrase]:
    """Composites: the adapter's objects, in object order (their nouns, spans where mentioned)."""
    dataset = cached_dataset(task.context.dataset, str(task.context.data_root))
    return [
        (c.phrase, c.start_char, c.end_char, c.phrase.split()[-1], False)
        for c in dataset.given_candidates(sample["sample_id"])
    ]


# Sources whose candidates are given, not parsed from the sentence.
GIVEN: dict[str, Callable[[dict[str, Any], ShardTask], list[Phrase]]] = {
    "imagenet": _class_candidate,
    "synthetic-objects": _class_candidate,
    "mosaic": _given_candidates,
    "fusion": _given_candidates,
}


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate the [phrases] section."""
    return config_io.to_dict(config_io.from_section(PhrasesConfig, section, "phrases"))


def _whole(sample: dict[str, Any]) -> list[Phrase]:
    """The whole expression as the one candidate."""
    text = sample["expression"]
    return [(text, 0, len(text), "", True)]


def match_truth(phrase: Phrase, expression: str, truths: list[PhraseTruth] | None) -> tuple:
    """(role, denoted ann ids) of the truth phrase a candidate matches, else (None, None)."""
    if not truths:
        return None, None
    _, start, end, _, _ = phrase
    if start == 0 and end == len(expression):
        match = next((t for t in truths if t.role == "sentence"), None)
    else:
        match = next(
            (
                t
                for t in truths
                if t.role != "sentence" and start <= t.head_start < t.head_end <= end
            ),
            None,
        )
    return (None, None) if match is None else (match.role, list(match.ann_ids))


def run_shard(task: ShardTask) -> ShardOutput:
    """One row per candidate phrase of every sample in the shard, in text order."""
    samples = shards.read_parquet(task.inputs["ingest"]).to_pylist()
    cfg = config_io.from_section(PhrasesConfig, task.config, "phrases")
    dataset = cached_dataset(task.context.dataset, str(task.context.data_root))
    truth_of = getattr(dataset, "phrase_truth", lambda sample_id: None)
    parsed_rows = [s for s in samples if s["source"] not in GIVEN and not cfg.whole_expression]
    parsed = iter(extract_phrases([s["expression"] for s in parsed_rows], cfg))

    rows: dict[str, list[Any]] = {name: [] for name in schemas.PHRASES.names}
    for sample in samples:
        if sample["source"] in GIVEN:
            phrases = GIVEN[sample["source"]](sample, task)
        elif cfg.whole_expression:
            phrases = _whole(sample)
        else:
            phrases = [(p.text, p.start_char, p.end_char, p.head, p.fallback) for p in next(parsed)]
        truths = truth_of(sample["sample_id"])
        for idx, phrase in enumerate(phrases):
            role, denotes = match_truth(phrase, sample["expression"], truths)
            values = (sample["sample_id"], idx, *phrase, role, denotes)
            for name, value in zip(schemas.PHRASES.names, values, strict=True):
                rows[name].append(value)
    return ShardOutput(pa.table(rows, schema=schemas.PHRASES))


SPEC = StageSpec(
    name="phrases",
    inputs=("ingest",),
    schema=schemas.PHRASES,
    run_shard=run_shard,
    read_config=read_config,
    version=2,  # phrase truth columns
)
