"""How importance mass is distributed over the dims of one part.

The *retained mass* of the top ``k`` dims is the share of the part's total importance that they
hold: ``cum[k-1] / total`` with ``cum`` the cumulative sum of the importance sorted from most to
least important (:attr:`Ranking.sorted_values`). Sums are float64 and sequential, chunk by chunk,
so the values equal ``np.cumsum`` over the whole vector bit for bit while the peak extra memory
stays a few tens of MB for any input_dim.

Only finite importance counts as mass: NaN (ranked last) and +Inf (ranked first) contribute 0,
and are reported as counts, so one broken weight cannot make every share ``nan``.

A profile is cheap to draw: the curves are kept at most ``max_points`` positions (see
:func:`plot_positions`); the counts for given shares (50/90/99 %) are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

from ..selection import Ranking, Selection

#: Dims per chunk of the cumulative sum (32 MiB of float64 temporaries).
CHUNK = 1 << 22
#: Default number of plotted positions of a curve.
MAX_POINTS = 3000
DEFAULT_SHARES = (0.5, 0.9, 0.99)
_SMALLEST_POSITIVE = float(np.nextafter(np.float32(0), np.float32(1)))


def plot_positions(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Ranks (1-based, int64, sorted unique) at which a curve over ``n`` ranked dims is drawn.

    All ranks when ``n <= max_points``; otherwise a third log-spaced from the top rank, a third
    log-spaced from the bottom rank and a third evenly spaced, so a log axis is dense at both ends
    and a linear one everywhere. Rank 1 and rank ``n`` are always included.

    Raises:
        ValueError: if ``max_points < 3``.
    """
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3, got {max_points}.")
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    if n <= max_points:
        return np.arange(1, n + 1, dtype=np.int64)
    m = max_points // 3
    head = np.geomspace(1, n, m)
    tail = n + 1 - np.geomspace(1, n, m)
    even = np.linspace(1, n, max_points - 2 * m)
    pos = np.rint(np.concatenate([head, tail, even])).astype(np.int64)
    return np.unique(np.clip(pos, 1, n))


def _mass_chunks(sorted_values: np.ndarray, n: int, start_chunk: int = 0, running: float = 0.0) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(start, cum)``: float64 cumulative mass of ``sorted_values[start:start+CHUNK]``,
    continuing from ``running`` (non-finite values count 0)."""
    for start in range(start_chunk * CHUNK, n, CHUNK):
        chunk = sorted_values[start : min(n, start + CHUNK)].astype(np.float64)
        bad = ~np.isfinite(chunk)
        if bad.any():
            chunk[bad] = 0.0
        chunk[0] += running  # same operation, in the same order, as one np.cumsum over everything
        cum = np.cumsum(chunk)
        running = float(cum[-1])
        yield start, cum


@dataclass(frozen=True)
class MassProfile:
    """Importance mass of one part along its ranking, at plot positions.

    Attributes:
        n_total: dims of the part (``input_dim``), NaN included.
        n_valid: dims with a non-NaN importance (ranked before every NaN).
        n_nan: dims with NaN importance (no mass).
        n_inf: dims with +Inf importance (ranked first, no mass).
        n_zero: dims with importance exactly 0 (not drawable on a log axis).
        total: float64 sum of the finite importance (the part's total mass).
        positions: int64 ``(p,)``, ranks ``k`` (1-based, ascending) the curves are kept at.
        values: float64 ``(p,)``, importance of the dim at rank ``k``.
        cum_mass: float64 ``(p,)``, mass of the top ``k`` dims.
        chunk_ends: float64, cumulative mass at the end of each :data:`CHUNK` (for
            :func:`count_for_mass` in O(CHUNK)).
        share_points: ``{share: (k, retained)}``: the smallest ``k`` whose top dims hold at
            least ``share`` of the mass, and the share they hold exactly (>= ``share``); for
            :data:`DEFAULT_SHARES` or the shares asked for; empty when the total is 0.
    """

    n_total: int
    n_valid: int
    n_nan: int
    n_inf: int
    n_zero: int
    total: float
    positions: np.ndarray
    values: np.ndarray
    cum_mass: np.ndarray
    chunk_ends: np.ndarray
    share_points: Dict[float, Tuple[int, float]]

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
    def ecdf(self) -> np.ndarray:
        """Share of non-NaN dims with importance <= ``values`` at each position, float64.

        ``(n_valid - k + 1) / n_valid`` for rank ``k``: exact without ties; inside a run of equal
        values the points climb the ECDF's vertical jump.
        """
        return (self.n_valid - self.positions + 1) / float(max(self.n_valid, 1))


def mass_profile(ranking: Ranking, max_points: int = MAX_POINTS, shares: Sequence[float] = DEFAULT_SHARES) -> MassProfile:
    """Cumulative importance mass of ``ranking`` (one full chunked pass, O(n), no sort).

    Args:
        ranking: the part's :class:`Ranking` (``sorted_values`` descending, NaN last).
        max_points: at most this many plotted positions (:func:`plot_positions`).
        shares: shares in (0, 1] for which to find the exact count (``share_points``).

    Returns:
        A :class:`MassProfile`.

    Raises:
        ValueError: for a share outside (0, 1] or ``max_points < 3``.
    """
    for s in shares:
        _check_share(s)
    sv = ranking.sorted_values
    n_valid = ranking.size - ranking.n_nan
    positions = plot_positions(n_valid, max_points)
    cum_at = np.empty(positions.size, dtype=np.float64)
    ends = []
    for start, cum in _mass_chunks(sv, n_valid):
        lo, hi = np.searchsorted(positions, [start + 1, start + cum.size + 1])
        cum_at[lo:hi] = cum[positions[lo:hi] - 1 - start]
        ends.append(float(cum[-1]))
    chunk_ends = np.asarray(ends, dtype=np.float64)
    total = float(chunk_ends[-1]) if chunk_ends.size else 0.0
    n_nonneg = ranking.count_at_least(0.0)
    n_pos = ranking.count_at_least(_SMALLEST_POSITIVE)
    profile = MassProfile(
        n_total=ranking.size,
        n_valid=n_valid,
        n_nan=ranking.n_nan,
        n_inf=ranking.count_at_least(math.inf),
        n_zero=n_nonneg - n_pos,
        total=total,
        positions=positions,
        values=sv[positions - 1].astype(np.float64),
        cum_mass=cum_at,
        chunk_ends=chunk_ends,
        share_points={},
    )
    if total > 0:
        for s in shares:
            k, cum = _locate_share(ranking, s, profile)
            profile.share_points[float(s)] = (k, cum / total)
    return profile


def _check_share(share: float) -> float:
    s = float(share)
    if not (0.0 < s <= 1.0):
        raise ValueError(f"a retained-mass share must be in (0, 1] (e.g. 0.9 for 90 %); got {share!r}.")
    return s


def count_for_mass(ranking: Ranking, share: float, profile: MassProfile) -> int:
    """Smallest ``k`` such that the top ``k`` dims hold at least ``share`` of the mass.

    Reads one chunk of ``ranking`` (found from ``profile.chunk_ends``), so it is O(CHUNK).

    Args:
        ranking: the ranking ``profile`` was computed from.
        share: float in (0, 1], e.g. ``0.9``.
        profile: :func:`mass_profile` of ``ranking``.

    Returns:
        ``k`` in ``[1, n_valid]`` (an int count for ``topk``).

    Raises:
        ValueError: for a share outside (0, 1], or when the part has no positive finite importance
            (every count would keep "all" of nothing).
    """
    return _locate_share(ranking, share, profile)[0]


def _locate_share(ranking: Ranking, share: float, profile: MassProfile) -> Tuple[int, float]:
    s = _check_share(share)
    if profile.total <= 0:
        raise ValueError("this part has no positive finite importance, so no count keeps a share of its mass.")
    target = s * profile.total
    ci = int(np.searchsorted(profile.chunk_ends, target, side="left"))
    ci = min(ci, profile.chunk_ends.size - 1)  # share 1.0 within rounding: the last chunk
    running = float(profile.chunk_ends[ci - 1]) if ci > 0 else 0.0
    start, cum = next(_mass_chunks(ranking.sorted_values, profile.n_valid, ci, running))
    j = min(int(np.searchsorted(cum, target, side="left")), cum.size - 1)
    return start + j + 1, float(cum[j])


def selection_point(ranking: Ranking, selection: Selection, profile: MassProfile) -> Tuple[float, float]:
    """Where a selection sits on the retained-mass plane, O(k).

    Returns:
        ``(dims_share, mass_share)``: ``k / n_total`` and the finite importance the kept dims hold
        over ``profile.total`` (``nan`` when the total is 0). Without a mask the selection is a
        prefix of the ranking, so the point lies on the curve; with a mask it lies below it.
    """
    kept = ranking.importance[selection.keep].astype(np.float64)
    kept = kept[np.isfinite(kept)]
    mass = float(kept.sum()) / profile.total if profile.total > 0 else float("nan")
    return selection.k / float(profile.n_total), mass
