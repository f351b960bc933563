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


def log_edges(ranking: Ranking, bins: int = 80) -> np.ndarray:
    """Log10-spaced edges covering the positive finite importance values of ``ranking``."""
    vals = ranking.sorted_values[: ranking.size - ranking.n_nan]
    pos = vals[np.isfinite(vals) & (vals > 0)]
    if pos.size == 0:
        return np.linspace(-1.0, 0.0, bins + 1)
    lo, hi = float(np.log10(pos[-1])), float(np.log10(pos[0]))  # sorted descending
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    pos = values[np.isfinite(values) & (values > 0)]
    counts, _ = np.histogram(np.log10(pos.astype(np.float64)), bins=edges)
    return counts.astype(np.int64)


def log_histogram(ranking: Ranking, selection: Optional[Selection] = None, bins: int = 80) -> LogHistogram:
    """Histogram of ``ranking``'s importance on a log axis, with the selection's share per bin.

    Args:
        ranking: importance of one part.
        selection: optional selection on the same input space.
        bins: number of log-spaced bins.
    """
    imp = ranking.importance
    edges = log_edges(ranking, bins)
    counts = _counts(imp, edges)
    kept = _counts(imp[selection.keep], edges) if selection is not None else np.zeros_like(counts)
    finite = np.isfinite(imp)
    return LogHistogram(
        log_edges=edges,
        counts=counts,
        kept_counts=kept,
        n_zero=int(np.count_nonzero(imp == 0)),
        n_nonfinite=int(imp.size - np.count_nonzero(finite)),
        n_total=int(imp.size),
    )


def cut_value(ranking: Ranking, selection: Selection) -> float:
    """Smallest importance among the kept dims (the effective threshold); ``nan`` if all NaN."""
    kept = ranking.importance[selection.keep]
    kept = kept[~np.isnan(kept)]
    return float(kept.min()) if kept.size else float("nan")
