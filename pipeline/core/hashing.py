"""Content hashes: files, byte strings, directory trees, and fingerprints of JSON-able parts.

One home for hashing, so the store's shard hashes, the weights ids of checkpoints and the image
keys of ingest are computed the same way everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and fixed separators: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB files (checkpoints) need no memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(root: Path, file_hash: Callable[[Path], str] = sha256_file) -> str:
    """One sha256 over every file under `root` (relative paths and contents), e.g. a Zarr group.

    `file_hash` hashes one file (a caching hasher may stand in for `sha256_file`)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_hash(path).encode())
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (config dicts, hashes, ids)."""
    return sha256_bytes(canonical_json(list(parts)).encode())[:32]
