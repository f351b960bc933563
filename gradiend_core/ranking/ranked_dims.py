"""The dims a selection ranks among (all, or those a mask keeps), and the process-wide budget of
their last answers.

A :class:`RankedDims` answers every question about "the top ``k``" of its set from per-bucket
counts plus the one bucket that rank ``k`` falls in (see :mod:`gradiend_core.ranking.ranking`).
Without a layout each answer that lists dims is a pass over the weights, so a view keeps its last
answers; all views of the process together keep at most :data:`LAST_ANSWER_BYTES` of them.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SelectionError
from .bounds import Bounds, count_at_least_range, top_mass_range, value_range_at, widen
from .keys import N_BUCKETS, NAN_BUCKET, ZERO_BUCKET, bucket_of, finite_or_zero, mass_weights, sort_keys
from .tables import FineCounts, ParamTables

if TYPE_CHECKING:  # a view is made by its ranking (Ranking.dims), which imports this module
    from .ranking import Ranking

__all__ = [
    "LAST_ANSWER_BYTES",
    "RankedDims",
    "top_many",
]


#: Bytes of last answers (see :class:`RankedDims`) kept in all, least recently kept dropped first.
LAST_ANSWER_BYTES = 192 << 20
_answers_lock = threading.Lock()
_answers: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()  # id(view) -> (view, bytes kept)


def _kept_answers(view: RankedDims) -> None:
    """Account ``view``'s last answers in the process-wide :data:`LAST_ANSWER_BYTES`: the views
    that kept theirs least recently forget them (a page compares several parts: only the answers
    asked again are worth memory)."""
    with _answers_lock:
        _answers.pop(id(view), None)
        _answers[id(view)] = (weakref.ref(view), view.answer_bytes())
        total = sum(b for _, b in _answers.values())
        while total > LAST_ANSWER_BYTES and _answers:
            _, (ref, nbytes) = _answers.popitem(last=False)
            total -= nbytes
            old = ref()
            if old is not None:
                old.forget_answers()


def _sorted_union(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    """Ascending int64 union of two disjoint index arrays in ``0..size``: a sort for few indices,
    a flag array and one scan for many (sorting 5e7 indices takes seconds, the scan a fraction)."""
    n = a.size + b.size
    if n * 16 < size:
        out = np.concatenate([a, b]).astype(np.int64, copy=False)
        out.sort()
        return out
    flags = np.zeros(size, dtype=bool)
    flags[a] = True
    flags[b] = True
    return np.flatnonzero(flags).astype(np.int64, copy=False)


def _whole_parameters(mask: np.ndarray, params: ParamTables | None) -> np.ndarray | None:
    """The parameters ``mask`` keeps (bool ``(P,)``) when it keeps each parameter whole or not at
    all and the tables hold mass, else ``None``. Reads the mask only (no weights)."""
    if params is None or params.mass is None:
        return None
    m = np.asarray(mask)
    offsets = params.offsets
    rows = np.zeros(offsets.size - 1, dtype=bool)
    for i in range(rows.size):
        seg = m[offsets[i] : offsets[i + 1]]
        if seg.size == 0:
            continue
        first = bool(seg[0])
        if (first and not seg.all()) or (not first and seg.any()):
            return None
        rows[i] = first
    return rows


class RankedDims:
    """A set of dims (all, or those a mask keeps) of one :class:`Ranking`, in rank order.

    Every question about "the top ``k``" of the set is answered from per-bucket counts plus the one
    bucket that rank ``k`` falls in; see the module docstring.

    Attributes:
        ranking: the ranking.
        mask: numpy bool ``(size,)`` or ``None`` for all dims.
        n: members.
        counts: int64 ``(N_BUCKETS,)``, members per bucket.
        mass: float64 ``(N_BUCKETS,)``, finite importance of the members per bucket.
        params: the members' :class:`ParamTables` (the ranking's own without a mask; built in the
            same pass for a mask when the ranking has tables), or ``None``.
    """

    def __init__(self, ranking: Ranking, mask: np.ndarray | None):
        self.ranking = ranking
        self.mask = mask
        #: int64 ``(P,)`` members per parameter (``None`` when the ranking knows no parameters)
        self.param_members: np.ndarray | None = None
        self._params: ParamTables | None = None  # a mask's own tables (without one: the ranking's)
        #: the members' dims per fine bin (bounds of boundary answers), or ``None``
        self.fine: FineCounts | None = None
        if mask is None:
            self.counts, self.mass = ranking.counts, ranking.mass
            self.fine = ranking.summary.fine
            if ranking.param_offsets is not None:
                self.param_members = np.diff(np.asarray(ranking.param_offsets, dtype=np.int64))
        elif _whole_parameters(mask, ranking.params) is not None:
            self._from_tables(ranking.params, _whole_parameters(mask, ranking.params))
        else:
            self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
            self.mass = np.zeros(N_BUCKETS, dtype=np.float64)
            self.fine = FineCounts(0, np.zeros(0, dtype=np.int64))
            # per-parameter answers of a masked selection then cost O(buckets), as without a mask
            own = ranking.params
            self._params = None if own is None else ParamTables.accumulator(own.offsets, own.occupied)
            offsets = ranking.param_offsets
            if offsets is not None:
                self.param_members = np.zeros(len(offsets) - 1, dtype=np.int64)
            for start, v in ranking.scan():  # one O(n) pass per mask, then cached by Ranking.dims
                m = np.asarray(mask[start : start + v.size])
                kept = v[m]
                b = bucket_of(kept)
                self.counts += np.bincount(b, minlength=N_BUCKETS)
                self.mass += np.bincount(b, weights=mass_weights(kept), minlength=N_BUCKETS)
                self.fine = self.fine.merged(FineCounts.of_values(kept))
                if self._params is not None:
                    self._params.add(start, kept, b, keep=m)
                if offsets is not None:  # members per parameter: a mask that keeps all it holds
                    inside = np.clip(offsets - start, 0, m.size)
                    self.param_members += np.diff(np.concatenate([[0], np.cumsum(m)])[inside])
        self.n = int(self.counts.sum())
        desc = np.cumsum(self.counts[::-1])
        self._above = np.concatenate([desc[::-1][1:], [0]])  # members in buckets above b
        # The last answers of top() and ranked_with_values(): a page asks the same on every rerun,
        # and without a layout each answer is a pass over the weights. Replaced, never grown.
        self._last_top: tuple[int, np.ndarray] | None = None
        self._last_ranked: tuple[int, np.ndarray, np.ndarray] | None = None
        self._last_top_members: tuple[int, np.ndarray, np.ndarray] | None = None  # (k, dims, values)

    def _from_tables(self, own: ParamTables, rows: np.ndarray) -> None:
        """The sums of a mask that keeps whole parameters (``rows``, bool ``(P,)``), from the
        per-parameter tables: no pass over the weights. Fine bins are not kept per parameter, so
        bounds of this view are bucket-wide."""
        counts = np.where(rows[:, None], own.counts, 0)
        mass = None if own.mass is None else np.where(rows[:, None], own.mass, 0.0)
        self._params = ParamTables(own.offsets, own.occupied, counts, mass)
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self.counts[own.occupied] = counts.sum(axis=0)
        self.mass = np.zeros(N_BUCKETS, dtype=np.float64)
        if mass is not None:
            self.mass[own.occupied] = mass.sum(axis=0)
        self.fine = None
        self.param_members = np.where(rows, np.diff(own.offsets), 0).astype(np.int64)

    @property
    def params(self) -> ParamTables | None:
        """The members' per-parameter tables: the ranking's (which a layout may bring later)
        without a mask, the mask's own (built with it when the ranking had tables) with one."""
        return self.ranking.params if self.mask is None else self._params

    def answer_bytes(self) -> int:
        """Bytes of the last answers this view keeps."""
        last = 0
        top, ranked, members = self._last_top, self._last_ranked, self._last_top_members
        if top is not None:
            last += top[1].nbytes
        for answer in (ranked, members):
            if answer is not None:
                last += answer[1].nbytes + answer[2].nbytes
        return last

    def forget_answers(self) -> None:
        """Drop the last answers (they are recomputed when asked again)."""
        self._last_top = self._last_ranked = self._last_top_members = None

    def resident_bytes(self) -> int:
        """Bytes this view holds beyond its ranking: its last answers, and for a mask its per-bucket
        sums and tables."""
        last = self.answer_bytes()
        if self.mask is None:
            return last
        own = self.counts.nbytes + self.mass.nbytes + (self.params.nbytes if self.params is not None else 0)
        return int(last + own)

    # ------------------------------------------------------------------------ bucket access
    def members(self, bucket: int) -> tuple[np.ndarray, np.ndarray]:
        """``(local indices, values)`` of the members in ``bucket``, in exact rank order."""
        idx, vals = self.ranking.bucket_sorted(bucket)
        if self.mask is None:
            return idx, vals
        keep = np.asarray(self.mask)[idx]
        return idx[keep], vals[keep]

    def cheap_members(self, bucket: int) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`members` of ``bucket`` when they cost no pass over the weights (the layout covers
        the bucket, or it was sorted before), else ``None``."""
        ranking = self.ranking
        with ranking._lock:
            cached = bucket in ranking._sorted
        if cached or ranking.layout_covers(bucket):
            try:
                return self.members(bucket)
            except OSError:  # a damaged layout: detached, the answer is bounded instead
                return None
        return None

    # ------------------------------------------------------------------------------ bounds
    def count_at_least_bounds(self, threshold: float) -> Bounds:
        """Bounds of :meth:`count_at_least` (exact when the threshold's bucket is at hand or the
        fine bins decide it); no pass over the weights."""
        kt = int(sort_keys(np.array([threshold], dtype=np.float32))[0])
        b = kt >> 16
        above = int(self._above[b])
        if not self.counts[b]:
            return Bounds.of(above)
        members = self.cheap_members(b)
        if members is not None:
            return Bounds.of(above + int(np.count_nonzero(sort_keys(members[1]) >= kt)))
        lo, hi = count_at_least_range(self.fine, b, int(self.counts[b]), kt)
        return Bounds(above + lo, above + hi)

    def mass_top_bounds(self, k: int) -> Bounds:
        """Bounds of :meth:`mass_top` (float64); no pass over the weights."""
        k = min(int(k), self.n)
        if k <= 0:
            return Bounds.of(0.0)
        if k == self.n:
            return Bounds.of(self.mass_top(k))
        b, r = self.boundary(k)
        members = self.cheap_members(b)
        if members is not None:
            return Bounds.of(self.mass_top(k))
        above = float(self.mass[b + 1 :].sum())
        if r == int(self.counts[b]):  # the whole bucket is taken: its mass is known
            return Bounds.of(self.mass_top(k) if self.cheap_members(b) else above + float(self.mass[b]))
        lo, hi = top_mass_range(self.fine, b, int(self.counts[b]), r)
        if lo == hi == 0.0:
            return Bounds.of(above + 0.0)
        return Bounds(*widen(above + lo, above + hi, self.n))

    def value_at_bounds(self, rank: int) -> Bounds:
        """Bounds of :meth:`value_at` (the importance at 0-based ``rank``)."""
        b, r = self.boundary(rank + 1)
        members = self.cheap_members(b)
        if members is not None:
            return Bounds.of(float(members[1][r - 1]))
        if b == NAN_BUCKET:
            return Bounds.of(float("nan"))
        lo, hi = value_range_at(self.fine, b, int(self.counts[b]), r)
        return Bounds(lo, hi)

    def param_counts_top_bounds(self, k: int) -> Bounds:
        """Bounds of ``param_counts_top(k)[0]`` (int64 ``(P,)`` each), from the per-parameter
        tables alone: the parameters' members of the boundary bucket split the ``r`` taken in some
        unknown way, except in the NaN bucket (ranked by index alone)."""
        params = self.params
        if params is None:
            raise SelectionError("per-parameter bounds need the per-parameter tables of the open pass.")
        k = min(int(k), self.n)
        p = len(params.offsets) - 1
        if k <= 0:
            return Bounds.of(np.zeros(p, dtype=np.int64))
        b, r = self.boundary(k)
        if self.cheap_members(b) is not None:
            return Bounds.of(self.param_counts_top(k, with_mass=False)[0])
        above, _ = params.above(b)
        col = params._column[b]
        inside = params.counts[:, col] if col >= 0 else np.zeros(p, dtype=np.int64)
        if b == NAN_BUCKET:  # NaN members rank by index: the parameters fill in order
            taken = np.minimum(inside, np.maximum(0, r - np.concatenate([[0], np.cumsum(inside)[:-1]])))
            return Bounds.of(above + taken)
        total = int(self.counts[b])
        lo = np.maximum(0, r - (total - inside))
        hi = np.minimum(inside, r)
        return Bounds(above + lo, above + hi)

    def boundary(self, k: int) -> tuple[int, int]:
        """``(bucket, r)``: the bucket holding rank ``k - 1`` and how many of its members the top
        ``k`` take (``1 <= r <= counts[bucket]``). Requires ``1 <= k <= n``."""
        if not 1 <= k <= self.n:
            raise SelectionError(f"rank {k} is outside 1..{self.n}.")
        cum = np.cumsum(self.counts[::-1])  # members in buckets >= N-1-i
        i = int(np.searchsorted(cum, k, side="left"))
        b = N_BUCKETS - 1 - i
        return b, k - int(self._above[b])

    # ----------------------------------------------------------------------------- queries
    def top(self, k: int) -> np.ndarray:
        """Sorted local indices (int64) of the top ``k`` members (all members when ``k >= n``)."""
        k = min(int(k), self.n)
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        if k == self.n:
            return (
                np.arange(self.ranking.size, dtype=np.int64)
                if self.mask is None
                else np.flatnonzero(self.mask).astype(np.int64)
            )
        last = self._last_top
        if last is not None and last[0] == k:
            return last[1]
        b, r = self.boundary(k)
        whole, whole_vals, idx, vals = self.ranking.collect(b, mask=self.mask)
        self.ranking.bucket_sorted(b, (idx, vals))  # one pass serves both (without a layout)
        cut_idx, cut_vals = self.members(b)
        out = _sorted_union(whole, cut_idx[:r], self.ranking.size)
        out.flags.writeable = False  # shared by every caller
        members = None
        if not self.ranking.has_layout and out.nbytes * 5 // 2 <= LAST_ANSWER_BYTES:
            # the top of the ranking, from this pass (see ranked_with_values)
            members = (k, np.concatenate([whole, cut_idx[:r]]), np.concatenate([whole_vals, cut_vals[:r]]))
        if out.nbytes <= LAST_ANSWER_BYTES:
            self._last_top, self._last_top_members = (k, out), members
            _kept_answers(self)
        return out

    def ranked(self, k: int) -> np.ndarray:
        """Local indices (int64) of the top ``k`` members in rank order."""
        return self.ranked_with_values(k)[0]

    def ranked_with_values(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(local indices int64, importance float32)`` of the top ``k`` members in rank order
        (sorts only the buckets they occupy)."""
        k = min(int(k), self.n)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        last = self._last_ranked
        if last is not None and last[0] >= k:
            return last[1][:k], last[2][:k]
        members = self._last_top_members
        if members is not None and members[0] >= k and not self.ranking.layout_covers(self.boundary(k)[0]):
            # the top k is inside the last top(): sort only the buckets it spans, without a pass
            idx, vals = members[1], members[2]
            inside = bucket_of(vals) >= self.boundary(k)[0]
            idx, vals = idx[inside], vals[inside]
            perm = np.lexsort((idx, ~sort_keys(vals)))[:k]
            return idx[perm], vals[perm]
        if not self.ranking.layout_covers(self.boundary(k)[0]):  # one pass for all the buckets the top k spans
            lowest = self.boundary(k)[0]
            idx, vals = self.ranking.collect_from(lowest)
            if self.mask is not None:
                inside = np.asarray(self.mask)[idx]
                idx, vals = idx[inside], vals[inside]
            idx, vals = idx[:k].copy(), vals[:k].copy()
            idx.flags.writeable = vals.flags.writeable = False  # shared by every caller
            if idx.nbytes + vals.nbytes <= LAST_ANSWER_BYTES:
                self._last_ranked = (k, idx, vals)
                _kept_answers(self)
            return idx, vals
        idx_parts, val_parts = [], []
        got = 0
        for b in np.flatnonzero(self.counts)[::-1]:
            if got >= k:
                break
            idx, vals = self.members(int(b))
            idx_parts.append(idx[: k - got])
            val_parts.append(vals[: k - got])
            got += idx_parts[-1].size
        if not idx_parts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        return np.concatenate(idx_parts), np.concatenate(val_parts)

    def value_at(self, rank: int) -> float:
        """Importance of the member at 0-based ``rank`` in rank order."""
        b, r = self.boundary(rank + 1)
        return float(self.members(b)[1][r - 1])

    def count_at_least(self, threshold: float) -> int:
        """Members with importance ``>= threshold``, compared in float32 (as torch and NumPy
        compare a float32 vector with a Python float)."""
        kt = int(sort_keys(np.array([threshold], dtype=np.float32))[0])
        b = kt >> 16
        if not self.counts[b]:
            return int(self._above[b])
        vals = self.members(b)[1]
        return int(self._above[b]) + int(np.count_nonzero(sort_keys(vals) >= kt))

    def mass_top(self, k: int) -> float:
        """float64 sum of the finite importance of the top ``k`` members."""
        k = min(int(k), self.n)
        if k <= 0:
            return 0.0
        if k == self.n:  # everything: the same sum as the total, so a share of all reads exactly 1
            return float(self.mass.sum())
        b, r = self.boundary(k)
        above = float(self.mass[b + 1 :].sum())
        return above + float(finite_or_zero(self.members(b)[1][:r]).sum())

    def bucket_counts_top(self, k: int) -> np.ndarray:
        """int64 ``(N_BUCKETS,)``: members of the top ``k`` per bucket."""
        out = np.zeros(N_BUCKETS, dtype=np.int64)
        k = min(int(k), self.n)
        if k <= 0:
            return out
        b, r = self.boundary(k)
        out[b + 1 :] = self.counts[b + 1 :]
        out[b] = r
        return out

    def zeros_top(self, k: int) -> int:
        """Members of the top ``k`` whose importance is exactly 0 (they rank last in their bucket)."""
        k = min(int(k), self.n)
        if k <= 0 or not self.counts[ZERO_BUCKET]:
            return 0
        b, r = self.boundary(k)
        if b > ZERO_BUCKET:  # the cut is above: no member of the zero bucket is read
            return 0
        vals = self.members(ZERO_BUCKET)[1]
        zeros = int(np.count_nonzero(vals == 0))
        if b < ZERO_BUCKET:
            return zeros
        return max(0, r - (vals.size - zeros))

    def param_counts_top(self, k: int, with_mass: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Per parameter, the top ``k`` members and their finite importance: ``(int64 (P,),
        float64 (P,) or None)`` (``None`` when the tables hold no mass, or ``with_mass`` is False).
        O(buckets) with :attr:`params`; else from the kept index set, O(k) (and a lookup of the
        kept dims' importance for the mass), which needs the parameters' offsets
        (:attr:`Ranking.param_offsets`)."""
        params = self.params
        offsets = params.offsets if params is not None else self.ranking.param_offsets
        if offsets is None:
            raise SelectionError("this ranking knows no parameters; count from the kept index set instead.")
        k = min(int(k), self.n)
        p = len(offsets) - 1
        if k <= 0:
            return np.zeros(p, dtype=np.int64), np.zeros(p, dtype=np.float64)
        if params is None:
            if k == self.n and not with_mass and self.param_members is not None:
                return self.param_members.copy(), None
            keep = self.top(k)
            counts = np.diff(np.searchsorted(keep, offsets)).astype(np.int64)  # keep is sorted
            if not with_mass:
                return counts, None
            pid = np.repeat(np.arange(p), counts)
            return counts, np.bincount(pid, weights=finite_or_zero(self.ranking.values_at(keep)), minlength=p)
        b, r = self.boundary(k)
        counts, mass = params.above(b)
        idx, vals = self.members(b)
        pid = params.param_of(idx[:r])
        return (
            counts + np.bincount(pid, minlength=p),
            None
            if mass is None or not with_mass
            else mass + np.bincount(pid, weights=finite_or_zero(vals[:r]), minlength=p),
        )


def top_many(requests: dict[str, tuple[RankedDims, int]]) -> dict[str, np.ndarray]:
    """:meth:`RankedDims.top` of several rankings of one checkpoint (the four parts, say), with one
    pass over the weights for all of those that need one, instead of one pass each.

    Rankings of the open pass share a joint stream (``Ranking.joint``: every block of the weight
    file read once, all parts computed from it); answers already at hand (a layout that covers the
    boundary, the last answer) cost no pass.

    Args:
        requests: ``{name: (unmasked dims, k)}``.

    Returns:
        ``{name: sorted int64 local indices}``, as :meth:`RankedDims.top` returns them.
    """
    out: dict[str, np.ndarray] = {}
    pending: dict[str, tuple[RankedDims, int, int, int]] = {}
    for name, (dims, k) in requests.items():
        k = min(int(k), dims.n)
        last = dims._last_top
        cheap = k <= 0 or k == dims.n or (last is not None and last[0] == k)
        joint = getattr(dims.ranking, "joint", None)
        if cheap or dims.mask is not None or joint is None or dims.ranking.layout_covers(dims.boundary(k)[0]):
            out[name] = dims.top(k)
            continue
        b, r = dims.boundary(k)
        pending[name] = (dims, k, b, r)
    if not pending:
        return out
    joints = {id(d.ranking.joint[1]): d.ranking.joint for d, *_ in pending.values()}
    if len(joints) != 1:  # rankings of different files: one pass each
        return {**out, **{name: dims.top(k) for name, (dims, k, _, _) in pending.items()}}
    (_, stream) = next(iter(joints.values()))
    parts = {name: dims.ranking.joint[0] for name, (dims, *_) in pending.items()}
    above: dict[str, list] = {name: [] for name in pending}
    edge: dict[str, list] = {name: [] for name in pending}
    for start, values in stream(sorted(set(parts.values()))):
        for name, (dims, _, b, _) in pending.items():
            v = values[parts[name]]
            bk = bucket_of(v)
            dt = np.int32 if dims.ranking.size < 2**31 else np.int64
            above[name].append((np.flatnonzero(bk > b) + start).astype(dt))
            hit = np.flatnonzero(bk == b)
            edge[name].append((hit + start, v[hit]))
    for name, (dims, k, b, r) in pending.items():
        idx = np.concatenate([e[0] for e in edge[name]]).astype(np.int64)
        vals = np.concatenate([e[1] for e in edge[name]]).astype(np.float32)
        cut_idx, _ = dims.ranking.bucket_sorted(b, (idx, vals))
        whole = np.concatenate(above[name]) if above[name] else np.empty(0, dtype=np.int64)
        res = _sorted_union(whole.astype(np.int64, copy=False), cut_idx[:r], dims.ranking.size)
        res.flags.writeable = False
        if res.nbytes <= LAST_ANSWER_BYTES:
            dims._last_top, dims._last_top_members = (k, res), None
            _kept_answers(dims)
        out[name] = res
    return out
