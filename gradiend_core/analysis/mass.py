"""How importance mass is distributed over the dims of one part.

The *retained mass* of the top ``k`` dims is the share of the part's total importance that they
hold: ``cum(k) / total``, with ``cum(k)`` the float64 sum of the ``k`` most important values.

Nothing here sorts the whole part. A :class:`gradiend_core.ranking.ranking.Ranking` holds the count and
the finite importance of each of its 65,536 value buckets (higher bucket = more important; within a
bucket values differ by less than 1/128 relative), which gives the exact cumulative mass at every
bucket boundary, which is a rank. Only where an exact rank is needed inside a bucket - the top
ranks of the curve, the count for a share - are that bucket's members sorted. Sums are float64;
their order (by bucket, then by index) differs from one sequential sum over the sorted values only
by float64 rounding (~1e-16 relative).

Only finite importance counts as mass: NaN (ranked last) and +Inf (ranked first) contribute 0 and
are reported as counts, so one broken weight cannot make every share ``nan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..pruning.reduction import importance_kept
from ..ranking.keys import INF_BUCKET, N_BUCKETS, NAN_BUCKET, ZERO_BUCKET, bucket_bounds, finite_or_zero
from ..ranking.ranking import Ranking
from ..selection.rule import Selection

__all__ = ["MassProfile", "count_for_mass", "mass_profile", "selection_point"]

#: Default number of plotted positions of a curve.
MAX_POINTS = 3000
#: Exact ranks at the top of the retained-mass curve (the left end of its log x axis).
HEAD = 1000
DEFAULT_SHARES = (0.5, 0.9, 0.99)


def _even_pick(n: int, m: int) -> np.ndarray:
    """At most ``m`` of ``range(n)``, evenly spread, first and last included."""
    if n <= m:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, m)).astype(np.int64))


@dataclass(frozen=True)
class MassProfile:
    """Importance mass of one part along its ranking.

    Attributes:
        n_total: dims of the part (``input_dim``), NaN included.
        n_valid: dims with a non-NaN importance (ranked before every NaN).
        n_nan: dims with NaN importance (no mass).
        n_inf: dims with infinite importance (ranked first, no mass).
        n_zero: dims with importance exactly 0 (not drawable on a log axis).
        total: float64 sum of the finite importance (the part's total mass).
        positions: int64 ``(p,)``, ranks ``k`` (1-based, ascending) where the curve is known
            exactly: every rank up to :data:`HEAD`, then bucket boundaries.
        cum_mass: float64 ``(p,)``, mass of the top ``k`` dims at those ranks.
        ecdf_x: float64 ``(e,)``, importance values (> 0, finite): the upper edges of the
            occupied value buckets.
        ecdf_y: float64 ``(e,)``, share of non-NaN dims with importance <= ``ecdf_x`` (exact).
        bucket_counts: int64 ``(65536,)``, dims per bucket (``Ranking.counts``).
        bucket_mass: float64 ``(65536,)``, finite importance per bucket.
        share_points: ``{share: (k, retained)}``: the smallest ``k`` whose top dims hold at
            least ``share`` of the mass, and the share they hold (>= ``share``); empty when the
            total is 0.
    """

    n_total: int
    n_valid: int
    n_nan: int
    n_inf: int
    n_zero: int
    total: float
    positions: np.ndarray
    cum_mass: np.ndarray
    ecdf_x: np.ndarray
    ecdf_y: np.ndarray
    bucket_counts: np.ndarray
    bucket_mass: np.ndarray
    share_points: dict[float, tuple[int, float]]

    @property
    def dims_share(self) -> np.ndarray:
        """Share of the part's dims kept at each position, ``k / n_total`` (float64, in (0, 1])."""
        return self.positions / float(self.n_total)

    @property
    def mass_share(self) -> np.ndarray:
        """Share of the part's mass kept at each position, ``cum_mass / total`` (float64; all
        ``nan`` when the total is 0)."""
        if self.total <= 0:
            return np.full(self.positions.shape, np.nan)
        return self.cum_mass / self.total

    @property
    def exact_ranks(self) -> int:
        """Ranks ``1..exact_ranks`` are all in ``positions``; beyond, only bucket boundaries."""
        p = self.positions
        return int(np.flatnonzero(p == np.arange(1, p.size + 1))[-1] + 1) if p.size and p[0] == 1 else 0


def mass_profile(
    ranking: Ranking, max_points: int = MAX_POINTS, shares: Sequence[float] = DEFAULT_SHARES, head: int = HEAD
) -> MassProfile:
    """Cumulative importance mass of ``ranking`` (O(n) passes, no full sort).

    Args:
        ranking: the part's :class:`Ranking`.
        max_points: at most about this many points per curve (the bucket boundaries are thinned
            evenly in bucket order, i.e. evenly in log(importance)).
        shares: shares in (0, 1] for which to find the exact count (``share_points``).
        head: exact ranks ``1..head`` at the top of the curve (sorted exactly, O(n + head log head)).

    Returns:
        A :class:`MassProfile`.

    Raises:
        ValueError: for a share outside (0, 1].
    """
    for s in shares:
        _check_share(s)
    counts = ranking.counts.astype(np.int64)
    mass = ranking.mass
    n_valid = ranking.size - ranking.n_nan
    desc = np.arange(N_BUCKETS - 1, NAN_BUCKET, -1)  # the NaN bucket is never a mass position
    c_desc = np.cumsum(counts[desc])
    m_desc = np.cumsum(mass[desc])
    total = float(m_desc[-1])
    occupied = counts[desc] > 0
    bounds_k, bounds_m = c_desc[occupied], m_desc[occupied]
    h = min(head, n_valid)
    head_cum = np.cumsum(finite_or_zero(ranking.dims().ranked_with_values(h)[1]))
    after = bounds_k > h
    pick = _even_pick(int(after.sum()), max(2, max_points - h))
    positions = np.concatenate([np.arange(1, h + 1), bounds_k[after][pick]]).astype(np.int64)
    cum = np.concatenate([head_cum, bounds_m[after][pick]])

    finite_pos = desc[occupied & (desc > ZERO_BUCKET) & (desc < INF_BUCKET)]
    below = np.cumsum(counts[1:])  # dims in buckets 1..b (non-NaN), index b - 1
    e_pick = _even_pick(finite_pos.size, max_points)[::-1]
    ecdf_b = finite_pos[e_pick] if finite_pos.size else finite_pos
    ecdf_y = below[ecdf_b - 1] / float(max(n_valid, 1))

    profile = MassProfile(
        n_total=ranking.size,
        n_valid=n_valid,
        n_nan=ranking.n_nan,
        n_inf=ranking.n_nonfinite - ranking.n_nan,
        n_zero=ranking.n_zero,
        total=total,
        positions=positions,
        cum_mass=cum,
        ecdf_x=bucket_bounds(ecdf_b)[1],
        ecdf_y=ecdf_y,
        bucket_counts=counts,
        bucket_mass=mass,
        share_points={},
    )
    if total > 0:
        for s in shares:
            k, kept = _locate_share(ranking, s, profile)
            profile.share_points[float(s)] = (k, kept / total)
    return profile


def _check_share(share: float) -> float:
    s = float(share)
    if not (0.0 < s <= 1.0):
        raise ValueError(f"a retained-mass share must be in (0, 1] (e.g. 0.9 for 90 %); got {share!r}.")
    return s


def count_for_mass(ranking: Ranking, share: float, profile: MassProfile) -> int:
    """Smallest ``k`` such that the top ``k`` dims hold at least ``share`` of the mass.

    Sorts only the one bucket where the cumulative mass crosses the target (O(n) scan to find
    its members, then O(b log b)).

    Args:
        ranking: the ranking ``profile`` was computed from.
        share: float in (0, 1], e.g. ``0.9``.
        profile: :func:`mass_profile` of ``ranking``.

    Returns:
        ``k`` in ``[1, n_valid]`` (an int count for ``topk``).

    Raises:
        ValueError: for a share outside (0, 1], or when the part has no positive finite importance
            (no count keeps a share of nothing).
    """
    return _locate_share(ranking, share, profile)[0]


def _locate_share(ranking: Ranking, share: float, profile: MassProfile) -> tuple[int, float]:
    """``(k, cum(k))`` for :func:`count_for_mass`."""
    s = _check_share(share)
    if profile.total <= 0:
        raise ValueError("this part has no positive finite importance, so no count keeps a share of its mass.")
    target = s * profile.total
    desc = np.arange(N_BUCKETS - 1, NAN_BUCKET, -1)
    m_desc = np.cumsum(profile.bucket_mass[desc])
    i = min(int(np.searchsorted(m_desc, target, side="left")), desc.size - 1)
    while i > 0 and profile.bucket_mass[desc[i]] == 0:
        i -= 1  # the crossing bucket holds mass (only the clamp above can land past it)
    b = int(desc[i])
    before = float(m_desc[i - 1]) if i > 0 else 0.0
    above = int(profile.bucket_counts[desc[:i]].sum())
    vals = finite_or_zero(ranking.dims().members(b)[1])
    vals[0] += before
    cum = np.cumsum(vals)
    j = min(int(np.searchsorted(cum, target, side="left")), cum.size - 1)
    return above + j + 1, float(cum[j])


def selection_point(ranking: Ranking, selection: Selection, profile: MassProfile) -> tuple[float, float]:
    """Where a selection sits on the retained-mass plane.

    Returns:
        ``(dims_share, mass_share)``: ``k / n_total`` and the share of importance kept, the one
        definition of the preview and the CLI (:func:`gradiend_core.pruning.reduction.importance_kept`:
        finite importance of the kept dims over the finite importance of all dims; ``nan`` when
        the total is 0). Without a mask the selection is a prefix of the ranking, so the point lies
        on the curve; with a mask it lies below it. O(buckets) for a selection ranked by
        ``ranking``, O(k) otherwise.
    """
    mass = importance_kept(selection, ranking) if profile.total > 0 else float("nan")
    return selection.k / float(profile.n_total), mass
