"""Summaries of an importance distribution for plotting: log-spaced histograms and cut values.

Figures in the dashboard only draw these arrays; all numbers come from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ranking.keys import INF_BUCKET, N_BUCKETS, ZERO_BUCKET, bucket_bounds, bucket_of
from ..ranking.ranking import Ranking
from ..selection.rule import Selection

__all__ = ["LogHistogram", "RankCurve", "cut_value", "log_edges", "log_histogram", "rank_curve"]


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
        zero_kept, nonfinite_kept: of those, how many the selection keeps.
    """

    log_edges: np.ndarray
    counts: np.ndarray
    kept_counts: np.ndarray
    n_zero: int
    n_nonfinite: int
    n_total: int
    zero_kept: int = 0
    nonfinite_kept: int = 0

    @property
    def centers(self) -> np.ndarray:
        """Bin centres as log10(importance)."""
        return (self.log_edges[:-1] + self.log_edges[1:]) / 2

    @property
    def width(self) -> float:
        """Bin width in log10 units."""
        return float(self.log_edges[1] - self.log_edges[0]) if self.log_edges.size > 1 else 1.0


#: The widest a value bucket gets on a log10 axis: 1/128 of an octave at the bottom of an octave.
BUCKET_LOG10_WIDTH = float(np.log10(1 + 1 / 128))


def _log10_mid(buckets: np.ndarray) -> np.ndarray:
    """log10 of the geometric middle of each positive bucket's value range (float64)."""
    lo, hi = bucket_bounds(buckets)
    lo = np.maximum(lo, np.finfo(np.float32).smallest_subnormal)
    return (np.log10(lo) + np.log10(hi)) / 2


def _positive(bucket_counts: np.ndarray, zeros: int) -> np.ndarray:
    """Counts of the positive finite buckets ``[ZERO_BUCKET, INF_BUCKET)`` with exact zeros taken out
    (they share the zero bucket with the smallest subnormals)."""
    counts = bucket_counts[ZERO_BUCKET:INF_BUCKET].astype(np.int64)
    counts[0] -= zeros
    return counts


def log_edges(ranking: Ranking, bins: int = 80) -> np.ndarray:
    """Log10-spaced edges covering the positive finite importance values of ``ranking`` (exact zeros,
    which a log axis cannot show, do not stretch it)."""
    used = np.flatnonzero(_positive(ranking.counts, ranking.n_zero)) + ZERO_BUCKET
    if used.size == 0:
        return np.linspace(-1.0, 0.0, bins + 1)
    mids = _log10_mid(used)
    lo, hi = float(mids.min()) - 0.01, float(mids.max()) + 0.01
    # A display bin must not be narrower than a bucket (values are placed at their bucket's
    # middle): a narrow range is widened around its centre to ``bins`` bucket widths.
    span = max(hi - lo, bins * BUCKET_LOG10_WIDTH)
    centre = (lo + hi) / 2
    return np.linspace(centre - span / 2, centre + span / 2, bins + 1)


def _binned(bucket_counts: np.ndarray, zeros: int, edges: np.ndarray) -> np.ndarray:
    counts = _positive(bucket_counts, zeros)
    used = np.flatnonzero(counts)
    binned, _ = np.histogram(_log10_mid(used + ZERO_BUCKET), bins=edges, weights=counts[used])
    return np.rint(binned).astype(np.int64)


def _kept_buckets(ranking: Ranking, selection: Selection) -> tuple:
    """``(kept dims per bucket, kept exact zeros)`` of ``selection`` in ``ranking``'s buckets."""
    dims = selection.dims
    if dims is not None and dims.ranking is ranking:
        return dims.bucket_counts_top(selection.k), dims.zeros_top(selection.k)
    values = ranking.values_at(selection.keep)  # another part ranked the selection: place its dims here
    return np.bincount(bucket_of(values), minlength=N_BUCKETS), int(np.count_nonzero(values == 0))


def log_histogram(ranking: Ranking, selection: Selection | None = None, bins: int = 80) -> LogHistogram:
    """Histogram of ``ranking``'s importance on a log axis, with the selection's share per bin.

    Built from the ranking's 65,536 value buckets (each 1/128 of an octave wide) rather than from
    every value, so it costs the same for 10^3 and 10^9 dims; a value lands in the display bin of
    its bucket's middle, at most half a bucket (0.0012 decades) from its own position.

    Args:
        ranking: importance of one part.
        selection: optional selection on the same input space (ranked by this part or another).
        bins: number of log-spaced bins.
    """
    edges = log_edges(ranking, bins)
    counts = _binned(ranking.counts, ranking.n_zero, edges)
    kept = np.zeros_like(counts)
    zero_kept = nonfinite_kept = 0
    if selection is not None:
        kept_b, zero_kept = _kept_buckets(ranking, selection)
        kept = _binned(kept_b, zero_kept, edges)
        nonfinite_kept = int(kept_b[0] + kept_b[INF_BUCKET] + kept_b[0x007F])
    return LogHistogram(
        log_edges=edges,
        counts=counts,
        kept_counts=kept,
        n_zero=ranking.n_zero,
        n_nonfinite=ranking.n_nonfinite,
        n_total=ranking.size,
        zero_kept=zero_kept,
        nonfinite_kept=nonfinite_kept,
    )


def cut_value(ranking: Ranking, selection: Selection) -> float | None:
    """The effective threshold of a selection that ranked by ``ranking``: its lowest kept importance.

    ``None`` when the selection did not rank by this part (a mask alone, or another part), or keeps
    every dim: there is no cut in this part's distribution to draw then.
    """
    dims = selection.dims
    if dims is None or dims.ranking is not ranking or selection.k >= ranking.size:
        return None
    return selection.cut


#: Ranks read exactly (sorted values) at the top of a rank curve.
RANK_HEAD = 2_000
#: Most points a rank curve holds beyond its exact head.
RANK_POINTS = 2_000


@dataclass(frozen=True)
class RankCurve:
    """Importance against rank over the top of the dims a selection ranked (the mask's dims, or all).

    Attributes:
        ranks: int64 ``(m,)``, 1-based ranks, increasing.
        values: float64 ``(m,)``, importance at each rank, positive and finite: exact for ranks up
            to ``exact_upto`` and at rank ``k``; beyond, the lower edge of the value bucket holding
            the last dim of that bucket (at most 1/128 of an octave, 0.27 %, below its value).
        k: dims the selection keeps (ranks ``1..k``).
        n: dims it ranked among.
        upto: the last rank the curve covers (about ``span * k``, at most ``n``).
        exact_upto: ranks read exactly.
        cut: importance of rank ``k`` (the selection's effective threshold).
        n_undrawable: ranks in ``1..upto`` whose importance a log axis cannot show (+Inf, 0, NaN;
            beyond the exact head also subnormals below 9.2e-41, which share the zero bucket).
    """

    ranks: np.ndarray
    values: np.ndarray
    k: int
    n: int
    upto: int
    exact_upto: int
    cut: float
    n_undrawable: int


def _bucket_points(counts: np.ndarray, start: int, upto: int, max_points: int):
    """``(rank, value)`` at the last rank of every positive finite bucket whose last rank lies in
    ``(start, upto]`` (buckets in rank order: the highest first), at most ``max_points`` of them."""
    desc = np.arange(N_BUCKETS - 1, -1, -1)
    last_rank = np.cumsum(counts[::-1])
    positive = (desc > ZERO_BUCKET) & (desc < INF_BUCKET) & (counts[::-1] > 0)
    pick = positive & (last_rank > start) & (last_rank <= upto)
    ranks, buckets = last_rank[pick], desc[pick]
    if ranks.size > max_points:
        keep = np.unique(np.linspace(0, ranks.size - 1, max_points).round().astype(np.int64))
        ranks, buckets = ranks[keep], buckets[keep]
    return ranks.astype(np.int64), bucket_bounds(buckets)[0]


def rank_curve(selection: Selection, span: int = 10, head: int = RANK_HEAD) -> RankCurve | None:
    """The top of the ranking a selection cut: ranks ``1..upto`` with ``upto = min(n, max(span * k, 100))``,
    so the ``k`` kept dims take a fixed share of a log rank axis whatever ``topk`` is.

    O(buckets + head): the first ``head`` ranks are read sorted, the rest from bucket counts.

    Returns:
        A :class:`RankCurve`, or ``None`` for a selection that did not rank (a mask alone).
    """
    dims = selection.dims
    if dims is None or selection.k <= 0:
        return None
    k, n = selection.k, dims.n
    upto = int(min(n, max(span * k, 100)))
    exact = min(upto, head)
    _, top_values = dims.ranked_with_values(exact)
    top_values = top_values.astype(np.float64)
    ranks = np.arange(1, top_values.size + 1, dtype=np.int64)
    more_r, more_v = _bucket_points(dims.counts, exact, upto, RANK_POINTS)
    cut = float(selection.cut)
    ranks = np.concatenate([ranks, more_r, [k] if k > exact else []]).astype(np.int64)
    values = np.concatenate([top_values, more_v, [cut] if k > exact else []])
    order = np.argsort(ranks, kind="stable")
    ranks, values = ranks[order], values[order]
    drawable = np.isfinite(values) & (values > 0)
    counts = dims.counts
    finite_positive = int(counts[ZERO_BUCKET + 1 : INF_BUCKET].sum())
    n_inf = int(counts[INF_BUCKET])
    # ranks 1..upto that are +Inf (first), or 0 / NaN (last, after the positive finite dims)
    undrawable = min(n_inf, upto) + max(0, upto - n_inf - finite_positive)
    return RankCurve(ranks[drawable], values[drawable], k, n, upto, exact, cut, int(undrawable))
