"""pipeline.models.runtime.keep_freed_memory: freed big blocks are reused, not faulted in again."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from pipeline.models.runtime import keep_freed_memory

# 20 times a 64 MiB block from malloc, written then freed, as a CPU tensor's (numpy's arrays
# would not do: numpy asks the kernel for huge pages, 512 times fewer faults)
LOOP = """
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
for _ in range(20):
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(ctypes.c_void_p(block))
"""
PAGES = (64 << 20) // 4096  # of 4 KiB in one block


def _faults(code: str) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    exec(code, {})
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc only")
def test_freed_blocks_are_reused_and_the_user_can_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    assert keep_freed_memory()  # glibc here; a frozen model's build has called it already
    kept = _faults(LOOP)
    # the same loop in a fresh interpreter on glibc's defaults: every block mmapped anew
    fresh = f"import resource\n{LOOP}\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)"
    default = int(subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True,
                                 check=True).stdout)  # fmt: skip
    assert default > 10 * PAGES, default  # each of the 20 blocks faulted in
    assert kept < 2 * PAGES, kept  # at most the first one
    # opted out, or the user's own malloc settings: nothing applied
    monkeypatch.setenv("PPT_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory.__wrapped__() is False
    monkeypatch.delenv("PPT_KEEP_FREED_MEMORY")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory.__wrapped__() is False
