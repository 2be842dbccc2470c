"""dvc.yaml cannot miss an import: every file a stage's code imports is one of its deps.

For each DVC stage, the code that decides its outputs is the import closure (grimp, every import
statement, function-level ones included) of its entry modules; each file of that closure must lie
under a path the stage lists in `deps`. When a stage module gains an import, this test names the
file to add. (cli/ is left out by design: it only turns flags into params and options, which DVC
tracks as params; see dvc.yaml's header.)
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
import yaml

from tests.helpers import REPO

# DVC stage → the modules whose code runs in it.
ENTRY_MODULES = {
    "synthesize": ("pipeline.data.synthetic.generator",),
    "ingest": ("pipeline.stages.ingest",),
    "phrases": ("pipeline.stages.phrases",),
    "split": ("pipeline.stages.split",),
    "encode": ("pipeline.stages.encode",),
    "attention": ("pipeline.stages.attention",),
    "masks": ("pipeline.stages.masks",),
    "points": ("pipeline.stages.points",),
    "augment": ("pipeline.stages.augment",),
    "finalize": ("pipeline.store.finalize", "pipeline.store.validate"),
    "composite": ("pipeline.stages.build", "pipeline.store.validate"),
    "train": ("trainer.loop.runner",),
    "baseline": ("trainer.inference.evaluate",),
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("pipeline", "trainer", "cli")


def _file(module: str) -> str:
    path = REPO / Path(*module.split("."))
    return (
        (path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
        .relative_to(REPO)
        .as_posix()
    )


def _closure(graph: grimp.ImportGraph, modules: tuple[str, ...]) -> set[str]:
    found = set(modules)
    for module in modules:
        found |= graph.find_upstream_modules(module)
    return {_file(m) for m in found}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_has_entry_modules() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(ENTRY_MODULES)


@pytest.mark.parametrize("stage", sorted(ENTRY_MODULES))
def test_stage_deps_cover_its_imports(stage: str, graph: grimp.ImportGraph) -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = (spec.get("do") or spec)["deps"]
    missing = sorted(p for p in _closure(graph, ENTRY_MODULES[stage]) if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r}: add to deps {missing}"


def test_a_new_import_would_be_caught(graph: grimp.ImportGraph) -> None:
    # The check itself: the points stage does not import the prompting rules today; were it to,
    # its closure would hold a file its deps do not cover.
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["points"]["do"]
    closure = _closure(graph, ("pipeline.stages.points", "pipeline.labelling.prompting"))
    assert not all(_covered(p, spec["deps"]) for p in closure)
