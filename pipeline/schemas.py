"""Explicit Arrow schemas of every table in the label store (DESIGN §2).

Each stage owns one table directory and writes only its own columns, keyed by `sample_id` or by
(`sample_id`, `cand_idx`); `pipeline.store.LabelStore` joins them into the samples and candidates
views of DESIGN §2. Owning a directory per stage is what lets every stage be its own DVC output.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),  # unique in the store, stable across runs
        ("image_id", pa.string()),  # the dataset's own image id
        ("image_sha256", pa.string()),  # content hash of the image file
        ("image_path", pa.string()),  # POSIX, relative to --data-root
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("split", pa.string()),
        ("expression", pa.string()),
        ("source", pa.string()),  # refcoco | imagenet | synthetic | mosaic | fusion
        ("ref_id", pa.int64()),  # -1 where none
        ("ann_id", pa.int64()),  # ground-truth annotation id, read only by evaluation; -1 if none
        ("category", pa.string()),  # ground-truth category name, statistics only
    ]
)

PHRASES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),  # position of the candidate in the expression, 0-based
        ("phrase", pa.string()),  # noun chunk text as written in the expression
        ("start_char", pa.int32()),
        ("end_char", pa.int32()),
        ("head", pa.string()),  # lemma of the chunk's root
        ("fallback", pa.bool_()),  # no noun chunk: the whole expression is the candidate
    ]
)

SPLIT = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),
        ("subset", pa.string()),  # H_sem | H_ref | D_sem | D_ref
        ("n_candidates", pa.int32()),
        ("referent", pa.int8()),  # c: 1 = this candidate is the referent, 0 = unknown / not
    ]
)

REJECTS = pa.schema(
    [
        ("stage", pa.string()),
        ("file", pa.string()),
        ("record", pa.string()),
        ("reason", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "phrases": PHRASES,
    "split": SPLIT,
}
