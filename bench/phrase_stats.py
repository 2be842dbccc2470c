"""Candidates per expression on real RefCOCO/+/g expressions, and phrase-extraction throughput.

    .venv/bin/python bench/phrase_stats.py [--csv-dir DIR] [--raw] [--limit N]

Reads every *.csv under --csv-dir (column `sent`), runs `pipeline.labelling.phrases.extract_phrases`
on each file and prints, per file and overall, the shares of expressions with 0 (fallback: the whole
expression), 1, 2 and 3+ noun-chunk candidates, the mean number of candidates and sentences/s
(single process; the spaCy model is loaded before the clock starts). --raw adds the same table with
every chunk kept (no non-object rules, no cap; the parse repairs still apply), to show what the
rules remove.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from pipeline.labelling.phrases import (
    PhrasesConfig,
    candidate_counts,
    candidate_histogram,
    extract_phrases,
    load_nlp,
)

DEFAULT_CSV_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "refcoco_expressions"


def read_sentences(path: Path, limit: int | None) -> list[str]:
    """The `sent` column of one expressions CSV (first `limit` rows when given)."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [row["sent"] for row in csv.DictReader(fh)]
    return rows[:limit] if limit else rows


def table(cfg: PhrasesConfig, files: dict[str, list[str]]) -> None:
    """Print the histogram per file and overall under `cfg`."""
    load_nlp(cfg.spacy_model)  # load outside the timed region
    header = f"{'file':<26}{'n':>7}{'0 (fb)':>9}{'1':>9}{'2':>9}{'3+':>9}{'mean':>7}{'sent/s':>9}"
    print(header)
    print("-" * len(header))
    all_counts: list[int] = []
    total_s = 0.0
    for name, sentences in files.items():
        t0 = time.perf_counter()
        counts = candidate_counts(extract_phrases(sentences, cfg))
        seconds = time.perf_counter() - t0
        total_s += seconds
        all_counts += counts
        print(row(name, candidate_histogram(counts), len(sentences) / seconds))
    print("-" * len(header))
    print(row("overall", candidate_histogram(all_counts), len(all_counts) / total_s))


def row(name: str, hist: dict[str, float | int], rate: float) -> str:
    """One table line: shares as percentages."""
    shares = "".join(f"{100 * hist[k]:>8.1f}%" for k in ("0", "1", "2", "3+"))
    return f"{name:<26}{hist['n']:>7}{shares}{hist['mean_candidates']:>7.2f}{rate:>9.0f}"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", type=Path, default=DEFAULT_CSV_DIR, help="*.csv with `sent`")
    parser.add_argument("--max-candidates", type=int, default=PhrasesConfig.max_candidates)
    parser.add_argument("--batch-size", type=int, default=PhrasesConfig.batch_size)
    parser.add_argument("--limit", type=int, default=None, help="first N sentences per file")
    parser.add_argument("--raw", action="store_true", help="also: every noun chunk, no rules")
    args = parser.parse_args(argv)

    paths = sorted(args.csv_dir.glob("*.csv"))
    if not paths:
        parser.error(f"--csv-dir {args.csv_dir}: no *.csv files")
    files = {p.name: read_sentences(p, args.limit) for p in paths}
    cfg = PhrasesConfig(max_candidates=args.max_candidates, batch_size=args.batch_size)
    print(f"candidates per expression (max_candidates={cfg.max_candidates}, non-object rules on)")
    table(cfg, files)
    if args.raw:
        raw = dataclasses.replace(cfg, drop_non_objects=False, max_candidates=10**6)
        print("\nevery chunk (no non-object rules, no cap)")
        table(raw, files)


if __name__ == "__main__":
    main()
