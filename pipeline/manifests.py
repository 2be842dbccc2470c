"""Dataset manifests: `data_manifests/<name>.yaml` says what a dataset is and where its files lie.

A manifest names the adapter kind ("refer", "imagenet" or "composite"), the splits, and the
dataset's files relative to --data-root, so one adapter serves every dataset of its kind (RefCOCO,
RefCOCO+, RefCOCOg umd/google and the synthetic set are all "refer" manifests; a "composite"
dataset's --data-root is a built D_sem label store whose augment table it reads). Variants are
data, not code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pipeline.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

MANIFESTS_DIR = Path(__file__).resolve().parent.parent / "data_manifests"

KINDS = ("refer", "imagenet", "composite")
LAYOUTS = ("flat", "folders")  # imagenet: classes.json beside the images | one folder per wnid

# Keys each kind must set in its YAML (beyond the common ones), and the ones it may not.
_KIND_KEYS = {
    "refer": ("refs", "instances"),
    "imagenet": ("layout", "classes"),
    "composite": ("composites",),
}


@dataclass(frozen=True)
class DatasetManifest:
    """One dataset as described by its YAML file; paths are POSIX, relative to --data-root."""

    name: str  # the YAML file's stem, e.g. "refcoco"; prefixes every sample_id
    kind: str  # "refer" | "imagenet" | "composite": which adapter reads it
    description: str  # one paragraph for humans: origin, licence, split scheme
    source: str  # SourceRecord.source of its records (refcoco | imagenet | synthetic ...)
    splits: tuple[str, ...]  # every split the dataset defines, in the order builds list them
    images: str  # directory the images' file names are relative to
    refs: str = ""  # refer: the refer-toolkit refs(<split_by>).p pickle
    instances: str = ""  # refer: the COCO instances.json with images, annotations, categories
    layout: str = ""  # imagenet: "flat" (classes.json lists files) | "folders" (a folder per wnid)
    classes: str = ""  # imagenet: classes.json (flat) | wnid → name map, JSON or text (folders)
    composites: str = ""  # composite: the augment table's directory in the D_sem store
    files: tuple[str, ...] = field(init=False)  # annotation files that must exist (ingest hashes)

    def __post_init__(self) -> None:
        files = {
            "refer": (self.refs, self.instances),
            "imagenet": (self.classes,),
            # The augment stage's manifest lists its shards' sha256 and config: hashing it
            # (ingest does) ties the composite store to the exact D_sem augment output.
            "composite": (f"{self.composites}/_stage.json",),
        }[self.kind]
        object.__setattr__(self, "files", files)

    def path(self, root: Path, relative: str) -> Path:
        """`relative` (a manifest path) under the data root `root`."""
        return Path(root) / PurePosixPath(relative)


def available_manifests(manifests_dir: Path | None = None) -> list[str]:
    """Names of the datasets with a manifest in `manifests_dir` (the repository's by default)."""
    directory = Path(manifests_dir) if manifests_dir is not None else MANIFESTS_DIR
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _require(data: dict[str, Any], key: str, where: Path) -> Any:
    if key not in data or data[key] in (None, "", []):
        raise ConfigError(f"dataset manifest {where}: missing required key {key!r}")
    return data[key]


def load_manifest(name: str, manifests_dir: Path | None = None) -> DatasetManifest:
    """Read `data_manifests/<name>.yaml`; ConfigError naming the available datasets if absent."""
    directory = Path(manifests_dir) if manifests_dir is not None else MANIFESTS_DIR
    path = directory / f"{name}.yaml"
    if not path.is_file():
        available = available_manifests(directory)
        raise ConfigError(
            f"unknown dataset {name!r} (--dataset): no {path}; "
            f"available: {', '.join(available) or 'none'}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset manifest {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"dataset manifest {path}: expected a mapping at the top level")

    known = {f.name for f in fields(DatasetManifest) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"dataset manifest {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    if data.get("name", name) != name:
        raise ConfigError(f"dataset manifest {path}: name {data['name']!r} differs from the file")
    kind = _require(data, "kind", path)
    if kind not in KINDS:
        raise ConfigError(
            f"dataset manifest {path}: kind {kind!r} is not one of {', '.join(KINDS)}"
        )
    for key in _KIND_KEYS[kind]:
        _require(data, key, path)
    for other, keys in _KIND_KEYS.items():
        stray = [k for k in keys if other != kind and data.get(k)]
        if stray:
            raise ConfigError(f"dataset manifest {path}: key(s) {stray} belong to kind {other!r}")
    if kind == "imagenet" and data["layout"] not in LAYOUTS:
        raise ConfigError(
            f"dataset manifest {path}: layout {data['layout']!r} is not one of {', '.join(LAYOUTS)}"
        )
    splits = _require(data, "splits", path)
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise ConfigError(f"dataset manifest {path}: splits must be a list of names")

    return DatasetManifest(
        name=name,
        kind=kind,
        description=str(data.get("description", "")).strip(),
        source=str(_require(data, "source", path)),
        splits=tuple(splits),
        images=str(data.get("images", ".")),
        refs=str(data.get("refs", "")),
        instances=str(data.get("instances", "")),
        layout=str(data.get("layout", "")),
        classes=str(data.get("classes", "")),
        composites=str(data.get("composites", "")),
    )


def check_expected_files(manifest: DatasetManifest, data_root: Path) -> None:
    """Raise DatasetError naming the first annotation file or image directory that is missing."""
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetError(f"--data-root {root} is not a directory (dataset {manifest.name!r})")
    for relative in manifest.files:
        if not manifest.path(root, relative).is_file():
            raise DatasetError(
                f"dataset {manifest.name!r}: expected file {manifest.path(root, relative)} is "
                f"missing; point --data-root at the directory that holds {relative}"
            )
    images = manifest.path(root, manifest.images)
    if not images.is_dir():
        raise DatasetError(
            f"dataset {manifest.name!r}: image directory {images} is missing; point --data-root "
            f"at the directory that holds {manifest.images}"
        )
