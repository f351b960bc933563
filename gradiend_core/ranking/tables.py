"""Per-bucket sums of a ranking: dims and finite importance per value bucket, whole and per parameter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keys import N_BUCKETS, bucket_of, mass_weights

__all__ = [
    "BucketSummary",
    "FineCounts",
    "ParamTables",
    "summarise",
]


#: Fine bins are ``key >> FINE_SHIFT``: 16 per value bucket (see :mod:`gradiend_core.ranking.kernels`).
FINE_SHIFT = 12
FINE_PER_BUCKET = 1 << (16 - FINE_SHIFT)


class FineCounts:
    """Dims per fine bin (``sort_keys(v) >> 12``, 16 per bucket, each 1/2048 of an octave wide) over
    a window of bins; NaN is not counted here (bucket 0 alone holds it).

    They bound what a bucket's members would tell exactly: how many dims lie at or above a
    threshold, the importance of the top ``r`` of a bucket, the value at a rank (see
    :mod:`gradiend_core.ranking.bounds`).

    Attributes:
        lo: the first fine bin of the window.
        counts: int64 ``(m,)``, dims in fine bins ``lo .. lo + m``.
    """

    def __init__(self, lo: int, counts: np.ndarray):
        counts = np.asarray(counts, dtype=np.int64)
        nz = np.flatnonzero(counts)
        if nz.size:  # trim to the occupied bins
            lo, counts = lo + int(nz[0]), counts[int(nz[0]) : int(nz[-1]) + 1]
        else:
            lo, counts = 0, counts[:0]
        self.lo = int(lo)
        self.counts = np.ascontiguousarray(counts)

    @classmethod
    def of_values(cls, values: np.ndarray) -> FineCounts:
        """The fine counts of float32 ``values`` (NaN left out)."""
        from .keys import sort_keys

        v = np.asarray(values, dtype=np.float32)
        keys = sort_keys(v[~np.isnan(v)]).astype(np.int64) >> FINE_SHIFT
        if keys.size == 0:
            return cls(0, np.zeros(0, dtype=np.int64))
        lo = int(keys.min())
        return cls(lo, np.bincount(keys - lo))

    def merged(self, other: FineCounts) -> FineCounts:
        """The sum of two fine counts."""
        if other.counts.size == 0:
            return self
        if self.counts.size == 0:
            return other
        lo = min(self.lo, other.lo)
        hi = max(self.lo + self.counts.size, other.lo + other.counts.size)
        out = np.zeros(hi - lo, dtype=np.int64)
        out[self.lo - lo : self.lo - lo + self.counts.size] += self.counts
        out[other.lo - lo : other.lo - lo + other.counts.size] += other.counts
        return FineCounts(lo, out)

    def of_bucket(self, bucket: int) -> np.ndarray:
        """int64 ``(16,)``: dims in each fine bin of ``bucket``, lowest bin first."""
        first = int(bucket) * FINE_PER_BUCKET
        out = np.zeros(FINE_PER_BUCKET, dtype=np.int64)
        a, b = max(first, self.lo), min(first + FINE_PER_BUCKET, self.lo + self.counts.size)
        if a < b:
            out[a - first : b - first] = self.counts[a - self.lo : b - self.lo]
        return out

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes)


@dataclass(frozen=True)
class BucketSummary:
    """What one pass over a source's importance learns, before any dim is placed.

    Attributes:
        n: dims.
        counts: int64 ``(N_BUCKETS,)``, dims per bucket.
        mass: float64 ``(N_BUCKETS,)``, finite importance per bucket.
        n_zero: dims with importance exactly 0 (they share :data:`ZERO_BUCKET` with subnormals).
        fine: the dims per fine bin (:class:`FineCounts`), or ``None`` when not counted.
    """

    n: int
    counts: np.ndarray
    mass: np.ndarray
    n_zero: int
    fine: FineCounts | None = None


def summarise(blocks) -> BucketSummary:
    """Accumulate a :class:`BucketSummary` over ``blocks`` (float32 arrays, in local order)."""
    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    mass = np.zeros(N_BUCKETS, dtype=np.float64)
    fine = FineCounts(0, np.zeros(0, dtype=np.int64))
    n = n_zero = 0
    for v in blocks:
        b = bucket_of(v)
        counts += np.bincount(b, minlength=N_BUCKETS)
        mass += np.bincount(b, weights=mass_weights(v), minlength=N_BUCKETS)
        fine = fine.merged(FineCounts.of_values(v))
        n += v.size
        n_zero += int(np.count_nonzero(v == 0))
    return BucketSummary(n, counts, mass, n_zero, fine)


class ParamTables:
    """Dims and finite importance per (parameter, occupied bucket), for per-parameter answers.

    Attributes:
        offsets: int64 ``(P + 1,)``, start of each parameter in the local input space.
        occupied: int64 ``(B,)``, the occupied buckets, descending (most important first).
        counts: int64 ``(P, B)``; mass: float64 ``(P, B)``, or ``None`` when only dims were
            counted (per-parameter importance then comes from index sets).
    """

    def __init__(self, offsets: np.ndarray, occupied: np.ndarray, counts: np.ndarray, mass: np.ndarray | None):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.occupied = np.asarray(occupied, dtype=np.int64)
        self.counts = counts
        self.mass = mass
        self._column = np.full(N_BUCKETS, -1, dtype=np.int64)
        self._column[self.occupied] = np.arange(self.occupied.size)

    @classmethod
    def accumulator(cls, offsets: np.ndarray, occupied: np.ndarray) -> ParamTables:
        p, b = len(offsets) - 1, len(occupied)
        return cls(offsets, occupied, np.zeros((p, b), dtype=np.int64), np.zeros((p, b), dtype=np.float64))

    def add(self, start: int, values: np.ndarray, buckets: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Count the block of dims ``start .. start + len(keep or values)`` (local order); with
        ``keep`` (bool, the block's length) only the kept dims, whose ``values`` and ``buckets``
        are given."""
        size = values.size if keep is None else keep.size
        stop = start + size
        p0 = int(np.searchsorted(self.offsets, start, side="right")) - 1
        p1 = int(np.searchsorted(self.offsets, stop, side="left"))
        cut = np.clip(self.offsets[p0 : p1 + 1] - start, 0, size)
        pid = np.repeat(np.arange(p0, p0 + cut.size - 1), np.diff(cut))
        if keep is not None:
            pid = pid[keep]
        cell = pid * self.occupied.size + self._column[buckets]
        size = self.counts.size
        self.counts += np.bincount(cell, minlength=size).reshape(self.counts.shape)
        self.mass += np.bincount(cell, weights=mass_weights(values), minlength=size).reshape(self.mass.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the tables hold."""
        return int(self.counts.nbytes + (self.mass.nbytes if self.mass is not None else 0))

    def above(self, bucket: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-parameter dims and mass (``None`` without a mass table) in the buckets above
        ``bucket`` (int64 ``(P,)``, float64 ``(P,)``)."""
        j = int(np.searchsorted(-self.occupied, -bucket, side="left"))  # columns of buckets > bucket
        return self.counts[:, :j].sum(axis=1), None if self.mass is None else self.mass[:, :j].sum(axis=1)

    def param_of(self, local: np.ndarray) -> np.ndarray:
        """The parameter (row) of each local index."""
        return np.searchsorted(self.offsets, local, side="right") - 1
