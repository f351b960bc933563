"""Rank correlation between importance vectors, and paired samples for scatter plots.

Spearman's rho is Pearson's correlation of the average ranks (ties share their mean rank), the
definition ``scipy.stats.spearmanr`` uses. Up to :data:`EXACT_LIMIT` dims it is computed on every
dim; above, on a seeded uniform sample of :data:`SAMPLE_SIZE` dims drawn without replacement (the
same dims for every part), which keeps the view interactive for 100M dims (standard error of rho
is below 1e-3 at that sample size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..ranking.ranking import Ranking
from ..ranking.samples import EXACT_LIMIT, SAMPLE_SIZE, SCATTER_SIZE, SEED, sample_indices

__all__ = [
    "EXACT_LIMIT",
    "PairedSample",
    "SAMPLE_SIZE",
    "SCATTER_SIZE",
    "SEED",
    "SpearmanMatrix",
    "paired_sample",
    "sample_indices",
    "spearman_matrix",
]

#: An importance vector, or a :class:`~gradiend_core.ranking.ranking.Ranking` read only at the dims used.
Importance = np.ndarray | Ranking


def _length(v: Importance) -> tuple[int, ...]:
    return (v.size,) if isinstance(v, Ranking) else np.asarray(v).shape


def _take(v: Importance, idx: np.ndarray | None) -> np.ndarray:
    """float64 values of ``v`` at ``idx`` (all when ``None``); a Ranking reads just those dims."""
    if isinstance(v, Ranking):
        return (v.importance_vector() if idx is None else v.values_at(idx)).astype(np.float64)
    v = np.asarray(v)
    return (v if idx is None else v[idx]).astype(np.float64)


@dataclass(frozen=True)
class SpearmanMatrix:
    """Spearman's rho between every pair of importance vectors.

    Attributes:
        names: vector names, in matrix order.
        rho: float64 ``(m, m)`` in [-1, 1]; ``nan`` where a vector is constant on the dims used.
        n_total: dims of each vector.
        n_used: dims the correlation was computed on (after sampling and dropping NaN).
        exact: True when every dim was used (no sampling).
        seed: the sampling seed (``None`` when exact).
        n_nan_dropped: sampled dims left out because some vector is NaN there.
    """

    names: tuple[str, ...]
    rho: np.ndarray
    n_total: int
    n_used: int
    exact: bool
    seed: int | None
    n_nan_dropped: int


def spearman_matrix(
    vectors: Mapping[str, Importance],
    *,
    exact_limit: int = EXACT_LIMIT,
    sample_size: int = SAMPLE_SIZE,
    seed: int = SEED,
) -> SpearmanMatrix:
    """Spearman's rho of every pair of equally long vectors.

    Args:
        vectors: ``{name: values}``, each float ``(n,)`` or a :class:`Ranking` (e.g. the four
            parts'), which is read only at the sampled dims.
        exact_limit: use every dim when ``n <= exact_limit``.
        sample_size: otherwise, the size of the seeded uniform sample (same dims for all vectors).
        seed: the sample's seed.

    Returns:
        A :class:`SpearmanMatrix`. Dims where any vector is NaN are dropped (counted in
        ``n_nan_dropped``).

    Raises:
        ValueError: for fewer than one vector, unequal lengths or non-1-D input.
    """
    if not vectors:
        raise ValueError("give at least one vector.")
    names = tuple(vectors)
    lengths = {_length(vectors[k]) for k in names}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"vectors must be 1-D and equally long, got shapes {sorted(lengths)}.")
    n = next(iter(lengths))[0]
    exact = n <= exact_limit
    idx = None if exact else sample_indices(n, sample_size, seed)
    cols = [_take(vectors[k], idx) for k in names]
    data = np.vstack(cols)
    ok = ~np.isnan(data).any(axis=0)
    dropped = int(ok.size - np.count_nonzero(ok))
    if dropped:
        data = data[:, ok]
    from scipy.stats import rankdata  # imported on use: scipy.stats costs most of a second to import

    ranks = np.vstack([rankdata(row) for row in data]) if data.shape[1] else data
    m = len(names)
    rho = np.full((m, m), np.nan)
    if ranks.shape[1] >= 2:
        centred = ranks - ranks.mean(axis=1, keepdims=True)
        norms = np.sqrt((centred * centred).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (centred @ centred.T) / np.outer(norms, norms)
        rho = np.clip(rho, -1.0, 1.0)
    return SpearmanMatrix(names, rho, int(n), int(ranks.shape[1]), exact, None if exact else seed, dropped)


@dataclass(frozen=True)
class PairedSample:
    """The same sampled dims of two importance vectors.

    Attributes:
        indices: int64 ``(s,)``, sampled local indices (sorted).
        x, y: float64 ``(s,)``, the two vectors at ``indices``.
        n_total: length of the vectors.
        seed: the sampling seed.
    """

    indices: np.ndarray
    x: np.ndarray
    y: np.ndarray
    n_total: int
    seed: int

    @property
    def loggable(self) -> np.ndarray:
        """bool ``(s,)``: both values finite and > 0 (drawable on log-log axes)."""
        return np.isfinite(self.x) & np.isfinite(self.y) & (self.x > 0) & (self.y > 0)


def paired_sample(x: Importance, y: Importance, size: int = SCATTER_SIZE, seed: int = SEED) -> PairedSample:
    """A seeded uniform sample of ``size`` dims of two equally long vectors (or rankings, read
    only at the sampled dims).

    Raises:
        ValueError: for vectors of different shapes.
    """
    sx, sy = _length(x), _length(y)
    if sx != sy or len(sx) != 1:
        raise ValueError(f"x and y must be 1-D and equally long, got {sx} and {sy}.")
    idx = sample_indices(sx[0], size, seed)
    return PairedSample(idx, _take(x, idx), _take(y, idx), int(sx[0]), seed)
