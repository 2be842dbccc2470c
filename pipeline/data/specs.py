"""Dataset specs: `data_manifests/<name>.yaml` says what a dataset is and where its files lie.

(The folder keeps the name the team asked for; in code these are "specs", so that "manifest"
means only a label store's manifest.json.) A spec names the adapter kind ("refer", "imagenet" or
"composite"), the splits, and the dataset's files relative to --data-root, so one adapter
serves every dataset of its kind (RefCOCO, RefCOCO+, RefCOCOg umd/google and the synthetic set
are all "refer" manifests; a "composite" dataset's --data-root is a built D_sem label store whose
augment table it reads). Variants are data, not code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pipeline.core.config import REPO_ROOT
from pipeline.core.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

SPECS_DIR = REPO_ROOT / "data_manifests"

KINDS = ("refer", "imagenet", "composite")
LAYOUTS = ("flat", "folders")  # imagenet: classes.json beside the images | one folder per wnid

# Keys each kind must set in its YAML (beyond the common ones), and the ones it may not.
_KIND_KEYS = {
    "refer": ("refs", "instances"),  # and, optionally, phrases
    "imagenet": ("layout", "classes"),
    "composite": ("composites",),
}


@dataclass(frozen=True)
class DatasetSpec:
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
    # refer, optional: phrase ground truth per split, "{split}" in the path (synthetic only)
    phrases: str = ""
    # object-centric (D_sem) data whose build ends with the augment stage (D_ref composites);
    # imagenet datasets always are
    augment: bool = False
    files: tuple[str, ...] = field(init=False)  # annotation files that must exist (ingest hashes)

    def __post_init__(self) -> None:
        truth = tuple(self.phrases.format(split=s) for s in self.splits) if self.phrases else ()
        files = {
            "refer": (self.refs, self.instances, *truth),
            "imagenet": (self.classes,),
            # The augment stage's record (_stage.json) lists its shards' sha256 and config:
            # hashing it (ingest does) ties the composite store to the exact D_sem augment output.
            "composite": (f"{self.composites}/_stage.json",),
        }[self.kind]
        object.__setattr__(self, "files", files)

    def path(self, root: Path, relative: str) -> Path:
        """`relative` (a spec path) under the data root `root`."""
        return Path(root) / PurePosixPath(relative)


def available_specs(specs_dir: Path | None = None) -> list[str]:
    """Names of the datasets with a spec in `specs_dir` (the repository's by default)."""
    directory = Path(specs_dir) if specs_dir is not None else SPECS_DIR
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _require(data: dict[str, Any], key: str, where: Path) -> Any:
    if key not in data or data[key] in (None, "", []):
        raise ConfigError(f"dataset spec {where}: missing required key {key!r}")
    return data[key]


def load_spec(name: str, specs_dir: Path | None = None) -> DatasetSpec:
    """Read `data_manifests/<name>.yaml`; ConfigError naming the available datasets if absent."""
    directory = Path(specs_dir) if specs_dir is not None else SPECS_DIR
    path = directory / f"{name}.yaml"
    if not path.is_file():
        available = available_specs(directory)
        raise ConfigError(
            f"unknown dataset {name!r} (--dataset): no {path}; "
            f"available: {', '.join(available) or 'none'}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset spec {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"dataset spec {path}: expected a mapping at the top level")

    known = {f.name for f in fields(DatasetSpec) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"dataset spec {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    if data.get("name", name) != name:
        raise ConfigError(f"dataset spec {path}: name {data['name']!r} differs from the file")
    kind = _require(data, "kind", path)
    if kind not in KINDS:
        raise ConfigError(f"dataset spec {path}: kind {kind!r} is not one of {', '.join(KINDS)}")
    for key in _KIND_KEYS[kind]:
        _require(data, key, path)
    for other, keys in _KIND_KEYS.items():
        stray = [k for k in keys if other != kind and data.get(k)]
        if stray:
            raise ConfigError(f"dataset spec {path}: key(s) {stray} belong to kind {other!r}")
    if kind != "refer" and data.get("phrases"):
        raise ConfigError(f"dataset spec {path}: key 'phrases' belongs to kind 'refer'")
    if kind == "imagenet" and data["layout"] not in LAYOUTS:
        raise ConfigError(
            f"dataset spec {path}: layout {data['layout']!r} is not one of {', '.join(LAYOUTS)}"
        )
    splits = _require(data, "splits", path)
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise ConfigError(f"dataset spec {path}: splits must be a list of names")

    return DatasetSpec(
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
        phrases=str(data.get("phrases", "")),
        augment=bool(data.get("augment", kind == "imagenet")),
    )


def check_expected_files(spec: DatasetSpec, data_root: Path) -> None:
    """Raise DatasetError naming the first annotation file or image directory that is missing."""
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetError(f"--data-root {root} is not a directory (dataset {spec.name!r})")
    for relative in spec.files:
        if not spec.path(root, relative).is_file():
            raise DatasetError(
                f"dataset {spec.name!r}: expected file {spec.path(root, relative)} is "
                f"missing; point --data-root at the directory that holds {relative}"
            )
    images = spec.path(root, spec.images)
    if not images.is_dir():
        raise DatasetError(
            f"dataset {spec.name!r}: image directory {images} is missing; point --data-root "
            f"at the directory that holds {spec.images}"
        )


def checked_root(spec: DatasetSpec, root: Path, kind: str) -> Path:
    """`root` as the --data-root of `spec`, an adapter of `kind`: the kind must match and the
    spec's files must exist (DatasetError naming the first that is missing)."""
    if spec.kind != kind:
        raise ConfigError(f"dataset {spec.name!r} is of kind {spec.kind!r}, not {kind}")
    check_expected_files(spec, Path(root))
    return Path(root)
