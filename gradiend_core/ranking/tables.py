"""Per-bucket sums of a ranking: dims and finite importance per value bucket, whole and per parameter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keys import N_BUCKETS, bucket_of, mass_weights

__all__ = [
    "BucketSummary",
    "ParamTables",
    "summarise",
]


@dataclass(frozen=True)
class BucketSummary:
    """What one pass over a source's importance learns, before any dim is placed.

    Attributes:
        n: dims.
        counts: int64 ``(N_BUCKETS,)``, dims per bucket.
        mass: float64 ``(N_BUCKETS,)``, finite importance per bucket.
        n_zero: dims with importance exactly 0 (they share :data:`ZERO_BUCKET` with subnormals).
    """

    n: int
    counts: np.ndarray
    mass: np.ndarray
    n_zero: int


def summarise(blocks) -> BucketSummary:
    """Accumulate a :class:`BucketSummary` over ``blocks`` (float32 arrays, in local order)."""
    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    mass = np.zeros(N_BUCKETS, dtype=np.float64)
    n = n_zero = 0
    for v in blocks:
        b = bucket_of(v)
        counts += np.bincount(b, minlength=N_BUCKETS)
        mass += np.bincount(b, weights=mass_weights(v), minlength=N_BUCKETS)
        n += v.size
        n_zero += int(np.count_nonzero(v == 0))
    return BucketSummary(n, counts, mass, n_zero)


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
