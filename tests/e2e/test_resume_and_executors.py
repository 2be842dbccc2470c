"""Executors: Dask gives the same bytes as the in-process build.

The reference is the session's in-process build of the 8-image dataset in shards of 4
(`tiny_store`); every other way of building it must end with exactly its bytes (killed builds:
tests/e2e/test_faults.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError
from pipeline.stages.build import build
from pipeline.stages.executor import open_executor
from pipeline.store.reader import LabelStore
from tests.helpers import TINY_PARAMS, tree_bytes


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

    # The first stages (spaCy on a worker of another process): every stage after them runs
    # through the same executor code, models included, byte-checked by the local-cluster test.
    stages = ("ingest", "phrases", "split")
    tables = {"samples", "phrases", "split"}  # ingest writes the samples table
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    try:
        with open_executor(cluster.scheduler_address) as executor:
            assert executor.name == cluster.scheduler_address
            build("synthetic", tiny_root, tmp_path / "tcp", TINY_PARAMS, executor, stages=stages)
    finally:
        cluster.close()
    got, want = (
        {k: v for k, v in tree_bytes(store).items() if k.split("/")[0] in tables}
        for store in (tmp_path / "tcp", tiny_store)
    )
    assert got == want and {k.split("/")[0] for k in got} == tables
