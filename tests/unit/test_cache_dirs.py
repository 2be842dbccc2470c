"""Caches several processes may build at once (the trainer's CLIP-feature and target caches):
each writer fills a directory of its own, the first complete one to be renamed into place wins,
and the leftovers of writers that died are cleared, those of live ones left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.store.shards import private_dir, publish_dir


def _complete(directory: Path, content: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "data.txt").write_text(content)
    (directory / "done.json").write_text("{}")
    return directory


def test_the_first_complete_copy_wins_and_later_ones_are_dropped(tmp_path: Path) -> None:
    out = tmp_path / "cache-key"
    mine = private_dir(out)
    assert mine.name == f".cache-key.tmp-{os.getpid()}" and mine.is_dir()
    (mine / "stale.txt").write_text("from a killed attempt of this process")
    mine = private_dir(out)
    assert list(mine.iterdir()) == []  # fresh
    other = _complete(tmp_path / ".cache-key.tmp-1", "the other writer's")  # pid 1: alive
    publish_dir(other, out)
    _complete(mine, "mine")
    publish_dir(mine, out)
    assert (out / "data.txt").read_text() == "the other writer's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache-key"]


def test_an_incomplete_cache_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "cache-key"
    out.mkdir()
    (out / "data.txt").write_text("half written by an older layout")
    publish_dir(_complete(private_dir(out), "whole"), out)
    assert (out / "data.txt").read_text() == "whole"


def test_leftovers_of_dead_writers_go_those_of_live_ones_stay(tmp_path: Path) -> None:
    out = tmp_path / "cache-key"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f".cache-key.tmp-{int(done.stdout)}"
    live = tmp_path / f".cache-key.tmp-{os.getppid()}"
    unrelated = tmp_path / f".other-key.tmp-{int(done.stdout)}"
    for d in (dead, live, unrelated):
        d.mkdir()
    private_dir(out)
    assert not dead.exists()
    assert live.exists() and unrelated.exists()
