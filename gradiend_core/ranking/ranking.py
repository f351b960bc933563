"""Importance in the selection rule's order, summarised per value bucket: the data model of selection.

The rule orders dims by importance descending, ties by lower local index, NaN after every number
(see :mod:`gradiend_core.selection.rule`). Sorting all ``n`` values for every question does not scale
(a stable sort of 10^8 float32 takes tens of seconds on two cores), and a GRADIEND over a 1B model
has more dims than fit in memory twice. So a :class:`Ranking` keeps:

* **buckets** - each float32 value has an order-preserving uint32 key (:func:`sort_keys`); its top
  16 bits are its bucket (65,536 buckets, each 1/128 of an octave wide; a higher bucket holds
  larger values). Per bucket: the number of dims (``counts``) and their finite importance
  (``mass``, float64); per (parameter, occupied bucket) the same two numbers when the ranking
  knows the param_map's offsets.
* **layout** - ``order``: every local index, grouped by bucket (most important bucket first) and
  ascending within a bucket; ``values``: the importance in the same layout. Both may be arrays in
  memory or memory-mapped files (see :mod:`gradiend_core.ranking.store`). A layout may be a prefix:
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
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import SelectionError
from .keys import INF_BUCKET, NAN_BUCKET, NEG_INF_BUCKET, ZERO_BUCKET, bucket_bounds, bucket_of, rank_within, sort_keys
from .ranked_dims import RankedDims
from .tables import BucketSummary, ParamTables, summarise

__all__ = [
    "Ranking",
]


#: Dims processed per block when building a ranking from a vector (bounds temporaries).
BLOCK = 1 << 22
#: Dims of exactly sorted buckets kept per ranking (about 200 MB); a larger bucket is re-sorted on use.
SORTED_CACHE_DIMS = 1 << 24


def _as_importance(importance: np.ndarray | torch.Tensor) -> np.ndarray:
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


#: ``values_at(local indices) -> float32 importance`` of arbitrary dims.
ValuesAt = Callable[[np.ndarray], np.ndarray]
#: ``stream()`` -> ``(start, float32 importance of dims start..)`` blocks over the input space, in order.
Stream = Callable[[], Iterable[tuple[int, np.ndarray]]]


class Ranking:
    """One importance source ranked by the selection rule (see the module docstring).

    ``Ranking(importance)`` ranks a vector held in memory; the rank store
    (:mod:`gradiend_core.ranking.store`) builds one from a checkpoint's weights by streaming
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

    def __init__(self, importance: np.ndarray | torch.Tensor, param_offsets: np.ndarray | None = None):
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
        params: ParamTables | None = None,
        values_at: ValuesAt | None = None,
        param_offsets: np.ndarray | None = None,
    ) -> Ranking:
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
        self.order: np.ndarray | None = None
        self.values: np.ndarray | None = None
        self.layout_dims = 0  # dims in the layout: size, or those of the highest buckets
        self.params = params
        #: start of each parameter in the input space (``P + 1``), when known
        self.param_offsets = params.offsets if params is not None else param_offsets
        self._values_at = values_at
        self._stream = stream
        #: ``(part, joint stream)`` when several rankings share one read of the weights (see
        #: :func:`~gradiend_core.ranking.ranked_dims.top_many`), else ``None``
        self.joint = None
        desc = np.concatenate([[0], np.cumsum(self.counts[::-1])])
        self._seg_start = desc[::-1][1:].copy()  # start of bucket b's segment = dims in buckets above b
        self._lock = threading.Lock()  # sessions of one server share rankings
        self._sorted: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._sorted_dims = 0
        self._views: OrderedDict[bytes, RankedDims] = OrderedDict()
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

    def detach_layout(self) -> None:
        """Stop reading the layout (a damaged file): answers stream the importance again."""
        self.order = None
        self.values = None
        self.layout_dims = 0

    def _read_layout(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(order, values)`` of layout positions ``start .. stop``, or ``None`` (and the layout
        detached) when a layout file turns out damaged; the caller then streams."""
        order, values = self.order, self.values
        if order is None or values is None:
            return None
        try:
            return np.asarray(order[start:stop], dtype=np.int64), np.asarray(values[start:stop], dtype=np.float32)
        except OSError:  # LayoutDamaged, or a file removed under us
            if self._stream is None:
                raise
            self.detach_layout()
            return None

    @classmethod
    def coerce(cls, importance: Ranking | np.ndarray | torch.Tensor) -> Ranking:
        """``importance`` itself if it is a :class:`Ranking`, else a ranking of the vector."""
        return importance if isinstance(importance, Ranking) else cls(importance)

    # ------------------------------------------------------------------------------ layout
    def segment(self, bucket: int) -> tuple[int, int]:
        """``(start, stop)`` of ``bucket``'s dims in :attr:`order` / :attr:`values`."""
        s = int(self._seg_start[bucket])
        return s, s + int(self.counts[bucket])

    def scan(self) -> Iterator[tuple[int, np.ndarray]]:
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
        self, bucket: int, above: bool = True, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(dims in buckets above bucket (any order), their values, members of bucket
        (ascending), their values)``.

        From the layout when there is one, else with one streaming pass (``above=False`` skips
        the dims above, which can be many). With ``mask`` (bool ``(size,)``) the dims above are
        only those it keeps (the bucket's members are all returned).
        """
        if self.layout_covers(bucket):
            s, e = self.segment(bucket)
            read = self._read_layout(0 if above else s, e)
            if read is not None:
                order, values = read
                cut = s if above else 0
                dims_above, vals_above = order[:cut], values[:cut]
                if mask is not None:
                    inside = np.asarray(mask)[dims_above]
                    dims_above, vals_above = dims_above[inside], vals_above[inside]
                return dims_above, vals_above, order[cut:], values[cut:]
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

    def collect_from(self, lowest: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)`` of every dim in buckets ``>= lowest``, in exact rank order: the top
        of the ranking in one read of the layout, or one streaming pass without one."""
        read = None
        if self.layout_covers(lowest):
            read = self._read_layout(0, int(self._seg_start[lowest]) + int(self.counts[lowest]))
        if read is not None:
            idx, vals = read
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
        self, bucket: int, members: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
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
        perm = rank_within(vals)
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

    def largest_finite_decade(self) -> int | None:
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
    def dims(self, mask: np.ndarray | None = None) -> RankedDims:
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
