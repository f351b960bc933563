"""Summaries of an importance distribution for plotting: log-spaced histograms and cut values.

Figures in the dashboard only draw these arrays; all numbers come from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .selection import Ranking, Selection


@dataclass(frozen=True)
class LogHistogram:
    """Histogram of positive finite importance over log10-spaced bins.

    Attributes:
        log_edges: float64 ``(bins + 1,)``, bin edges as log10(importance).
        counts: int64 ``(bins,)``, dims per bin.
        kept_counts: int64 ``(bins,)``, dims per bin that the selection keeps (zeros without one).
        n_zero: dims with importance exactly 0 (not drawable on a log axis).
        n_nonfinite: dims with NaN or infinite importance.
        n_total: all dims.
    """

    log_edges: np.ndarray
    counts: np.ndarray
    kept_counts: np.ndarray
    n_zero: int
    n_nonfinite: int
    n_total: int

    @property
    def centers(self) -> np.ndarray:
        """Bin centres as log10(importance)."""
        return (self.log_edges[:-1] + self.log_edges[1:]) / 2

    @property
    def width(self) -> float:
        """Bin width in log10 units."""
        return float(self.log_edges[1] - self.log_edges[0]) if self.log_edges.size > 1 else 1.0


_POS0 = 0x8000  # first bucket of non-negative floats (see selection.sort_keys)
_INF = 0xFF80  # bucket of +inf


def _bucket_log10_mid(buckets: np.ndarray) -> np.ndarray:
    """log10 of the geometric middle of each positive bucket's value range (float64)."""
    lo = ((buckets.astype(np.uint32) - _POS0) << 16).view(np.float32).astype(np.float64)
    hi = ((buckets.astype(np.uint32) - _POS0 + 1) << 16).view(np.float32).astype(np.float64)
    lo = np.maximum(lo, np.finfo(np.float32).smallest_subnormal)
    return (np.log10(lo) + np.log10(hi)) / 2


def log_edges(ranking: Ranking, bins: int = 80) -> np.ndarray:
    """Log10-spaced edges covering the positive finite importance values of ``ranking``."""
    used = np.flatnonzero(ranking.counts[_POS0:_INF]) + _POS0
    if used.size == 0 or (used.size == 1 and used[0] == _POS0 and ranking.counts[_POS0] == ranking.n_zero):
        return np.linspace(-1.0, 0.0, bins + 1)
    mids = _bucket_log10_mid(used)
    lo, hi = float(mids.min()) - 0.01, float(mids.max()) + 0.01
    return np.linspace(lo, hi, bins + 1)


def _binned(bucket_counts: np.ndarray, zeros: int, edges: np.ndarray) -> np.ndarray:
    """Display-bin counts of the positive buckets; ``zeros`` exact zeros sit in the first one and are left out."""
    counts = bucket_counts[_POS0:_INF].astype(np.int64).copy()
    counts[0] -= zeros
    used = np.flatnonzero(counts)
    binned, _ = np.histogram(_bucket_log10_mid(used + _POS0), bins=edges, weights=counts[used])
    return np.rint(binned).astype(np.int64)


def log_histogram(ranking: Ranking, selection: Optional[Selection] = None, bins: int = 80) -> LogHistogram:
    """Histogram of ``ranking``'s importance on a log axis, with the selection's share per bin.

    Built from the ranking's 65,536 value buckets (each 1/128 of an octave wide) rather than from
    every value, so it costs the same for 10^3 and 10^9 dims; a value lands in the display bin of
    its bucket's middle, at most half a bucket (0.0012 decades) from its own position.

    Args:
        ranking: importance of one part.
        selection: optional selection on the same input space.
        bins: number of log-spaced bins.
    """
    edges = log_edges(ranking, bins)
    counts = _binned(ranking.counts, ranking.n_zero, edges)
    if selection is not None and selection.boundary is not None:
        # Without a mask the kept dims are whole buckets above the cut plus part of one bucket.
        b, r = selection.boundary
        kept_buckets = ranking.counts.copy()
        kept_buckets[:b] = 0
        kept_buckets[b] = r
        positives_in_first = int(ranking.counts[_POS0]) - ranking.n_zero  # zeros rank last in their bucket
        zeros_kept = ranking.n_zero if b < _POS0 else (max(0, r - positives_in_first) if b == _POS0 else 0)
        kept = _binned(kept_buckets, zeros_kept, edges)
    elif selection is not None:
        kept_buckets = np.bincount(ranking.bucket[selection.keep], minlength=ranking.counts.size)
        zeros_kept = int(np.count_nonzero(ranking.importance[selection.keep] == 0)) if kept_buckets[_POS0] else 0
        kept = _binned(kept_buckets, zeros_kept, edges)
    else:
        kept = np.zeros_like(counts)
    return LogHistogram(
        log_edges=edges,
        counts=counts,
        kept_counts=kept,
        n_zero=ranking.n_zero,
        n_nonfinite=ranking.n_nonfinite,
        n_total=ranking.size,
    )


def cut_value(ranking: Ranking, selection: Selection) -> float:
    """Smallest importance among the kept dims (the effective threshold); ``nan`` if all NaN."""
    if selection.cut is not None and not np.isnan(selection.cut):
        return selection.cut
    kept = ranking.importance[selection.keep]
    kept = kept[~np.isnan(kept)]
    return float(kept.min()) if kept.size else float("nan")
