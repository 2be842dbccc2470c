"""Shared fixtures: datasets and label stores built once per test run (copy before damaging).

Constants (paths to the real sample data, the small params) live in tests/helpers.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.core.config import from_section
from pipeline.data.synthetic.generator import SyntheticConfig, generate_synthetic
from pipeline.models.frozen import FrozenClip, FrozenSam, build_clip, build_sam
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from tests.helpers import (
    IMAGENET_PARAMS,
    IMAGENET_SAMPLES,
    SAM_VIT_T,
    SMALL_PARAMS,
    TINY_PARAMS,
    TINY_RUN,
    copy_store,
)


def _synthetic(root: Path, params: dict) -> Path:
    generate_synthetic(root, from_section(SyntheticConfig, params["synthetic"], "synthetic"))
    return root


@pytest.fixture(scope="module")
def tiny_clip() -> FrozenClip:
    """A random-init tiny CLIP (no CLIP weights exist on these machines)."""
    return build_clip("ppt-tiny-vit", allow_random=True)


@pytest.fixture(scope="module")
def sam_t() -> FrozenSam:
    """The real SAM vit_t (its weights in ../shared/weights)."""
    return build_sam("vit_t", checkpoint=SAM_VIT_T)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in refer layout (SMALL_PARAMS), generated once per session."""
    return _synthetic(tmp_path_factory.mktemp("synthetic"), SMALL_PARAMS)


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
    copy_store(synthetic_store, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-image synthetic dataset (TINY_PARAMS) for builds that are repeated or killed."""
    return _synthetic(tmp_path_factory.mktemp("tiny-synthetic"), TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path,
               synthetic_store: Path) -> Path:  # fmt: skip
    """The in-process build of `tiny_root` in shards of 4: the reference bytes of the
    determinism, kill-and-resume and executor tests (do not modify).

    Its 8 images are the small dataset's first 8 (one random stream per image), so it starts from
    a copy of the small store's embedding cache and encodes none of them again; the stores record
    images and encoder keys, not where an embedding came from, so its bytes are a fresh build's.
    The tests that compare with it encode for themselves."""
    out = tmp_path_factory.mktemp("tiny-store") / "synthetic"
    shutil.copytree(synthetic_store.parent / "_embeddings", out.parent / "_embeddings")
    build("synthetic", tiny_root, out, TINY_PARAMS, InProcessExecutor())
    return out


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synthetic_store: Path,
             synthetic_root: Path) -> Path:  # fmt: skip
    """A run dir of a tiny real training (TINY_RUN, random-init tiny CLIP, real vit_t SAM) on the
    synthetic store: last.pt, metrics.json, curves, and its CLIP cache in feature_cache/."""
    if not SAM_VIT_T.is_file():
        pytest.skip(f"{SAM_VIT_T} not present")
    import torch

    from pipeline.models.frozen import build_clip, build_sam
    from trainer.config import config_from_dict
    from trainer.loop.runner import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    clip = build_clip("ppt-tiny-vit", allow_random=True)
    sam = build_sam("vit_t", checkpoint=SAM_VIT_T)
    train(config_from_dict(TINY_RUN), [synthetic_store], [synthetic_root], out, clip, sam,
          torch.device("cpu"))  # fmt: skip
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every end-to-end test (tests/e2e: the real CLI, DVC, kill-and-resume) is slow."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)
