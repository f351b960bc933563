"""The seeded samples of dims that rank statistics and scatter plots read, and their stored values.

The open pass (:mod:`gradiend_core.ranking.store.scan`) records every part's importance at these
dims while it reads the weights anyway, so Spearman's rho and the scatter of two parts later read
nothing: :class:`SampledValues` answers a lookup of sampled dims from memory and passes any other
lookup on to the weight file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "EXACT_LIMIT",
    "SAMPLE_SIZE",
    "SCATTER_SIZE",
    "SEED",
    "SampledValues",
    "recorded_sample",
    "sample_indices",
]

#: Largest input_dim for which Spearman's rho is computed on every dim.
EXACT_LIMIT = 2_000_000
#: Dims sampled above :data:`EXACT_LIMIT`.
SAMPLE_SIZE = 1_000_000
#: Points in a scatter sample.
SCATTER_SIZE = 5_000
SEED = 0


def sample_indices(n: int, size: int, seed: int = SEED) -> np.ndarray:
    """Sorted int64 indices of a seeded uniform sample of ``min(size, n)`` of ``range(n)``
    without replacement (all indices when ``size >= n``)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def recorded_sample(n: int) -> np.ndarray:
    """The dims the open pass records (sorted unique int64): the scatter sample, and the rank
    correlation's sample when ``n`` is above :data:`EXACT_LIMIT` (below, it reads every dim)."""
    idx = sample_indices(n, SCATTER_SIZE)
    if n > EXACT_LIMIT:
        idx = np.union1d(idx, sample_indices(n, SAMPLE_SIZE))
    return idx.astype(np.int64)


class SampledValues:
    """``values_at`` of one importance source: sampled dims from memory, others from ``fallback``.

    Args:
        indices: sorted unique int64 sampled dims.
        values: their float32 importance.
        fallback: ``values_at`` for any other dims (reads the weight file), or ``None``.
    """

    def __init__(self, indices: np.ndarray, values: np.ndarray, fallback: Callable[[np.ndarray], np.ndarray] | None):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float32)
        self.fallback = fallback

    def __call__(self, local: np.ndarray) -> np.ndarray:
        local = np.asarray(local, dtype=np.int64)
        if self.indices.size and local.size:
            at = np.minimum(np.searchsorted(self.indices, local), self.indices.size - 1)
            if np.array_equal(self.indices[at], local):
                return self.values[at]
        if self.fallback is None:
            raise LookupError("these dims were not sampled, and there is no weight file to read them from.")
        return np.asarray(self.fallback(local), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.indices.nbytes + self.values.nbytes)
