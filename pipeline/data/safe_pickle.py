"""Loading refer-toolkit `refs(<split_by>).p` files without running code from them.

The refer toolkit ships its referring expressions as pickles, and `pickle.load` will call any
importable function a pickle names: a refs file downloaded from a mirror or shared through DVC
could run commands on every machine that builds labels. Refs files only ever hold lists, dicts,
strings and numbers, so `load_refs_pickle` unpickles them with an unpickler that can build nothing
else, then checks the structure the refer adapter relies on.

The real files were written by Python 2 (protocol 2). Their `str` values arrive as bytes
(encoding="bytes") and are decoded here as UTF-8, falling back to Latin-1, so no byte is lost and
UTF-8 text written by Python 2 is not mangled into mojibake (which encoding="latin1" would do).
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

from pipeline.core.errors import DatasetError, PptError, UnsafePickleError

log = logging.getLogger(__name__)

# The only globals a refs pickle may name: Python 2 and protocol-2 pickles of sets go through
# REDUCE on the set type, which builds a set of already-unpickled plain values and nothing else.
_ALLOWED_GLOBALS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}

# Keys every ref and every sentence must carry, with the type the refer adapter reads them as.
REF_KEYS: dict[str, type] = {
    "ref_id": int,
    "ann_id": int,
    "image_id": int,
    "split": str,
    "sentences": list,
}
SENTENCE_KEYS: dict[str, type] = {"sent_id": int, "sent": str}


class _RefsUnpickler(pickle.Unpickler):
    """An unpickler that can build only plain containers, strings and numbers."""

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"refs pickle {self._path} wants to load {module}.{name}; refs files may hold only "
                "lists, dicts, strings and numbers — refusing"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refs pickle {self._path} asks for a persistent object ({pid!r}); refs files may hold "
            "only lists, dicts, strings and numbers — refusing"
        )


def _plain(value: Any, path: Path) -> Any:
    """`value` with bytes decoded to str, refusing any type a refs file should not hold."""
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, list):
        return [_plain(v, path) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v, path) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(_plain(v, path) for v in value)
    if isinstance(value, dict):
        return {_plain(k, path): _plain(v, path) for k, v in value.items()}
    # Opcodes such as BYTEARRAY8 build objects without naming a global; refuse them here too.
    raise UnsafePickleError(
        f"refs pickle {path} holds a {type(value).__name__}; refs files may hold only lists, "
        "dicts, strings and numbers — refusing"
    )


def _check_keys(item: Any, keys: dict[str, type], where: str) -> None:
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected a dict, found a {type(item).__name__}")
    for key, kind in keys.items():
        if key not in item:
            raise DatasetError(f"{where}: missing key {key!r} (needs {', '.join(keys)})")
        value = item[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DatasetError(
                f"{where}: key {key!r} is a {type(value).__name__}, expected {kind.__name__}"
            )


def validate_refs(refs: Any, path: Path) -> list[dict]:
    """Check that `refs` is a list of refer-toolkit ref dicts; raise DatasetError naming the ref."""
    if not isinstance(refs, list):
        raise DatasetError(
            f"refs pickle {path} holds a {type(refs).__name__}, expected a list of ref dicts"
        )
    for index, ref in enumerate(refs):
        ref_id = ref.get("ref_id", f"#{index}") if isinstance(ref, dict) else f"#{index}"
        where = f"refs pickle {path}, ref_id {ref_id}"
        _check_keys(ref, REF_KEYS, where)
        for k, sentence in enumerate(ref["sentences"]):
            _check_keys(sentence, SENTENCE_KEYS, f"{where}, sentence {k}")
    return refs


def load_refs_pickle(path: Path) -> list[dict]:
    """Load and validate a refer-toolkit refs pickle, refusing anything but plain data.

    Raises UnsafePickleError when the pickle names any global (os.system, subprocess.Popen, ...)
    or asks for a persistent object, and DatasetError when the file is missing, truncated or
    corrupt, or is not a list of ref dicts with ref_id, ann_id, image_id, split and sentences.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"cannot read refs pickle {path} ({exc.strerror or exc}); check --data-root"
        ) from None
    try:
        raw = _RefsUnpickler(data, path).load()
    except PptError:
        raise
    except Exception as exc:  # a corrupt pickle can fail in many ways; all mean the same to a user
        raise DatasetError(
            f"refs pickle {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "download or copy it again"
        ) from None
    refs = validate_refs(_plain(raw, path), path)
    log.debug("loaded %d refs from %s", len(refs), path)
    return refs
