"""Ingest: dataset records → sample rows, each image checked, measured and hashed once.

Planning groups the dataset's records by image and packs whole images into shards of about
`shard_size` samples, so every later stage sees all expressions of an image in one shard (what
lets the encoders run once per image). A record whose image is missing or cannot be decoded is
skipped into the rejects table; the build goes on.

`max_images` keeps a deterministic subset of the images (with all their expressions): images are
ranked by a seeded hash of their path and the first N kept, so the subset does not depend on the
order the dataset lists them in, a larger N keeps every image of a smaller one, and it spreads
over the classes instead of taking the first wnids. The paper's "2,836 Mini-ImageNet images" is
this count.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from pipeline.core import config as config_io
from pipeline.core import hashing
from pipeline.core.errors import ConfigError
from pipeline.data.records import Reject, SourceRecord
from pipeline.data.registry import open_dataset
from pipeline.stages.spec import ShardOutput, ShardTask, StageContext, StageSpec
from pipeline.store import schemas
from pipeline.store.verify import HashCache


@dataclass(frozen=True)
class IngestConfig:
    """params.yaml [ingest]."""

    shard_size: int = 512  # samples per shard (whole images are never split across shards)
    splits: tuple[str, ...] | None = None  # splits to ingest; None = every split in the manifest
    max_images: int | None = None  # images to keep (seeded subset); None = all [--max-images]
    subset_seed: int = 0  # seeds which images max_images keeps

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images {self.max_images}: give at least 1, or null for all")


def apply_options(section: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """--max-images overrides ingest.max_images (so it is hashed into the fingerprint)."""
    if ctx.max_images is not None:
        return {**section, "max_images": int(ctx.max_images)}
    return section


def read_config(section: dict[str, Any]) -> dict[str, Any]:
    """Validate the [ingest] section; the command line's --splits overrides it upstream."""
    return config_io.to_dict(config_io.from_section(IngestConfig, section, "ingest"))


def _image_key(record: SourceRecord) -> str:
    return record.image_path


def keep_images(records: list[SourceRecord], max_images: int | None, seed: int) -> list:
    """The records of at most `max_images` images: the lowest seeded hashes of their paths."""
    images = sorted({_image_key(r) for r in records})
    if max_images is None or max_images >= len(images):
        return records

    def rank(path: str) -> str:
        return hashlib.sha256(f"{seed}\0{path}".encode()).hexdigest()

    kept = set(sorted(images, key=rank)[:max_images])
    return [r for r in records if _image_key(r) in kept]


def plan(ctx: StageContext, config: dict[str, Any]) -> list[tuple[Any, str]]:
    """Read the dataset, group records by image, and pack images into shards."""
    cfg = IngestConfig(**{**config, "splits": config["splits"] and tuple(config["splits"])})
    dataset = open_dataset(ctx.dataset, ctx.data_root)
    records, rejects = dataset.records(list(cfg.splits) if cfg.splits else None)
    records = keep_images(records, cfg.max_images, cfg.subset_seed)
    if not records:
        raise ConfigError(
            f"dataset {ctx.dataset!r} under --data-root {ctx.data_root} has no usable records"
            + (f" in splits {list(cfg.splits)}" if cfg.splits else "")
            + (f" ({len(rejects)} rejected; first: {rejects[0].reason})" if rejects else "")
        )
    inputs = _input_hashes(ctx, dataset)
    records = sorted(records, key=lambda r: (_image_key(r), r.sample_id))
    groups = [list(g) for _, g in itertools.groupby(records, key=_image_key)]

    packed: list[list[SourceRecord]] = [[]]
    for group in groups:
        if packed[-1] and len(packed[-1]) + len(group) > cfg.shard_size:
            packed.append([])
        packed[-1].extend(group)

    planned = []
    for k, shard_records in enumerate(packed):
        carried = rejects if k == 0 else []  # dataset-level rejects are reported with shard 0
        images = sorted({r.image_path for r in shard_records})
        sizes = [_size(ctx.data_root / p) for p in images]
        fp = hashing.fingerprint(
            ctx.dataset,
            inputs,
            [asdict(r) for r in shard_records],
            [asdict(r) for r in carried],
            list(zip(images, sizes, strict=True)),
        )
        planned.append(((shard_records, carried), fp))
    return planned


def _input_hashes(ctx: StageContext, dataset: Any) -> list[tuple[str, str | None]]:
    """(path under --data-root, sha256 or None where missing) of the dataset's annotation
    files, hashed once per file version (the store's stat-keyed hash cache): `plan_key`, `plan`
    and `provenance` all ask, and RefCOCO's instances.json alone is ~1 GB."""
    cache = HashCache(ctx.store)
    hashes = sorted(
        (Path(path).relative_to(ctx.data_root).as_posix(),
         cache.sha256(Path(path)) if Path(path).is_file() else None)
        for path in dataset.input_files()
    )  # fmt: skip
    cache.save()
    return hashes


def plan_key(ctx: StageContext, config: dict[str, Any]) -> str:
    """What `plan` reads, without parsing the dataset: its spec, its annotation files (hashed
    once per file version: the store's stat-keyed hash cache) and every file under its images
    directory by name, size and mtime. A RefCOCO-size no-op re-run then costs a directory walk
    (≈ 0.2 s per 20k images) instead of parsing instances.json and re-planning (≈ 35 s)."""
    dataset = open_dataset(ctx.dataset, ctx.data_root)
    images = []
    spec = dataset.spec
    for folder, _, names in os.walk(spec.path(ctx.data_root, spec.images)):
        for name in names:
            path = Path(folder) / name
            st = path.stat()
            images.append((path.relative_to(ctx.data_root).as_posix(), st.st_size,
                           st.st_mtime_ns))  # fmt: skip
    images.sort()
    return hashing.fingerprint(
        ctx.dataset, asdict(spec), config, _input_hashes(ctx, dataset), images
    )


def provenance(ctx: StageContext, config: dict[str, Any]) -> dict[str, Any]:
    """The dataset's annotation files and their sha256, for the store manifest."""
    dataset = open_dataset(ctx.dataset, ctx.data_root)
    return {"dataset": ctx.dataset, "input_sha256": dict(_input_hashes(ctx, dataset))}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _inspect_image(path: Path) -> tuple[int, int, str]:
    """(width, height, sha256) of an image, fully decoded so a truncated file is caught here."""
    data = path.read_bytes()
    with Image.open(path) as image:
        image.load()
        width, height = image.size
    return width, height, hashlib.sha256(data).hexdigest()


def run_shard(task: ShardTask) -> ShardOutput:
    """Check and hash every image of the shard; one sample row per surviving record."""
    records, carried = task.payload
    data_root = task.context.data_root
    rejects = list(carried)
    rows: dict[str, list[Any]] = {name: [] for name in schemas.SAMPLES.names}
    for image_path, group in itertools.groupby(records, key=_image_key):
        group = list(group)
        try:
            width, height, digest = _inspect_image(data_root / image_path)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            reason = f"image {image_path} cannot be read: {type(exc).__name__}: {exc}"
            rejects.extend(Reject("ingest", image_path, r.sample_id, reason) for r in group)
            continue
        for r in group:
            row = asdict(r) | {"image_sha256": digest, "width": width, "height": height}
            for name in schemas.SAMPLES.names:
                rows[name].append(row[name])
    return ShardOutput(pa.table(rows, schema=schemas.SAMPLES), rejects)


SPEC = StageSpec(
    name="ingest",
    inputs=(),
    schema=schemas.SAMPLES,
    run_shard=run_shard,
    plan=plan,
    plan_key=plan_key,
    read_config=read_config,
    apply_options=apply_options,
    provenance=provenance,
)
