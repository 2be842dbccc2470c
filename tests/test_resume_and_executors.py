"""Crash safety and executors: killed builds resume to the same bytes; Dask gives the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import SMALL_PARAMS, tree_bytes

from pipeline.build import build
from pipeline.executor import open_executor
from pipeline.store import LabelStore, validate

CLI = [str(Path(sys.executable).with_name("ppt-labels"))]


def _params_file(tmp_path: Path, shard_size: int) -> Path:
    path = tmp_path / "params.yaml"
    params = {**SMALL_PARAMS, "ingest": {"shard_size": shard_size}}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow
def test_killed_build_resumes_to_identical_bytes(tmp_path: Path, synthetic_root: Path) -> None:
    params = _params_file(tmp_path, shard_size=4)  # many small shards: kills land mid-stage
    argv = ["build", "--dataset", "synthetic", "--data-root", str(synthetic_root)]
    reference = tmp_path / "reference"
    subprocess.run([*CLI, *argv, "--out", str(reference), "--params", str(params)], check=True)
    assert validate(reference) == []

    interrupted = 0
    for delay in (1.5, 2.5, 3.5, 5.0):
        store = tmp_path / f"killed-{delay}"
        cmd = [*CLI, *argv, "--out", str(store), "--params", str(params)]
        proc = subprocess.Popen(cmd, start_new_session=True)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not (store / "manifest.json").exists():
            interrupted += 1
            assert validate(store)  # an interrupted store is reported incomplete, never valid
        subprocess.run(cmd, check=True, capture_output=True)
        assert tree_bytes(store) == tree_bytes(reference), f"kill after {delay}s"
    assert interrupted >= 2  # the kills really landed mid-build


@pytest.mark.slow
def test_dask_local_cluster_gives_same_bytes(tmp_path: Path, synthetic_root: Path) -> None:
    inprocess, dasked = tmp_path / "inprocess", tmp_path / "dask"
    with open_executor(None) as executor:
        build("synthetic", synthetic_root, inprocess, SMALL_PARAMS, executor)
    with open_executor("local:2") as executor:
        assert executor.name == "local:2"
        build("synthetic", synthetic_root, dasked, SMALL_PARAMS, executor)
    assert tree_bytes(dasked) == tree_bytes(inprocess)
    assert LabelStore(dasked).samples().num_rows > 0


def test_bad_dask_spec_is_a_clear_error() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="local:N"), open_executor("local:two"):
        pass
    with pytest.raises(ConfigError, match="tcp://host:port"), open_executor("spark://x"):
        pass


@pytest.mark.slow
def test_dask_scheduler_address_gives_same_bytes(
    tmp_path: Path, synthetic_store: Path, synthetic_root: Path
) -> None:
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    try:
        with open_executor(cluster.scheduler_address) as executor:
            assert executor.name == cluster.scheduler_address
            build("synthetic", synthetic_root, tmp_path / "tcp", SMALL_PARAMS, executor)
    finally:
        cluster.close()
    assert tree_bytes(tmp_path / "tcp") == tree_bytes(synthetic_store)
