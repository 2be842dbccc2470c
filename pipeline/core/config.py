"""params.yaml and config files: YAML mappings into frozen config dataclasses, and back to JSON.

One section per stage (DESIGN §8), each read into that stage's frozen dataclass by `from_section`,
which refuses unknown keys by name; `to_dict` / `jsonable` turn configs and metrics into JSON.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

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
    params = read_yaml_mapping(path, "stage sections")
    for name, section in params.items():
        if section is not None and not isinstance(section, Mapping):
            raise ConfigError(
                f"{path} [{key_names([name])}]: expected a mapping of keys, got "
                f"{type(section).__name__} "
                f"{section!r:.40}"
            )
    return params


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping of `what` (empty file → {})."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} at the top level")
    return data


def key_names(keys: Any) -> str:
    """Keys of a user's YAML for a one-line message: sorted, odd ones (newlines, numbers) quoted."""
    shown = (
        k if isinstance(k, str) and k.isprintable() and k.strip() == k else repr(k) for k in keys
    )
    return ", ".join(sorted(shown))


def from_section(cls: type[C], section: dict[str, Any] | None, where: str) -> C:
    """Build config dataclass `cls` from a params section, refusing unknown keys and values of the
    wrong type by name (a YAML value must be what the field's annotation says)."""
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(
            f"params.yaml [{where}]: expected a mapping of keys, got {type(section).__name__}"
        )
    section = dict(section or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(section) - names
    if unknown:
        raise ConfigError(
            f"params.yaml [{where}]: unknown key(s) {key_names(unknown)}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    hints = _field_hints(cls)
    for name, value in section.items():
        hint = hints.get(name)
        if hint is not None and not _conforms(value, hint):
            raise ConfigError(f"params.yaml [{where}] {name}: {value!r} is not {_describe(hint)}")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in section and isinstance(section[f.name], list):
            section[f.name] = tuple(section[f.name])  # frozen configs hold tuples, not lists
    try:
        return cls(**section)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params.yaml [{where}]: {exc}") from None


def _field_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation this module cannot resolve: left unchecked
        return {}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field annotation (int for float is fine; bool is not an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or origin is list:
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_conforms, value, args))
        return not args or all(_conforms(v, args[0]) for v in value)
    if origin is dict or hint is dict or dataclasses.is_dataclass(hint):
        return isinstance(value, Mapping)
    return True  # other annotations are not checked here


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in names:
        return names[hint]
    return f"of type {getattr(hint, '__name__', None) or str(hint).replace('typing.', '')}"


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
