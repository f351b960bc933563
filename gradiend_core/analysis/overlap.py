"""Overlap of index sets: pairwise intersections, Jaccard, and exact intersection patterns.

Sets are sorted unique int64 index arrays in one index space of size ``universe`` (the local
input space when comparing the parts of one model, the base-global space when comparing models).
Counting uses a bool membership vector of ``universe`` bytes, so a pair costs O(|A| + |B|) after
an O(universe) reset and nothing is sorted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..ranking.importance import PARTS
from ..ranking.ranked_dims import top_many
from ..ranking.ranking import Ranking
from ..selection.rule import select

__all__ = [
    "IntersectionPatterns",
    "OverlapMatrix",
    "intersection_patterns",
    "overlap_matrix",
    "part_topk_sets",
    "restrict_patterns",
]

#: Most sets an intersection-pattern count accepts (patterns are coded in one byte).
MAX_PATTERN_SETS = 8


def part_topk_sets(rankings: Mapping[str, Ranking], topk: object) -> dict[str, np.ndarray]:
    """The top-k set of each part, by the one selection rule.

    Args:
        rankings: ``{part: Ranking}`` of one model (same input_dim).
        topk: int >= 1 (count) or float in (0, 1] (fraction), as for :func:`select`.

    Returns:
        ``{part: keep}`` with ``keep`` sorted local indices, int64 ``(k,)``, in the order of
        :data:`gradiend_core.ranking.importance.PARTS` for known parts.

    Raises:
        SelectionError: for an invalid ``topk``.
    """
    names = sorted(rankings, key=lambda p: PARTS.index(p) if p in PARTS else len(PARTS))
    # one pass over the weights for the parts that need one (not one each)
    requests = {}
    for p in names:
        sel = select(rankings[p], topk=topk)
        requests[p] = (sel.dims, sel.k)
    got = top_many(requests)
    return {p: got[p] for p in names}


def _check_sets(sets: Mapping[str, np.ndarray], universe: int) -> tuple[tuple[str, ...], list]:
    if not sets:
        raise ValueError("give at least one index set.")
    names = tuple(sets)
    arrays = []
    for name in names:
        a = np.asarray(sets[name])
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"set {name!r} must be a 1-D integer index array, got dtype {a.dtype} and shape {a.shape}."
            )
        if a.size and (int(a.min()) < 0 or int(a.max()) >= universe):
            raise ValueError(f"set {name!r} has indices outside [0, {universe}); are all sets in the same index space?")
        arrays.append(a)
    return names, arrays


@dataclass(frozen=True)
class OverlapMatrix:
    """Pairwise overlap of named index sets.

    Attributes:
        names: set names, in matrix order.
        sizes: int64 ``(m,)``, size of each set.
        intersection: int64 ``(m, m)``, ``|A_i & A_j|`` (the diagonal holds the sizes).
        universe: size of the index space.
    """

    names: tuple[str, ...]
    sizes: np.ndarray
    intersection: np.ndarray
    universe: int

    @property
    def union(self) -> np.ndarray:
        """int64 ``(m, m)``, ``|A_i | A_j|``."""
        return self.sizes[:, None] + self.sizes[None, :] - self.intersection

    @property
    def jaccard(self) -> np.ndarray:
        """float64 ``(m, m)``, ``|A_i & A_j| / |A_i | A_j|`` (``nan`` for two empty sets)."""
        u = self.union
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(u > 0, self.intersection / np.maximum(u, 1), np.nan)

    @property
    def overlap_fraction(self) -> np.ndarray:
        """float64 ``(m, m)``, ``|A_i & A_j| / min(|A_i|, |A_j|)`` - the reference's
        ``intersection_frac`` (its heatmap's percentages); 0 when a set is empty."""
        m = np.minimum(self.sizes[:, None], self.sizes[None, :])
        return np.where(m > 0, self.intersection / np.maximum(m, 1), 0.0)


def overlap_matrix(sets: Mapping[str, np.ndarray], universe: int) -> OverlapMatrix:
    """Intersections of every pair of index sets.

    Args:
        sets: ``{name: indices}``, each 1-D unique integer indices in ``[0, universe)``.
        universe: size of the index space (indices are checked against it).

    Returns:
        An :class:`OverlapMatrix`.

    Raises:
        ValueError: for no sets, a non-integer or non-1-D array, or indices out of range.
    """
    names, arrays = _check_sets(sets, universe)
    m = len(names)
    inter = np.zeros((m, m), dtype=np.int64)
    # sorted index sets intersect in O(k log k) memory of the sets alone: nothing universe-sized
    dt = np.int32 if universe < 2**31 else np.int64
    ordered = [np.sort(np.asarray(a, dtype=dt)) for a in arrays]
    for i in range(m):
        for j in range(i, m):
            both = np.intersect1d(ordered[i], ordered[j], assume_unique=True).size
            inter[i, j] = inter[j, i] = both
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    return OverlapMatrix(names, sizes, inter, int(universe))


@dataclass(frozen=True)
class IntersectionPatterns:
    """Exact intersection patterns of up to :data:`MAX_PATTERN_SETS` sets (an UpSet plot's data).

    Every index in the union of the sets has one pattern: the sets it belongs to. Patterns with
    no index are left out.

    Attributes:
        names: set names (pattern columns).
        membership: bool ``(p, m)``, row ``r`` says which sets pattern ``r`` contains.
        counts: int64 ``(p,)``, indices with exactly that pattern; sorted descending (ties: fewer
            sets first, then by the sets' order).
        set_sizes: int64 ``(m,)``.
    """

    names: tuple[str, ...]
    membership: np.ndarray
    counts: np.ndarray
    set_sizes: np.ndarray

    def label(self, r: int, joiner: str = " & ") -> str:
        """Names of the sets in pattern ``r``, e.g. ``"encoder-weight & decoder-sum"``."""
        return joiner.join(n for n, inside in zip(self.names, self.membership[r]) if inside)


def intersection_patterns(sets: Mapping[str, np.ndarray], universe: int) -> IntersectionPatterns:
    """Count the indices of every exact membership pattern (O(sum of set sizes); nothing as large
    as the universe is allocated).

    Args:
        sets: ``{name: indices}`` as for :func:`overlap_matrix`, 1 to :data:`MAX_PATTERN_SETS`.
        universe: size of the index space.

    Returns:
        An :class:`IntersectionPatterns`.

    Raises:
        ValueError: for more than :data:`MAX_PATTERN_SETS` sets or invalid sets.
    """
    names, arrays = _check_sets(sets, universe)
    m = len(names)
    if m > MAX_PATTERN_SETS:
        raise ValueError(f"intersection patterns take at most {MAX_PATTERN_SETS} sets, got {m}.")
    # one byte of membership bits per index of the union (sorted), set by a binary search per set:
    # memory follows the sets, never the universe
    dt = np.int32 if universe < 2**31 else np.int64  # half the memory for any realistic input space
    union = np.unique(np.concatenate([np.asarray(a, dtype=dt) for a in arrays]))
    code = np.zeros(union.size, dtype=np.uint8)
    for i, a in enumerate(arrays):
        code[np.searchsorted(union, np.asarray(a, dtype=dt))] |= np.uint8(1 << i)
    counts = np.array([np.count_nonzero(code == c) for c in range(1 << m)], dtype=np.int64)[1:]
    codes = np.flatnonzero(counts) + 1
    bits = ((codes[:, None] >> np.arange(m)[None, :]) & 1).astype(bool)
    degree = bits.sum(axis=1)
    order = np.lexsort((codes, degree, -counts[codes - 1]))
    return IntersectionPatterns(
        names=names,
        membership=bits[order],
        counts=counts[codes - 1][order].astype(np.int64),
        set_sizes=np.array([a.size for a in arrays], dtype=np.int64),
    )


def restrict_patterns(patterns: IntersectionPatterns, names: Sequence[str]) -> IntersectionPatterns:
    """The patterns of a subset of the sets, from the patterns of all of them (no index pass).

    An index's pattern over ``names`` is its full pattern with the other sets dropped; indices in
    none of ``names`` are left out.

    Raises:
        ValueError: for a name that is not one of ``patterns.names`` or no names.
    """
    unknown = [n for n in names if n not in patterns.names]
    if unknown or not names:
        raise ValueError(f"names must be a non-empty subset of {list(patterns.names)}; got {list(names)}.")
    cols = [patterns.names.index(n) for n in names]
    sub = patterns.membership[:, cols]
    codes = (sub.astype(np.int64) << np.arange(len(cols))[None, :]).sum(axis=1)
    counts = np.bincount(codes, weights=patterns.counts, minlength=1 << len(cols)).astype(np.int64)[1:]
    present = np.flatnonzero(counts) + 1
    bits = ((present[:, None] >> np.arange(len(cols))[None, :]) & 1).astype(bool)
    order = np.lexsort((present, bits.sum(axis=1), -counts[present - 1]))
    return IntersectionPatterns(tuple(names), bits[order], counts[present - 1][order], patterns.set_sizes[cols])
