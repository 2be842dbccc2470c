"""params.yaml and config files: YAML mappings into frozen config dataclasses, and back to JSON.

One section per stage (DESIGN §8), each read into that stage's frozen dataclass by `from_section`,
which refuses unknown keys by name; `to_dict` / `jsonable` turn configs and metrics into JSON.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.core.errors import ConfigError

C = TypeVar("C")

# The checkout's root: params.yaml, data_manifests/ and the relative default checkpoints live there.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"


def load_params(path: Path | None) -> dict[str, Any]:
    """Read params.yaml (the repository's own when `path` is None and it exists; else {})."""
    if path is None:
        if not DEFAULT_PARAMS.exists():
            return {}
        path = DEFAULT_PARAMS
    if not path.exists():
        raise ConfigError(f"--params {path}: no such file")
    return read_yaml_mapping(path, "stage sections")


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping of `what` (empty file → {})."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} at the top level")
    return data


def from_section(cls: type[C], section: dict[str, Any] | None, where: str) -> C:
    """Build config dataclass `cls` from a params section, refusing unknown keys by name."""
    section = dict(section or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - names)
    if unknown:
        raise ConfigError(
            f"params.yaml [{where}]: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in section and isinstance(section[f.name], list):
            section[f.name] = tuple(section[f.name])  # frozen configs hold tuples, not lists
    try:
        return cls(**section)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params.yaml [{where}]: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-able dict (tuples become lists) for hashing and manifests."""
    return jsonable(dataclasses.asdict(config))


def jsonable(value: Any) -> Any:
    """`value` with tuples as lists and NaN as None, recursively: what JSON can hold.

    NaN is how an undefined metric (a row with n = 0) is carried in Python; JSON has no NaN, and
    `null` says "undefined" to every reader (dvc metrics, pandas, the report).
    """
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
