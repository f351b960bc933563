"""Rigorous bounds of what the boundary bucket's members would tell exactly.

A count, share or per-parameter count of a cut is exact from the summaries except for the one bucket
the cut falls in: which of its members are taken needs the members (a layout read, or a pass over
the weights). The open pass also counts dims per fine bin (16 per bucket, each 1/2048 of an octave
wide: :class:`~gradiend_core.ranking.tables.FineCounts`), and from these the answer is bounded at
once: the exact answer is never below :attr:`Bounds.lo` nor above :attr:`Bounds.hi`. When both
print the same text at the precision a page shows (:meth:`Bounds.shown`), that text IS the exact
answer's; otherwise the page shows the range until the exact answer is known. When the members are
at hand (a layout that covers the bucket, or the bucket sorted before), the bounds are the exact
answer (``lo == hi``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .keys import INF_BUCKET, NAN_BUCKET, NEG_INF_BUCKET
from .tables import FINE_PER_BUCKET, FINE_SHIFT, FineCounts

__all__ = ["Bounds", "fine_value_range", "fine_bins", "widen"]

T = TypeVar("T", int, float, np.ndarray)


@dataclass(frozen=True)
class Bounds(Generic[T]):
    """An answer known to lie in ``[lo, hi]`` (elementwise for arrays); exact when they are equal.

    Attributes:
        lo, hi: the bounds (int, float, or int64/float64 arrays of one shape).
    """

    lo: T
    hi: T

    @property
    def exact(self) -> bool:
        """Whether the answer is known exactly (``lo == hi``)."""
        return bool(np.array_equal(np.asarray(self.lo), np.asarray(self.hi), equal_nan=True))

    @property
    def value(self) -> T:
        """The exact answer.

        Raises:
            ValueError: when it is only bounded.
        """
        if not self.exact:
            raise ValueError(f"the answer is only bounded: [{self.lo}, {self.hi}].")
        return self.lo

    def shown(self, fmt: Callable[[T], str]) -> str | None:
        """``fmt(answer)`` when both bounds show the same text (then it is the exact answer's
        text, for a monotone ``fmt`` such as rounding), else ``None``."""
        a, b = fmt(self.lo), fmt(self.hi)
        return a if a == b else None

    def map(self, f: Callable) -> Bounds:
        """Bounds of ``f(answer)`` for a non-decreasing ``f``."""
        return Bounds(f(self.lo), f(self.hi))

    @staticmethod
    def of(value) -> Bounds:
        """An exact answer."""
        return Bounds(value, value)


def _key_to_value(keys: np.ndarray) -> np.ndarray:
    """float64 values of order-preserving uint32 keys (the inverse of ``sort_keys`` on numbers)."""
    k = np.asarray(keys, dtype=np.uint32)
    bits = np.where(k >= np.uint32(0x80000000), k & np.uint32(0x7FFFFFFF), ~k).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


def fine_value_range(fine_bin: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest float32 value (float64) a key in each fine bin can have."""
    f = np.asarray(fine_bin, dtype=np.int64)
    low = _key_to_value((f << FINE_SHIFT).astype(np.uint32))
    high = _key_to_value(((f << FINE_SHIFT) | ((1 << FINE_SHIFT) - 1)).astype(np.uint32))
    return low, high


def fine_bins(fine: FineCounts | None, bucket: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fine bins, dims in each)`` of ``bucket``, highest bin first; without fine counts (or for
    the NaN bucket) the whole bucket as one bin spanning all of it."""
    if fine is None or bucket == NAN_BUCKET:
        first = bucket * FINE_PER_BUCKET
        return np.array([first], dtype=np.int64), np.array([count], dtype=np.int64)
    counts = fine.of_bucket(bucket)[::-1]
    bins = bucket * FINE_PER_BUCKET + np.arange(FINE_PER_BUCKET - 1, -1, -1, dtype=np.int64)
    if int(counts.sum()) != count:  # fine counts of another set than the bucket's: do not use them
        first = bucket * FINE_PER_BUCKET
        return np.array([first], dtype=np.int64), np.array([count], dtype=np.int64)
    return bins, counts


def widen(lo: float, hi: float, terms: int) -> tuple[float, float]:
    """``[lo, hi]`` widened by the rounding a float64 sum of ``terms`` numbers can carry, so the
    exact answer as computed (a float64 sum) lies inside, not only the real-valued one."""
    rel = max(1e-12, 2.3e-16 * max(terms, 1))
    return lo - abs(lo) * rel, hi + abs(hi) * rel


def top_mass_range(fine: FineCounts | None, bucket: int, count: int, r: int) -> tuple[float, float]:
    """Bounds of the finite importance of the top ``r`` of a bucket's ``count`` members (real sums)."""
    if r <= 0 or bucket in (NAN_BUCKET, INF_BUCKET, NEG_INF_BUCKET):
        return 0.0, 0.0  # NaN and infinities count 0
    bins, counts = fine_bins(fine, bucket, count)
    if bins.size == 1:
        first = bucket * FINE_PER_BUCKET
        low, _ = fine_value_range(first)
        _, high = fine_value_range(first + FINE_PER_BUCKET - 1)
        return float(r * low), float(r * high)
    take = np.minimum(counts, np.maximum(0, r - np.concatenate([[0], np.cumsum(counts)[:-1]])))
    low, high = fine_value_range(bins)
    return float((take * low).sum()), float((take * high).sum())


def value_range_at(fine: FineCounts | None, bucket: int, count: int, r: int) -> tuple[float, float]:
    """Bounds of the value of the ``r``-th (1-based) member of a bucket in rank order."""
    if bucket == NAN_BUCKET:
        return float("nan"), float("nan")
    if bucket in (INF_BUCKET, NEG_INF_BUCKET):  # these hold one value each
        v = float("inf") if bucket == INF_BUCKET else float("-inf")
        return v, v
    bins, counts = fine_bins(fine, bucket, count)
    if bins.size == 1:
        first = bucket * FINE_PER_BUCKET
        return float(fine_value_range(first)[0]), float(fine_value_range(first + FINE_PER_BUCKET - 1)[1])
    i = int(np.searchsorted(np.cumsum(counts), r, side="left"))
    low, high = fine_value_range(bins[i])
    return float(low), float(high)


def count_at_least_range(fine: FineCounts | None, bucket: int, count: int, key: int) -> tuple[int, int]:
    """Bounds of how many of a bucket's ``count`` members have a key ``>= key`` (a key in the bucket)."""
    bins, counts = fine_bins(fine, bucket, count)
    f = key >> FINE_SHIFT
    above = int(counts[bins > f].sum())
    inside = int(counts[bins == f].sum()) if bins.size > 1 else count
    if bins.size == 1:
        return (count, count) if key == (bucket << 16) else (0, count)
    if key & ((1 << FINE_SHIFT) - 1) == 0:  # the threshold starts its fine bin: the whole bin passes
        return above + inside, above + inside
    return above, above + inside
