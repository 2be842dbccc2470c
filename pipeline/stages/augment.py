"""Augment: D_sem pseudo-labels → D_ref composites (Mosaic, fusion), materialised in the store.

Runs in a built D_sem (ImageNet) store after points. Its sources are the D_sem samples that
survived the masks stage's quality gates (a masks and a points row, a non-empty mask). Planning
is global (any composite may take any source): `plan_composites` draws the specs from
augment.seed, and they are packed into shards of `shard_size` composites. Each shard renders its
composites with `pipeline.labelling.composites` (masks and points transformed exactly, never SAM
again), writes each image to `augment/images/{mosaic,fusion}/NNNNNN.{png,jpg}` (temp, then rename)
and one table row per composite with its objects (schemas.AUGMENT). A planned composite that renders
to nothing (a tiny mask, a hidden host, no unambiguous expression) becomes a reject.

The `composite` dataset kind (pipeline/composite_dataset.py) reads this table as a dataset, so
`ppt-labels build --dataset imagenet-mini-ref --data-root labels/imagenet-mini` turns the
composites into an ordinary label store (the encode stage computes their SAM embeddings).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core import config as config_io
from pipeline.core import hashing
from pipeline.core.errors import ConfigError, StoreError
from pipeline.data.imagenet import class_noun
from pipeline.data.records import Reject
from pipeline.labelling.composites.plan import CompositeConfig, plan_composites
from pipeline.labelling.composites.render import SourceObject, render_composite
from pipeline.stages.spec import ShardOutput, ShardTask, StageContext, StageSpec
from pipeline.store import schemas, shards
from pipeline.store.stage_record import read_stage_record, stage_dir

log = logging.getLogger(__name__)

SOURCE_SUBSET = "D_sem"  # composites are made of these samples only
FORMATS = {"png": "PNG", "jpg": "JPEG"}  # image_format → PIL format
# Why a planned composite renders to nothing, per kind (render_composite returns no reason).
EMPTY_REASONS = {
    "mosaic": "no valid Mosaic: an object's mask is under augment.min_mask_pixels at tile size, "
    "or no position word names the referent unambiguously (a same-class neighbour); expected "
    "for some plans, raise augment.n_mosaic for more composites",
    "fusion": "no valid fusion: the inset hides more than 1 - augment.min_visible of the host's "
    "mask, a mask is under augment.min_mask_pixels, or no relation holds clearly and "
    "unambiguously; expected for some plans, raise augment.n_fusion for more composites",
}


@dataclass(frozen=True)
class AugmentConfig:
    """params.yaml [augment] keys of the stage itself; the section's other keys (geometry, counts,
    seed) are `pipeline.labelling.composites.plan.CompositeConfig`'s."""

    shard_size: int = 256  # composites per shard
    image_format: str = "jpg"  # png (lossless, ~5x larger) | jpg; the sources are JPEGs already
    jpeg_quality: int = 95  # jpg only

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        if self.image_format not in FORMATS:
            raise ValueError(f"image_format {self.image_format!r}: choose {', '.join(FORMATS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality}: give 1-100")


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def split_section(section: dict[str, Any]) -> tuple[AugmentConfig, CompositeConfig]:
    """The [augment] section as the stage's own config and the composite library's config."""
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"params.yaml [augment]: expected a mapping of keys, got {section!r:.40}")
    section = dict(section or {})
    unknown = set(section) - _names(AugmentConfig) - _names(CompositeConfig)
    if unknown:
        known = sorted(_names(AugmentConfig) | _names(CompositeConfig))
        raise ConfigError(
            f"params.yaml [augment]: unknown key(s) {config_io.key_names(unknown)}; "
            f"known keys: {', '.join(known)}"
        )
    own = {k: v for k, v in section.items() if k in _names(AugmentConfig)}
    lib = {k: v for k, v in section.items() if k in _names(CompositeConfig)}
    return (
        config_io.from_section(AugmentConfig, own, "augment"),
        config_io.from_section(CompositeConfig, lib, "augment"),
    )


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate [augment] (both dataclasses) into one JSON-able dict."""
    own, lib = split_section(section)
    return {**config_io.to_dict(own), **config_io.to_dict(lib)}


def _stage_rows(store: Path, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All rows of a finished stage of `store`, and its shards' sha256."""
    manifest = read_stage_record(store, name)
    if manifest is None:
        raise StoreError(
            f"augment reads stage {name!r}, which has not completed in {store}: run "
            f"`ppt-labels stage {name}` (or `ppt-labels build`) on the D_sem store first"
        )
    directory = stage_dir(store, name)
    rows: list[dict[str, Any]] = []
    for shard in manifest["shards"]:
        rows.extend(shards.read_parquet(directory / shard["name"]).to_pylist())
    return rows, [shard["sha256"] for shard in manifest["shards"]]


def gather_sources(store: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """sample_id → what a composite needs of a gated-in D_sem sample; the input shards' sha256."""
    samples, h1 = _stage_rows(store, "ingest")
    split, h2 = _stage_rows(store, "split")
    masks, h3 = _stage_rows(store, "masks")
    points, h4 = _stage_rows(store, "points")
    d_sem = {r["sample_id"] for r in split if r["subset"] == SOURCE_SUBSET and r["cand_idx"] == 0}
    mask_of = {r["sample_id"]: r for r in masks if r["cand_idx"] == 0}
    points_of = {r["sample_id"]: r["points"] for r in points if r["cand_idx"] == 0}
    sources = {}
    for s in samples:
        sid = s["sample_id"]
        mask = mask_of.get(sid)
        if sid not in d_sem or mask is None or sid not in points_of or mask["bbox"][2] <= 0:
            continue  # gated out (no mask row) or not D_sem
        sources[sid] = {
            "image_path": s["image_path"],
            "image_sha256": s["image_sha256"],
            "class_name": s["category"],
            "mask_rle": mask["mask_rle"],
            "points": [(p["x"], p["y"], p["label"]) for p in points_of[sid]],
            "sam_score": mask["sam_score"],
            "relevance_score": mask["relevance_score"],
        }
    return sources, [*h1, *h2, *h3, *h4]


def plan(ctx: StageContext, config: dict[str, Any]) -> list[tuple[Any, str]]:
    """Plan every composite over the store's D_sem sources; pack them into shards."""
    own, lib = split_section(config)
    sources, input_hashes = gather_sources(ctx.store)
    carried: list[Reject] = []
    if len(sources) < 2:
        reason = (
            f"{len(sources)} D_sem sample(s) passed the masks gates: composites need 2 (4 for a "
            "2x2 Mosaic); ingest more images (--max-images) or loosen masks.min_area_frac etc."
        )
        log.warning("augment: %s", reason)
        carried.append(Reject("augment", "masks", "augment", reason))
        specs = []
    else:
        specs = plan_composites(list(sources), lib)
    chunks = [specs[i : i + own.shard_size] for i in range(0, len(specs), own.shard_size)]
    planned = []
    for k, chunk in enumerate(chunks or [[]]):  # one shard at least: the table always exists
        used = {sid: sources[sid] for spec in chunk for sid in spec.source_ids}
        rejects = carried if k == 0 else []
        fp = hashing.fingerprint(
            input_hashes,
            [dataclasses.asdict(s) for s in chunk],
            dict(sorted(used.items())),
            [dataclasses.asdict(r) for r in rejects],
        )
        planned.append(((chunk, used, rejects), fp))
    log.info("augment: %d sources, %d composites planned", len(sources), len(specs))
    return planned


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


def write_image(image: np.ndarray, path: Path, own: AugmentConfig) -> str:
    """Encode (H, W, 3) uint8 as PNG / JPEG at `path` atomically; returns the bytes' sha256."""
    buffer = io.BytesIO()
    options = {"quality": own.jpeg_quality} if own.image_format == "jpg" else {}
    Image.fromarray(image).save(buffer, format=FORMATS[own.image_format], **options)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashing.sha256_bytes(data)


def run_shard(task: ShardTask) -> ShardOutput:
    """Render the shard's composites, write their images, one row per composite."""
    specs, used, rejects = task.payload
    rejects = list(rejects)
    own, lib = split_section(task.config)
    out_dir = Path(task.out_path).parent  # <store>/augment
    data_root = task.context.data_root

    @functools.lru_cache(maxsize=256)
    def load(sample_id: str) -> SourceObject:
        src = used[sample_id]
        image = _load_rgb(data_root / src["image_path"])
        return SourceObject(sample_id, image, src["mask_rle"], src["class_name"], src["points"])

    rows: dict[str, list[Any]] = {name: [] for name in schemas.AUGMENT.names}
    for spec in specs:
        comp = render_composite(spec, load, lib)
        if comp is None:
            reason = EMPTY_REASONS[spec.kind]
            rejects.append(Reject("augment", "augment", spec.composite_id, reason))
            continue
        relative = f"{out_dir.name}/images/{spec.composite_id}.{own.image_format}"
        digest = write_image(comp.image, out_dir.parent / relative, own)
        objects = [
            {
                "source_sample_id": o.source_sample_id,
                "phrase": class_noun(o.class_name),
                "mask_rle": o.mask_rle,
                "bbox": list(o.bbox),
                "points": [{"x": x, "y": y, "label": label} for x, y, label in o.points],
                "referent": o.referent,
                "paste_box": list(o.paste_box),
                "sam_score": used[o.source_sample_id]["sam_score"],
                "relevance_score": used[o.source_sample_id]["relevance_score"],
            }
            for o in comp.objects
        ]
        height, width = comp.image.shape[:2]
        values = {
            "composite_id": spec.composite_id,
            "kind": comp.kind,
            "image_path": relative,
            "image_sha256": digest,
            "width": width,
            "height": height,
            "expression": comp.expression,
            "relation": comp.expression_spec.relation,
            "layout": spec.layout,
            "referent": comp.referent_index,
            "objects": objects,
        }
        for name in schemas.AUGMENT.names:
            rows[name].append(values[name])
    return ShardOutput(pa.table(rows, schema=schemas.AUGMENT), rejects)


SPEC = StageSpec(
    name="augment",
    inputs=(),  # planned from the whole store (ingest, split, masks, points): see `plan`
    schema=schemas.AUGMENT,
    run_shard=run_shard,
    plan=plan,
    read_config=read_config,
)
