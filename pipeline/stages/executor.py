"""One executor for every stage: in-process, or Dask (LocalCluster or an existing scheduler).

Stages hand the executor a top-level function and a list of picklable shard tasks. Each task writes
its own shard atomically and returns a small summary, so the bytes on disk never depend on which
executor ran them or in what order tasks finished; results come back in task order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pipeline.core.errors import ConfigError
from pipeline.core.progress import progress_bar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class InProcessExecutor:
    """Runs tasks one after another in this process (the default; best for small jobs)."""

    name = "inprocess"

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], description: str) -> list[R]:
        """Apply `fn` to every task, in order, with a progress bar."""
        results: list[R] = []
        with progress_bar() as bar:
            handle = bar.add_task(description, total=len(tasks))
            for task in tasks:
                results.append(fn(task))
                bar.advance(handle)
        return results


class DaskExecutor:
    """Runs tasks on a Dask cluster; `client` is a connected `distributed.Client`."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], description: str) -> list[R]:
        """Submit every task, update the bar as they finish, return results in task order."""
        from distributed import as_completed

        if not tasks:
            return []
        futures = self.client.map(fn, list(tasks), pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        with progress_bar() as bar:
            handle = bar.add_task(f"{description} [dask]", total=len(tasks))
            for future in as_completed(futures):
                results[index[future.key]] = future.result()  # re-raises the task's error
                bar.advance(handle)
        return results


Executor = InProcessExecutor | DaskExecutor


@contextmanager
def open_executor(spec: str | None) -> Iterator[Executor]:
    """Open the executor named by `--dask`: None → in-process, `local:N`, or `tcp://host:port`."""
    if not spec:
        yield InProcessExecutor()
        return
    from distributed import Client, LocalCluster

    if spec.startswith("local:"):
        try:
            n_workers = int(spec.removeprefix("local:"))
        except ValueError:
            raise ConfigError(f"--dask {spec!r}: expected local:N with N an integer") from None
        if n_workers < 1:
            raise ConfigError(f"--dask {spec!r}: N must be at least 1")
        # One thread per worker process: the stages are CPU-bound Python and torch code.
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
        log.info("dask LocalCluster with %d workers", n_workers)
        try:
            yield DaskExecutor(client, spec)
        finally:
            client.close()
            cluster.close()
        return
    if spec.startswith(("tcp://", "tls://")):
        try:
            client = Client(spec, timeout="10s")
        except OSError as exc:
            raise ConfigError(f"--dask {spec}: cannot reach the scheduler ({exc})") from None
        try:
            yield DaskExecutor(client, spec)
        finally:
            client.close()
        return
    raise ConfigError(f"--dask {spec!r}: expected local:N or tcp://host:port")
