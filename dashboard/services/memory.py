"""Giving freed memory back to the operating system in the long-running dashboard server.

The server handles many sessions in one process. glibc's allocator keeps freed blocks for reuse
and, after large blocks have been freed, raises the size above which it maps memory directly, so
a few large temporary arrays (a part's ranking pass, an uploaded archive) leave the process
resident for good. Two glibc calls (through ``ctypes``: the standard library has no binding)
change that: a fixed mapping threshold of 1 MiB, so every large array is mapped and returned when
freed, and ``malloc_trim`` when a session ends. On other C libraries both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["release_freed_memory", "return_large_blocks"]

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
        except OSError:
            lib = None
        _libc = lib if lib is not None and hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
    return _libc or None


def return_large_blocks(threshold_bytes: int = 1 << 20) -> bool:
    """Map every allocation of at least ``threshold_bytes`` directly, so it goes back to the system
    when freed (glibc only; returns whether it applied)."""
    lib = _glibc()
    return bool(lib is not None and lib.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)) == 1)


def release_freed_memory() -> bool:
    """Return the free memory at the top of the heaps to the system (glibc only)."""
    lib = _glibc()
    return bool(lib is not None and lib.malloc_trim(0))
