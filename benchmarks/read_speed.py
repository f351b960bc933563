"""Sequential read speed of a file with a cold and a warm page cache.

The cold read first drops the file's pages from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)``, which affects only this file (no global
``drop_caches`` on a shared machine); the warm read follows at once. Reads go through one reused
16 MiB buffer (``readinto``), so the process itself stays small.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["evict", "read_speeds", "sequential_read"]

BLOCK = 16 * 1024**2


def evict(path: str | os.PathLike) -> None:
    """Drop ``path``'s clean pages from the page cache (pages other processes map stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sequential_read(path: str | os.PathLike, block: int = BLOCK) -> dict[str, float]:
    """Read ``path`` start to end; ``{"bytes", "s", "mb_per_s"}`` (MB = 10**6 bytes)."""
    buf = bytearray(block)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
    s = time.perf_counter() - t0
    return {"bytes": total, "s": round(s, 3), "mb_per_s": round(total / s / 1e6, 1)}


def read_speeds(path: str | os.PathLike) -> dict[str, object]:
    """Cold then warm sequential read of ``path``; the file's pages are dropped again afterwards."""
    evict(path)
    cold = sequential_read(path)
    warm = sequential_read(path)
    evict(path)
    return {"file": str(Path(path)), "bytes": cold["bytes"], "cold": cold, "warm": warm}
