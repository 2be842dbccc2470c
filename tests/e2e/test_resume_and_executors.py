"""Crash safety and executors: killed builds resume to the same bytes; Dask gives the same bytes.

The reference is the session's in-process build of the 8-image dataset in shards of 4
(`tiny_store`); every other way of building it must end with exactly its bytes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import ConfigError
from pipeline.stages.build import build
from pipeline.stages.executor import open_executor
from pipeline.store.reader import LabelStore
from pipeline.store.validate import validate
from tests.helpers import CLI, TINY_PARAMS, tree_bytes

# Kill points: the build is killed once this file exists in the store (a shard of that stage is
# complete, the next one is being computed), so every kill lands mid-build at a known place.
KILL_AFTER = ("phrases/part-00000.parquet", "encode/part-00000.parquet",
              "attention/part-00001.parquet", "masks/part-00000.parquet")  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    """True once `path` exists while `proc` still runs; False if the build finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return proc.poll() is None
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


def test_killed_build_resumes_to_identical_bytes(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    interrupted = 0
    for marker in KILL_AFTER:
        store = tmp_path / marker.replace("/", "_")
        cmd = [CLI, "build", "--dataset", "synthetic", "--data-root", str(tiny_root),
               "--out", str(store), "--params", str(params)]  # fmt: skip
        proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
        if _wait_for(store / marker, proc):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not (store / "manifest.json").exists():
            interrupted += 1
            assert validate(store)  # an interrupted store is reported incomplete, never valid
        subprocess.run(cmd, check=True, capture_output=True)
        assert tree_bytes(store) == tree_bytes(tiny_store), f"killed after {marker}"
    assert interrupted >= 3  # the kills really landed mid-build


def test_dask_local_cluster_gives_same_bytes(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    dasked = tmp_path / "dask"
    with open_executor("local:2") as executor:
        assert executor.name == "local:2"
        build("synthetic", tiny_root, dasked, TINY_PARAMS, executor)
    assert tree_bytes(dasked) == tree_bytes(tiny_store)
    assert LabelStore(dasked).samples().num_rows > 0


def test_bad_dask_spec_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="local:N"), open_executor("local:two"):
        pass
    with pytest.raises(ConfigError, match="tcp://host:port"), open_executor("spark://x"):
        pass


def test_dask_scheduler_address_gives_same_bytes(
    tmp_path: Path, tiny_root: Path, tiny_store: Path
) -> None:
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    try:
        with open_executor(cluster.scheduler_address) as executor:
            assert executor.name == cluster.scheduler_address
            build("synthetic", tiny_root, tmp_path / "tcp", TINY_PARAMS, executor)
    finally:
        cluster.close()
    assert tree_bytes(tmp_path / "tcp") == tree_bytes(tiny_store)
