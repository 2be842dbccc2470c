"""The dataset card: what a label store holds, in numbers (`ppt-labels stats`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import mean, median
from typing import Any

from pipeline.store.reader import LabelStore


def dataset_card(root: Path, top: int = 8) -> dict[str, Any]:
    """Counts and distributions of a store: sizes, splits, subsets, candidates, text, rejects."""
    store = LabelStore(root)
    manifest = store.manifest
    samples = store.samples()
    lengths = [len(e.split()) for e in samples.column("expression").to_pylist()]
    card: dict[str, Any] = {
        "dataset": manifest["dataset"],
        "schema_version": manifest["schema_version"],
        "code_version": manifest["code_version"],
        "models": manifest.get("models", {}),
        **manifest["stats"],
        "sources": dict(sorted(Counter(samples.column("source").to_pylist()).items())),
        "words_per_expression": {
            "mean": round(mean(lengths), 2) if lengths else 0.0,
            "median": median(lengths) if lengths else 0,
            "max": max(lengths, default=0),
        },
        "top_categories": Counter(samples.column("category").to_pylist()).most_common(top),
    }
    if "phrases" in store.tables:
        phrases = store.table("phrases")
        card["top_phrase_heads"] = Counter(phrases.column("head").to_pylist()).most_common(top)
        card["fallback_share"] = round(
            sum(phrases.column("fallback").to_pylist()) / max(samples.num_rows, 1), 4
        )
        card.update(phrase_truth_match(phrases.to_pydict()))
    rejects = store.rejects()
    card["reject_reasons"] = Counter(
        f"{stage}: {reason.split(':')[0]}"
        for stage, reason in zip(
            rejects.column("stage").to_pylist(), rejects.column("reason").to_pylist(), strict=True
        )
    ).most_common(top)
    return card


def phrase_truth_match(phrases: dict[str, list[Any]]) -> dict[str, Any]:
    """How the parser's candidates meet the generator's phrases (stores with phrase truth).

    candidates_matched: share of candidates that match a truth noun phrase; samples_with_referent:
    share of samples one of whose candidates is the referent's own phrase.
    """
    roles = phrases.get("truth_role") or []
    if not any(role is not None for role in roles):
        return {}
    samples: dict[str, bool] = {}
    for sample_id, role in zip(phrases["sample_id"], roles, strict=True):
        samples[sample_id] = samples.get(sample_id, False) or role in ("referent", "sentence")
    return {
        "candidates_matched": round(sum(r is not None for r in roles) / len(roles), 4),
        "samples_with_referent": round(sum(samples.values()) / len(samples), 4),
    }
