"""Compiled loops of the open pass: every dim of a block counted into its part's tables in one loop.

The open pass (:mod:`gradiend_core.ranking.store.scan`) counts each part's importance per fine bin
(:data:`FINE_SHIFT`), per (parameter, value bucket) and sums its finite importance per (parameter,
bucket). With numpy that is a key computation plus three ``np.bincount`` calls per part and block:
several passes over memory, and ``bincount`` holds the GIL, so two cores cannot share the work.
Measured on 4M float32 dims on the build machine: numpy 0.2-0.3 s per part and block, this loop
0.03-0.04 s, and it releases the GIL. numba (a well-kept compiler for numeric Python) compiles the
loops; :func:`accumulate_numpy` is the same computation in numpy, the second method the tests
compare the loop with.

Keys follow :func:`gradiend_core.ranking.keys.sort_keys`: ``-0.0`` counts as ``+0.0``, NaN is
counted apart (per parameter) and never enters a window.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .keys import sort_keys
from .tables import FINE_SHIFT

__all__ = [
    "accumulate",
    "accumulate_numpy",
    "key_window",
]


@njit(nogil=True, cache=True)
def key_window(values: np.ndarray) -> tuple[int, int]:  # pragma: no cover - compiled
    """``(lowest key, highest key)`` of the non-NaN float32 ``values`` (``(2**32 - 1, 0)`` when all
    are NaN)."""
    bits = values.view(np.uint32)
    lo = np.uint32(0xFFFFFFFF)
    hi = np.uint32(0)
    for i in range(bits.size):
        b = bits[i]
        a = b & np.uint32(0x7FFFFFFF)
        if a > np.uint32(0x7F800000):
            continue
        if a == 0:
            k = np.uint32(0x80000000)
        elif b >> np.uint32(31):
            k = ~b
        else:
            k = b | np.uint32(0x80000000)
        if k < lo:
            lo = k
        if k > hi:
            hi = k
    return int(lo), int(hi)


@njit(nogil=True, cache=True)
def accumulate(
    values: np.ndarray,
    seg_bounds: np.ndarray,
    seg_rows: np.ndarray,
    fine: np.ndarray,
    fine_lo: int,
    counts: np.ndarray,
    mass: np.ndarray,
    bucket_lo: int,
    nan_rows: np.ndarray,
    zeros: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Count a block of float32 ``values`` into the tables (every key must lie in their windows).

    Args:
        values: float32 ``(m,)``, the block's importance.
        seg_bounds: int64 ``(s + 1,)``, the block's split into parameters (positions in ``values``).
        seg_rows: int64 ``(s,)``, the parameter (table row) of each segment.
        fine: int64 ``(F,)``, dims per fine bin ``fine_lo + j``.
        counts: int64 ``(P, W)``; mass: float64 ``(P, W)``: dims and finite importance per
            (parameter, bucket ``bucket_lo + j``).
        nan_rows: int64 ``(P,)``, NaN dims per parameter.
        zeros: int64 ``(1,)``, dims exactly 0.
    """
    bits = values.view(np.uint32)
    flo = np.uint32(fine_lo)
    blo = np.uint32(bucket_lo)
    for s in range(seg_rows.size):
        row = seg_rows[s]
        for i in range(seg_bounds[s], seg_bounds[s + 1]):
            b = bits[i]
            a = b & np.uint32(0x7FFFFFFF)
            if a > np.uint32(0x7F800000):
                nan_rows[row] += 1
                continue
            if a == 0:
                k = np.uint32(0x80000000)
                zeros[0] += 1
            elif b >> np.uint32(31):
                k = ~b
            else:
                k = b | np.uint32(0x80000000)
            fine[(k >> np.uint32(FINE_SHIFT)) - flo] += 1
            c = (k >> np.uint32(16)) - blo
            counts[row, c] += 1
            if a < np.uint32(0x7F800000):
                mass[row, c] += values[i]


def accumulate_numpy(
    values: np.ndarray,
    seg_bounds: np.ndarray,
    seg_rows: np.ndarray,
    fine: np.ndarray,
    fine_lo: int,
    counts: np.ndarray,
    mass: np.ndarray,
    bucket_lo: int,
    nan_rows: np.ndarray,
    zeros: np.ndarray,
) -> None:
    """:func:`accumulate` in numpy (the tests' second method; same arguments, same effect)."""
    values = np.asarray(values, dtype=np.float32)
    keys = sort_keys(values).astype(np.int64)
    nan = np.isnan(values)
    rows = np.repeat(np.asarray(seg_rows, dtype=np.int64), np.diff(seg_bounds))
    values, keys, rows = values[seg_bounds[0] : seg_bounds[-1]], keys[seg_bounds[0] : seg_bounds[-1]], rows
    nan = nan[seg_bounds[0] : seg_bounds[-1]]
    np.add.at(nan_rows, rows[nan], 1)
    ok = ~nan
    keys, rows, vals = keys[ok], rows[ok], values[ok]
    zeros[0] += int(np.count_nonzero(vals == 0))
    np.add.at(fine, (keys >> FINE_SHIFT) - fine_lo, 1)
    cols = (keys >> 16) - bucket_lo
    np.add.at(counts, (rows, cols), 1)
    finite = np.isfinite(vals)
    np.add.at(mass, (rows[finite], cols[finite]), vals[finite].astype(np.float64))
