"""Explicit Arrow schemas of every table in the label store (DESIGN §2).

Each stage owns one table directory (`STAGE_TABLES`) and writes only its own columns, keyed by
`sample_id` or by (`sample_id`, `cand_idx`); `pipeline.store.reader.LabelStore` joins them into the
samples and candidates views of DESIGN §2. Owning a directory per stage is what lets every stage be
its own DVC output.
"""

from __future__ import annotations

import pyarrow as pa

# 4: image embeddings in the shared embedding cache, not in the store (pipeline.store.embeddings)
# 3: Zarr arrays sharded, one file per array per shard (2: one file per row); older: refused
SCHEMA_VERSION = 4

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
        # phrase ground truth (synthetic world; null elsewhere): the generator's noun phrase this
        # candidate matches, "referent" | "landmark" | "sentence", and the annotations it denotes
        ("truth_role", pa.string()),
        ("denotes", pa.list_(pa.int64())),
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

ENCODE = pa.schema(
    [
        ("image_sha256", pa.string()),  # one row per distinct image of the shard; its
        # embeddings are in the embedding cache under this sha256 (pipeline.store.embeddings)
        ("height", pa.int32()),  # original image size
        ("width", pa.int32()),
        ("input_height", pa.int32()),  # SAM's resized input (longest side = encoder side)
        ("input_width", pa.int32()),  # before padding; the decoder needs it to unpad masks
    ]
)

ATTENTION = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),
        ("array_row", pa.int32()),  # row of this candidate's (G, G) map in arrays["relevance"]
        ("relevance_source", pa.string()),  # clip | gt-box | gt-mask | centre
    ]
)

MASKS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),
        ("mask_rle", pa.string()),  # COCO RLE counts at the image's original (height, width)
        ("bbox", pa.list_(pa.float32(), 4)),  # the mask's box, COCO xywh pixels; zeros if empty
        ("sam_score", pa.float32()),  # SAM's predicted IoU of the chosen mask
        ("relevance_score", pa.float32()),  # agreement of mask and relevance map, in [0, 1]
    ]
)

POINT = pa.struct([("x", pa.float32()), ("y", pa.float32()), ("label", pa.int8())])

POINTS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("cand_idx", pa.int32()),
        # x / width, y / height in [0, 1]; label 1 inside the mask, 0 outside
        ("points", pa.list_(POINT)),
    ]
)

# One object of a composite: a D_sem sample's pseudo-label transformed into the composite.
COMPOSITE_OBJECT = pa.struct(
    [
        ("source_sample_id", pa.string()),  # the D_sem sample it was pasted from
        ("phrase", pa.string()),  # its class noun: the candidate phrase of the composite store
        ("mask_rle", pa.string()),  # COCO RLE counts at the composite's (height, width)
        ("bbox", pa.list_(pa.float32(), 4)),  # the mask's box, COCO xywh pixels
        ("points", pa.list_(POINT)),  # the source's points through the same map, re-labelled
        ("referent", pa.int8()),  # c: 1 for the object the expression denotes
        ("paste_box", pa.list_(pa.int32(), 4)),  # where the source image went, xywh pixels
        ("sam_score", pa.float32()),  # of the source pseudo-label
        ("relevance_score", pa.float32()),  # of the source pseudo-label
    ]
)

AUGMENT = pa.schema(
    [
        ("composite_id", pa.string()),  # "{kind}/{index:06d}", index in the plan of its kind
        ("kind", pa.string()),  # mosaic | fusion: the composite store's sample source
        ("image_path", pa.string()),  # POSIX, relative to the store: augment/images/<id>.<ext>
        ("image_sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("expression", pa.string()),  # unambiguous for the referent (pipeline/composite_text.py)
        ("relation", pa.string()),  # the expression's template key: left, top right, above, ...
        ("layout", pa.string()),  # Mosaic grid ("2x2") or fusion placement ("top_left")
        ("referent", pa.int32()),  # index of the referent in `objects`
        ("objects", pa.list_(COMPOSITE_OBJECT)),  # Mosaic: tiles row-major; fusion: host, inset
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

# Stage name → the table directory it writes (its DVC output). Two stages may share a table:
# the transfer stages write the masks and points tables that composite stores never prompt SAM for.
STAGE_TABLES: dict[str, str] = {
    "ingest": "samples",
    "phrases": "phrases",
    "split": "split",
    "encode": "encode",
    "attention": "attention",
    "masks": "masks",
    "points": "points",
    "augment": "augment",
    "transfer_masks": "masks",
    "transfer_points": "points",
}

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "phrases": PHRASES,
    "split": SPLIT,
    "encode": ENCODE,
    "attention": ATTENTION,
    "masks": MASKS,
    "points": POINTS,
    "augment": AUGMENT,
}
