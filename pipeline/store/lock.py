"""The store lock: one writer at a time per label store, named when another one holds it.

Every command that writes a store (build, stage, finalize, a Select round, validate --repair)
holds `<store>/.ppt-lock` exclusively while it writes (export only reads a store). A second
writer fails at once with one line naming the holder (host, pid, command, since when), or, with
`--wait`, waits for it.

`fcntl.flock` rather than the `filelock` package: the holder's record is written into the lock
file itself, and filelock opens its file with O_TRUNC on every attempt, which would erase the
holder's record whenever another process tries. The kernel drops a flock when its process dies
(kill -9 included), so a crash never leaves a stale lock; the record of a dead holder is simply
overwritten by the next one. On release the file is emptied, so an unlocked store's bytes do not
depend on who wrote it last. flock is advisory and local to a host's view of the file: on NFS it
holds only where the mount supports it (Linux NFSv4 does).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.errors import StoreError

log = logging.getLogger(__name__)

LOCK_FILE = ".ppt-lock"
_HELD: dict[Path, int] = {}  # stores this process holds → nesting depth (the lock is re-entrant)


class StoreLockedError(StoreError):
    """Another process holds the store's lock."""


def _holder(handle: int) -> str:
    """The lock file's record of its holder, as words ("pid 12 on host (cmd) since ...")."""
    os.lseek(handle, 0, os.SEEK_SET)
    raw = os.read(handle, 1 << 16)
    try:
        who = json.loads(raw)
        return f"pid {who['pid']} on {who['host']} ({who['command']}) since {who['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not recorded itself yet)"


def _record(handle: int, command: str) -> None:
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": command,
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    os.ftruncate(handle, 0)
    os.pwrite(handle, json.dumps(record).encode(), 0)


def current_command() -> str:
    """This process's command line, shortened for the holder record."""
    words = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = " ".join(words)
    return text if len(text) <= 200 else text[:199] + "…"


@contextmanager
def store_lock(
    store: Path, command: str | None = None, wait: bool = False, poll_s: float = 0.5
) -> Iterator[None]:
    """Hold `store`'s write lock for the block; raise StoreLockedError at once if another
    process holds it, or, with `wait`, wait until it is free (logging who holds it)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    key = store.resolve()
    if key in _HELD:  # e.g. build → finalize: the same process already holds it
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    handle = os.open(store / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(handle)
                if not wait:
                    raise StoreLockedError(
                        f"{store} is being written by {holder}; wait for it to finish, or pass "
                        "--wait to queue behind it"
                    ) from None
                if not announced:
                    log.info("%s: waiting for %s", store, holder)
                    announced = True
                time.sleep(poll_s)
        _record(handle, command or current_command())
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            os.ftruncate(handle, 0)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
