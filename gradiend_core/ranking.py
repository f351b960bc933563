"""Importance in the selection rule's order, summarised per value bucket: the data model of selection.

The rule orders dims by importance descending, ties by lower local index, NaN after every number
(see :mod:`gradiend_core.selection`). Sorting all ``n`` values for every question does not scale
(a stable sort of 10^8 float32 takes tens of seconds on two cores), and a GRADIEND over a 1B model
has more dims than fit in memory twice. So a :class:`Ranking` keeps:

* **buckets** - each float32 value has an order-preserving uint32 key (:func:`sort_keys`); its top
  16 bits are its bucket (65,536 buckets, each 1/128 of an octave wide; a higher bucket holds
  larger values). Per bucket: the number of dims (``counts``) and their finite importance
  (``mass``, float64); per (parameter, occupied bucket) the same two numbers when the ranking
  knows the param_map's offsets.
* **layout** - ``order``: every local index, grouped by bucket (most important bucket first) and
  ascending within a bucket; ``values``: the importance in the same layout. Both may be arrays in
  memory or memory-mapped files (see :mod:`gradiend_core.rank_store`). A layout may be a prefix:
  the most important buckets only (a GRADIEND too large for a whole layout on disk); cuts inside
  it cost one bucket, cuts below it a streaming pass.

The exact rank order inside one bucket is needed only where a cut falls (the "boundary" bucket)
or where ranks are listed; that one bucket is sorted on demand. Counts, kept importance, kept dims
per parameter and histogram shares of any topk or threshold then cost O(buckets + one bucket), not
O(n); index sets cost O(k) and are built only by the callers that need them (an export, views that
list dims).

A :class:`RankedDims` is the set of dims a selection ranks among: all of them
(:meth:`Ranking.dims`) or those a mask keeps (built once per mask with one O(n) pass, then cached).
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from .errors import SelectionError

__all__ = [
    "BucketSummary",
    "INF_BUCKET",
    "NEG_INF_BUCKET",
    "NAN_BUCKET",
    "N_BUCKETS",
    "ZERO_BUCKET",
    "ParamTables",
    "RankedDims",
    "Ranking",
    "bucket_bounds",
    "bucket_of",
    "finite_or_zero",
    "mass_weights",
    "sort_keys",
    "summarise",
]

N_BUCKETS = 1 << 16
#: Bucket of every NaN (key 0): ranked after every number.
NAN_BUCKET = 0
#: Bucket of +0.0 and -0.0 (key 0x80000000); it also holds positive subnormals below 9.2e-41.
ZERO_BUCKET = 0x8000
#: Bucket of +inf (key 0xFF800000); it holds nothing else (NaN payloads above it get key 0).
INF_BUCKET = 0xFF80
#: Bucket of -inf (key 0x007FFFFF); it holds nothing else.
NEG_INF_BUCKET = 0x007F
#: Dims processed per block when building a ranking from a vector (bounds temporaries).
BLOCK = 1 << 22
#: Dims of exactly sorted buckets kept per ranking (about 200 MB); a larger bucket is re-sorted on use.
SORTED_CACHE_DIMS = 1 << 24
#: Bytes of last answers (see :class:`RankedDims`) kept in all, least recently kept dropped first.
LAST_ANSWER_BYTES = 192 << 20


def sort_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values: ``a > b`` iff ``key(a) > key(b)``.

    The IEEE-754 bit pattern of a non-negative float grows with its value; negative floats are
    bit-inverted so they sort below. NaN gets key 0, below every number (``-inf`` included).
    Equal floats get equal keys, ``-0.0`` and ``+0.0`` included.
    """
    # Adding +0.0 turns -0.0 into +0.0 (IEEE 754), so the two zeros tie as they compare equal.
    with np.errstate(invalid="ignore"):
        v = np.ascontiguousarray(values, dtype=np.float32) + np.float32(0.0)
    bits = v.view(np.uint32)
    keys = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32, copy=False)
    nan = np.isnan(v)
    if nan.any():
        keys[nan] = 0
    return keys


def bucket_of(values: np.ndarray) -> np.ndarray:
    """The bucket (uint16) of each float32 value: the top 16 bits of its :func:`sort_keys` key.

    Importance is an absolute value, so the usual input has no sign bit set; then the bucket is
    ``(bits >> 16) | 0x8000`` and only NaN (whose bits sort above +inf) needs fixing, which
    avoids building the full keys (several passes over the block).
    """
    v = np.ascontiguousarray(values, dtype=np.float32)
    if np.signbit(v).any():
        return (sort_keys(v) >> np.uint32(16)).astype(np.uint16)
    b = (v.view(np.uint32) >> np.uint32(16)).astype(np.uint16) | np.uint16(ZERO_BUCKET)
    high = np.flatnonzero(b > np.uint16(INF_BUCKET))  # NaN bit patterns; +inf itself is INF_BUCKET
    if high.size:
        b[high] = NAN_BUCKET
    nan_at_inf = np.flatnonzero(b == np.uint16(INF_BUCKET))
    if nan_at_inf.size:  # NaN payloads that share +inf's top 16 bits
        hit = nan_at_inf[np.isnan(v[nan_at_inf])]
        b[hit] = NAN_BUCKET
    return b


def bucket_bounds(buckets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Smallest and largest float32 value (as float64) of each bucket of non-negative values.

    Args:
        buckets: int array of buckets in ``[ZERO_BUCKET, INF_BUCKET)``.

    Returns:
        ``(low, high)``, float64 arrays of the buckets' shape.
    """
    b = np.asarray(buckets, dtype=np.uint32) - np.uint32(ZERO_BUCKET)
    low = (b << np.uint32(16)).view(np.float32).astype(np.float64)
    high = ((b << np.uint32(16)) | np.uint32(0xFFFF)).view(np.float32).astype(np.float64)
    return low, high


def _rank_within(values: np.ndarray) -> np.ndarray:
    """Stable permutation that orders one bucket's values by the rule (value desc; the members are
    ascending by index already, so stability breaks ties by lower index)."""
    low = (sort_keys(values) & np.uint32(0xFFFF)).astype(np.uint16)
    return np.argsort(~low, kind="stable")  # numpy sorts 16-bit keys stably by radix: O(m)


def finite_or_zero(v: np.ndarray) -> np.ndarray:
    """float64 copy of ``v`` with NaN and infinities as 0 (only finite importance counts as mass)."""
    with np.errstate(invalid="ignore"):
        w = np.asarray(v).astype(np.float64)
    w[~np.isfinite(w)] = 0.0
    return w


def mass_weights(v: np.ndarray) -> np.ndarray:
    """Weights for a per-bucket mass ``bincount``: ``v`` itself when it is all finite (bincount
    widens its weights to float64 anyway), else :func:`finite_or_zero` of it."""
    v = np.asarray(v)
    return v if np.isfinite(v).all() else finite_or_zero(v)


def _as_importance(importance: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    if torch.is_tensor(importance):
        importance = importance.detach().cpu().to(torch.float32).numpy()
    try:
        imp = np.asarray(importance, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise SelectionError(
            f"importance must be a 1-D vector of numbers, got {type(importance).__name__} ({e})."
        ) from e
    if imp.ndim != 1 or imp.size == 0:
        raise SelectionError(f"importance must be a non-empty 1-D vector, got shape {imp.shape}.")
    return np.ascontiguousarray(imp)


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

    def __init__(self, offsets: np.ndarray, occupied: np.ndarray, counts: np.ndarray, mass: Optional[np.ndarray]):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.occupied = np.asarray(occupied, dtype=np.int64)
        self.counts = counts
        self.mass = mass
        self._column = np.full(N_BUCKETS, -1, dtype=np.int64)
        self._column[self.occupied] = np.arange(self.occupied.size)

    @classmethod
    def accumulator(cls, offsets: np.ndarray, occupied: np.ndarray) -> "ParamTables":
        p, b = len(offsets) - 1, len(occupied)
        return cls(offsets, occupied, np.zeros((p, b), dtype=np.int64), np.zeros((p, b), dtype=np.float64))

    def add(self, start: int, values: np.ndarray, buckets: np.ndarray, keep: Optional[np.ndarray] = None) -> None:
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

    def above(self, bucket: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Per-parameter dims and mass (``None`` without a mass table) in the buckets above
        ``bucket`` (int64 ``(P,)``, float64 ``(P,)``)."""
        j = int(np.searchsorted(-self.occupied, -bucket, side="left"))  # columns of buckets > bucket
        return self.counts[:, :j].sum(axis=1), None if self.mass is None else self.mass[:, :j].sum(axis=1)

    def param_of(self, local: np.ndarray) -> np.ndarray:
        """The parameter (row) of each local index."""
        return np.searchsorted(self.offsets, local, side="right") - 1


#: ``values_at(local indices) -> float32 importance`` of arbitrary dims.
ValuesAt = Callable[[np.ndarray], np.ndarray]
#: ``stream()`` -> ``(start, float32 importance of dims start..)`` blocks over the input space, in order.
Stream = Callable[[], Iterable[Tuple[int, np.ndarray]]]


class Ranking:
    """One importance source ranked by the selection rule (see the module docstring).

    ``Ranking(importance)`` ranks a vector held in memory; the rank store
    (:mod:`gradiend_core.rank_store`) builds one from a checkpoint's weights by streaming
    (:meth:`from_stream`, then :meth:`attach_layout`).

    Attributes:
        size: dims ranked (``input_dim``).
        counts: int64 ``(N_BUCKETS,)``, dims per bucket.
        mass: float64 ``(N_BUCKETS,)``, finite importance per bucket.
        n_nan, n_inf, n_zero, n_nonfinite: dims with NaN, +-inf, exactly 0, NaN or +-inf.
        total: float64 sum of the finite importance (the denominator of kept shares).
        order: int ``(size,)``, local indices in the bucket layout (see the module docstring).
        values: float32 ``(size,)``, importance in the same layout.
        params: :class:`ParamTables` or ``None`` (per-parameter answers then come from index sets).
    """

    def __init__(self, importance: Union[np.ndarray, torch.Tensor], param_offsets: Optional[np.ndarray] = None):
        """Rank an importance vector held in memory.

        Args:
            importance: float ``(input_dim,)`` (converted to float32), NaN and infinities allowed.
            param_offsets: optional int ``(P + 1,)`` start of each parameter in the input space
                (``ParamMap.local_offsets``), for per-parameter answers without index sets.

        Raises:
            SelectionError: for an empty or non-1-D importance.
        """
        imp = _as_importance(importance)
        blocks = [imp[s : s + BLOCK] for s in range(0, imp.size, BLOCK)]
        summary = summarise(blocks)
        buckets = bucket_of(imp)
        order = np.argsort(~buckets, kind="stable")  # bucket descending, index ascending: radix, O(n)
        order = order.astype(np.int32 if imp.size < 2**31 else np.int64)
        params = None
        if param_offsets is not None:
            params = ParamTables.accumulator(param_offsets, np.flatnonzero(summary.counts)[::-1])
            for s, v in zip(range(0, imp.size, BLOCK), blocks):
                params.add(s, v, buckets[s : s + v.size])
        self._setup(
            summary, params, lambda idx: imp[idx], lambda: ((s, imp[s : s + BLOCK]) for s in range(0, imp.size, BLOCK))
        )
        self.attach_layout(order, imp[order])

    @classmethod
    def from_stream(
        cls,
        summary: BucketSummary,
        stream: Stream,
        params: Optional[ParamTables] = None,
        values_at: Optional[ValuesAt] = None,
        param_offsets: Optional[np.ndarray] = None,
    ) -> "Ranking":
        """A ranking known by its summary alone; dims are found by streaming the importance again.

        Until a layout is attached (:meth:`attach_layout`), every question that needs particular
        dims (the members of the bucket a cut falls in, a kept index set) costs one pass over
        ``stream``; counts, shares and histograms still come from the summary at once.

        Args:
            summary: the per-bucket counts and mass.
            stream: ``stream()`` yields ``(start, float32 importance of dims start..)`` over the
                whole input space, in order (e.g. computed block by block from the weight file).
            params: per-parameter tables, if built.
            values_at: importance lookup of arbitrary local indices.
            param_offsets: start of each parameter in the input space (``P + 1``), for
                per-parameter counts from index sets before the tables exist.
        """
        self = cls.__new__(cls)
        self._setup(summary, params, values_at, stream, param_offsets)
        return self

    def _setup(self, summary, params, values_at, stream, param_offsets=None) -> None:
        self.size = int(summary.n)
        self.summary = summary
        self.counts = summary.counts
        self.mass = summary.mass
        self.n_zero = int(summary.n_zero)
        self.n_nan = int(summary.counts[NAN_BUCKET])
        self.n_inf = int(summary.counts[INF_BUCKET] + summary.counts[NEG_INF_BUCKET])
        self.n_nonfinite = self.n_nan + self.n_inf
        self.total = float(summary.mass.sum())
        self.order: Optional[np.ndarray] = None
        self.values: Optional[np.ndarray] = None
        self.layout_dims = 0  # dims in the layout: size, or those of the highest buckets
        self.params = params
        #: start of each parameter in the input space (``P + 1``), when known
        self.param_offsets = params.offsets if params is not None else param_offsets
        self._values_at = values_at
        self._stream = stream
        desc = np.concatenate([[0], np.cumsum(self.counts[::-1])])
        self._seg_start = desc[::-1][1:].copy()  # start of bucket b's segment = dims in buckets above b
        self._lock = threading.Lock()  # sessions of one server share rankings
        self._sorted: "OrderedDict[int, Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._sorted_dims = 0
        self._views: "OrderedDict[bytes, RankedDims]" = OrderedDict()
        self._all = RankedDims(self, None)

    def attach_layout(self, order: np.ndarray, values: np.ndarray) -> None:
        """Give a summary-only ranking its layout (built in the background, say): from now on
        dims are read from it instead of streamed. The answers do not change, only their cost.

        ``order`` and ``values`` hold all ``size`` dims, or a prefix: the dims of the highest
        buckets down to a bucket boundary (:meth:`layout_covers` tells which buckets it holds).

        Raises:
            ValueError: when the lengths differ or do not end at a bucket boundary.
        """
        n = len(order)
        boundaries = self._seg_start[self.counts > 0]
        if len(values) != n or not (n == self.size or n in set(boundaries.tolist())):
            raise ValueError(
                f"a layout of {self.size} dims or of the dims of the highest buckets is needed, got "
                f"{len(order)} and {len(values)}."
            )
        self.values = values
        self.layout_dims = n
        self.order = order  # set last: has_layout flips only once both are in place

    def resident_bytes(self) -> int:
        """Bytes this ranking holds in memory: summaries, per-parameter tables, an in-memory layout
        (a memory-mapped one lives in the page cache and is not counted) and cached sorted buckets."""
        total = self.counts.nbytes + self.mass.nbytes
        if self.params is not None:
            total += self.params.nbytes
        for arr in (self.order, self.values):
            if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
                total += arr.nbytes
        with self._lock:
            views = [self._all, *self._views.values()]
            total += self._sorted_dims * 12 + sum(view.resident_bytes() for view in views)
        return int(total)

    @property
    def has_layout(self) -> bool:
        """Whether dims are read from a layout, a whole one or a prefix (else found by streaming passes)."""
        return self.order is not None

    def layout_covers(self, bucket: int) -> bool:
        """Whether ``bucket``'s dims (and those of every bucket above it) are in the layout."""
        return self.order is not None and int(self._seg_start[bucket]) + int(self.counts[bucket]) <= self.layout_dims

    @classmethod
    def coerce(cls, importance: Union["Ranking", np.ndarray, torch.Tensor]) -> "Ranking":
        """``importance`` itself if it is a :class:`Ranking`, else a ranking of the vector."""
        return importance if isinstance(importance, Ranking) else cls(importance)

    # ------------------------------------------------------------------------------ layout
    def segment(self, bucket: int) -> Tuple[int, int]:
        """``(start, stop)`` of ``bucket``'s dims in :attr:`order` / :attr:`values`."""
        s = int(self._seg_start[bucket])
        return s, s + int(self.counts[bucket])

    def scan(self) -> Iterator[Tuple[int, np.ndarray]]:
        """``(start, float32 importance)`` blocks over the whole input space, in local order."""
        if self._stream is not None:
            yield from self._stream()
            return
        if self.layout_dims != self.size:
            raise SelectionError("a ranking with a partial layout needs a stream of its importance.")
        order, values = np.asarray(self.order), np.asarray(self.values)  # a layout without a stream
        imp = np.empty(self.size, dtype=np.float32)
        imp[order] = values
        for s in range(0, self.size, BLOCK):
            yield s, imp[s : s + BLOCK]

    def collect(
        self, bucket: int, above: bool = True, mask: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(dims in buckets above bucket (any order), their values, members of bucket
        (ascending), their values)``.

        From the layout when there is one, else with one streaming pass (``above=False`` skips
        the dims above, which can be many). With ``mask`` (bool ``(size,)``) the dims above are
        only those it keeps (the bucket's members are all returned).
        """
        if self.layout_covers(bucket):
            s, e = self.segment(bucket)
            dims_above = np.asarray(self.order[:s] if above else self.order[:0], dtype=np.int64)
            vals_above = np.asarray(self.values[:s] if above else self.values[:0], dtype=np.float32)
            if mask is not None:
                inside = np.asarray(mask)[dims_above]
                dims_above, vals_above = dims_above[inside], vals_above[inside]
            return (
                dims_above,
                vals_above,
                np.asarray(self.order[s:e], dtype=np.int64),
                np.asarray(self.values[s:e], dtype=np.float32),
            )
        hi, hi_vals, idx, vals = [], [], [], []
        for start, v in self.scan():
            b = bucket_of(v)
            if above:
                is_above = b > bucket
                if mask is not None:
                    is_above &= np.asarray(mask[start : start + v.size])
                up = np.flatnonzero(is_above)
                hi.append(up + start)
                hi_vals.append(v[up])
            hit = np.flatnonzero(b == bucket)
            idx.append(hit + start)
            vals.append(v[hit])
        cat = lambda parts, dt: np.concatenate(parts).astype(dt, copy=False) if parts else np.empty(0, dtype=dt)  # noqa: E731
        return cat(hi, np.int64), cat(hi_vals, np.float32), cat(idx, np.int64), cat(vals, np.float32)

    def collect_from(self, lowest: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(indices, values)`` of every dim in buckets ``>= lowest``, in exact rank order: the top
        of the ranking in one read of the layout, or one streaming pass without one."""
        if self.layout_covers(lowest):
            stop = int(self._seg_start[lowest]) + int(self.counts[lowest])
            idx = np.asarray(self.order[:stop], dtype=np.int64)
            vals = np.asarray(self.values[:stop], dtype=np.float32)
        else:
            parts_i, parts_v = [], []
            for start, v in self.scan():
                hit = np.flatnonzero(bucket_of(v) >= lowest)
                parts_i.append(hit + start)
                parts_v.append(v[hit])
            idx = np.concatenate(parts_i).astype(np.int64) if parts_i else np.empty(0, dtype=np.int64)
            vals = np.concatenate(parts_v).astype(np.float32) if parts_v else np.empty(0, dtype=np.float32)
        keys = sort_keys(vals)
        perm = np.lexsort((idx, ~keys))
        return idx[perm], vals[perm]

    def bucket_sorted(
        self, bucket: int, members: Optional[Tuple[np.ndarray, np.ndarray]] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """``(local indices, values)`` of ``bucket``'s dims in exact rank order.

        Recently used buckets are kept, up to :data:`SORTED_CACHE_DIMS` dims in all.

        Args:
            bucket: the bucket.
            members: its ``(ascending indices, values)`` if already collected (saves a pass).
        """
        with self._lock:
            hit = self._sorted.get(bucket)
            if hit is not None:
                self._sorted.move_to_end(bucket)
                return hit
        idx, vals = members if members is not None else self.collect(bucket, above=False)[2:]
        perm = _rank_within(vals)
        hit = (idx[perm], vals[perm])
        if idx.size <= SORTED_CACHE_DIMS:
            with self._lock:
                if bucket not in self._sorted:
                    self._sorted[bucket] = hit
                    self._sorted_dims += idx.size
                while self._sorted_dims > SORTED_CACHE_DIMS:
                    _, (old, _) = self._sorted.popitem(last=False)
                    self._sorted_dims -= old.size
        return hit

    def values_at(self, local: np.ndarray) -> np.ndarray:
        """float32 importance of the given local indices (any order)."""
        local = np.asarray(local, dtype=np.int64)
        if self._values_at is not None:
            return np.asarray(self._values_at(local), dtype=np.float32)
        raise SelectionError("this ranking cannot look up single dims; rebuild it with values_at.")

    def importance_vector(self) -> np.ndarray:
        """float32 ``(size,)`` importance in local order (O(n) memory: for small inputs and tests)."""
        out = np.empty(self.size, dtype=np.float32)
        for start, v in self.scan():
            out[start : start + v.size] = v
        return out

    def largest_finite_decade(self) -> Optional[int]:
        """``floor(log10(v))`` of the largest positive finite importance ``v``, ``None`` without one.
        From the bucket counts when that bucket lies within one decade (almost always), else from
        the bucket's members."""
        finite = np.flatnonzero(self.counts[ZERO_BUCKET + 1 : INF_BUCKET])
        if finite.size == 0:
            return None
        top = ZERO_BUCKET + 1 + int(finite[-1])
        low, high = (float(x[0]) for x in bucket_bounds(np.array([top])))
        if math.floor(math.log10(low)) == math.floor(math.log10(high)):
            return math.floor(math.log10(low))
        return math.floor(math.log10(float(self.dims().members(top)[1][0])))

    # ------------------------------------------------------------------------------- views
    def dims(self, mask: Optional[np.ndarray] = None) -> "RankedDims":
        """The dims a selection ranks among: all (``mask=None``) or those ``mask`` keeps.

        Args:
            mask: optional numpy bool ``(size,)``. A view per mask is built with one O(n) pass
                and cached (a few of them), keyed by the mask's digest.
        """
        if mask is None:
            return self._all
        digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
        with self._lock:
            view = self._views.get(digest)
        if view is None or (view.params is None and self.params is not None):  # tables arrived since
            view = RankedDims(self, mask)
            with self._lock:
                self._views[digest] = view
                while len(self._views) > 4:
                    self._views.popitem(last=False)
        return view


_answers_lock = threading.Lock()
_answers: "OrderedDict[int, Tuple[weakref.ref, int]]" = OrderedDict()  # id(view) -> (view, bytes kept)


def _kept_answers(view: "RankedDims") -> None:
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

    def __init__(self, ranking: Ranking, mask: Optional[np.ndarray]):
        self.ranking = ranking
        self.mask = mask
        #: int64 ``(P,)`` members per parameter (``None`` when the ranking knows no parameters)
        self.param_members: Optional[np.ndarray] = None
        self._params: Optional[ParamTables] = None  # a mask's own tables (without one: the ranking's)
        if mask is None:
            self.counts, self.mass = ranking.counts, ranking.mass
            if ranking.param_offsets is not None:
                self.param_members = np.diff(np.asarray(ranking.param_offsets, dtype=np.int64))
        else:
            self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
            self.mass = np.zeros(N_BUCKETS, dtype=np.float64)
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
        self._last_top: Optional[Tuple[int, np.ndarray]] = None
        self._last_ranked: Optional[Tuple[int, np.ndarray, np.ndarray]] = None
        self._last_top_members: Optional[Tuple[int, np.ndarray, np.ndarray]] = None  # (k, dims, values)

    @property
    def params(self) -> Optional[ParamTables]:
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
    def members(self, bucket: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(local indices, values)`` of the members in ``bucket``, in exact rank order."""
        idx, vals = self.ranking.bucket_sorted(bucket)
        if self.mask is None:
            return idx, vals
        keep = np.asarray(self.mask)[idx]
        return idx[keep], vals[keep]

    def boundary(self, k: int) -> Tuple[int, int]:
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

    def ranked_with_values(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
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

    def param_counts_top(self, k: int, with_mass: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
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
