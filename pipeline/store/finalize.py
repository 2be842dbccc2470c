"""Finalising a label store: manifest.json, written last, is the store's completion mark.

The manifest lists every shard of every completed stage (path, rows, sha256; Zarr groups by tree
hash), the stages' configs and their combined hash, the code version, the dataset's input file
hashes, the models' weights ids and the store's stats. A store without it is incomplete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pipeline
from pipeline.core import hashing
from pipeline.core.errors import StoreError
from pipeline.store import schemas, shards
from pipeline.store.reader import MANIFEST, LabelStore
from pipeline.store.stage_record import REJECTS_DIR, read_stage_record


def code_version() -> str:
    """The package version. Not the git commit: stores built by equal code from different
    commits must have equal bytes, so that DVC caches and shares them by content."""
    return f"ppt-labels {pipeline.__version__}"


def finalize(store: Path, dataset: str, stages: list[str]) -> dict[str, Any]:
    """Write manifest.json for the completed `stages` of `store`: the store's completion mark.

    The manifest is derived from the stage records alone, so a damaged one is written again."""
    manifest = expected_manifest(store, dataset, stages)
    path = store / MANIFEST
    shards.remove_leftovers(store)  # a manifest a killed finalize never renamed (we hold the lock)
    if written_manifest(path) != manifest:
        shards.write_json(manifest, path)  # last write of a build: the store is now complete
    return manifest


def written_manifest(path: Path) -> Any:
    """The manifest on disk as JSON, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def expected_manifest(store: Path, dataset: str, stages: list[str]) -> dict[str, Any]:
    """The manifest the completed `stages` of `store` call for (what `finalize` writes)."""
    stage_manifests = []
    for name in stages:
        manifest = read_stage_record(store, name)
        if manifest is None:
            raise StoreError(f"{store}: stage {name!r} has not completed; cannot finalise")
        stage_manifests.append(manifest)

    shard_list = []
    for m in stage_manifests:
        for s in m["shards"]:
            shard_list.append(
                {"path": f"{m['table']}/{s['name']}", "rows": s["rows"], "sha256": s["sha256"]}
            )
            shard_list.append(
                {
                    "path": f"{m['table']}/{REJECTS_DIR}/{s['name']}",
                    "rows": s["rejects"],
                    "sha256": s["rejects_sha256"],
                }
            )
            if s.get("arrays_sha256"):
                zarr_name = Path(s["name"]).with_suffix(".zarr").name
                shard_list.append(
                    {
                        "path": f"{m['table']}/{zarr_name}",
                        "rows": s["rows"],
                        "sha256": s["arrays_sha256"],
                        "kind": "zarr",
                    }
                )
    provenance: dict[str, Any] = {}
    for m in stage_manifests:
        provenance.update(m.get("provenance", {}))
    manifest = {
        "schema_version": schemas.SCHEMA_VERSION,
        "dataset": dataset,
        "stages": [
            {k: m[k] for k in ("stage", "table", "config", "config_hash", "rows", "rejects")}
            for m in stage_manifests
        ],
        "config_hash": hashing.fingerprint([m["config_hash"] for m in stage_manifests]),
        "code_version": code_version(),
        "input_sha256": provenance.pop("input_sha256", {}),
        "models": provenance.pop("models", {}),
        "provenance": provenance,
        "shards": shard_list,
    }
    manifest["stats"] = LabelStore(store, manifest).stats()
    return manifest
