"""DVC: `dvc repro` runs the default pipeline; a store pushed to a remote pulls back identical."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.store.lock import LOCK_FILE
from tests.helpers import REPO, TINY_PARAMS, tree_bytes

DVC = str(Path(os.sys.executable).with_name("dvc"))


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _git(cwd: Path, *args: str) -> str:
    return _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd)


@pytest.mark.slow
def test_repro_push_pull_round_trip(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "data_manifests", "pipeline", "trainer", ".dvc", ".gitignore"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, project / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__")
            )
        else:
            shutil.copy(src, project / name)
    # The repository's params (the default world) at a tiny size, so the test stays quick:
    # scenes → H_sem / H_ref, object-centric images → D_sem → augment → D_ref, simulated CLIP.
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthetic"].update(TINY_PARAMS["synthetic"], n_object_images=4)
    params["augment"].update(n_mosaic=1, n_fusion=1)
    # The train stage with a tiny curriculum (one epoch per phase, one Select round).
    tiny = yaml.safe_load((REPO / "configs" / "world.yaml").read_text())
    tiny["clip"].update(input_size=112)
    tiny["model"].update(hidden_dim=32, ffn_dim=64, stage_indices=[1, 3])
    tiny["curriculum"].update(semantic_epochs=1, ris_epochs_before_select=1, ris_epochs=1,
                              refinement_rounds=1, refinement_epochs=1)  # fmt: skip
    (project / "configs").mkdir()
    (project / "configs" / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    params["train"] = {"config": "configs/tiny.yaml"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    _git(project, "init", "-q")
    out = _run([DVC, "repro"], project)
    store = project / "labels" / "synthetic"
    assert (store / "manifest.json").exists(), out
    assert "is valid" in out
    for name in ("synthetic-objects", "synthetic-objects-ref"):
        assert (project / "labels" / name / "manifest.json").exists(), out
    assert (project / "labels" / "synthetic" / "rounds" / "1" / "selection.parquet").exists()
    metrics = json.loads(_run([DVC, "metrics", "show", "--json"], project))
    shown = json.dumps(metrics)
    assert '"mIoU"' in shown and '"oIoU"' in shown, shown
    assert "runs/default/metrics.json" in shown and "runs/baseline/metrics.json" in shown
    plots = _run([DVC, "plots", "show", "--json"], project)
    assert "runs/default/curves.csv" in plots and '"loss"' in plots

    remote = tmp_path / "remote"
    _run([DVC, "remote", "add", "-d", "team", str(remote)], project)
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "pipeline")
    _run([DVC, "push"], project)

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(project), str(clone))
    assert not (clone / "labels" / "synthetic").exists()
    _run([DVC, "pull"], clone)
    shared = {k: v for k, v in tree_bytes(store).items() if k != LOCK_FILE}  # .dvcignore'd
    assert tree_bytes(clone / "labels" / "synthetic") == shared
    status = _run([DVC, "status"], clone)
    assert "up to date" in status
