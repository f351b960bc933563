"""The pruning curve: how good the encoder stays when only the top-k dims of a part are kept.

For a part's importance ``v`` (float32, ``(input_dim,)``) and ``k`` kept dims, the kept set is the
selection rule's top-k (:func:`gradiend_core.selection.rule.select` with ``topk=k``: importance
descending, ties by the lower index, NaN last). Pruning keeps the encoder bias and the kept
encoder columns, so on a gradient ``g`` the pruned encoder's pre-activation is

    pre(k) = b + sum over the top-k ranked dims i of W_enc[:, i] * g[i]

(Drechsel et al. 2025, https://arxiv.org/abs/2502.01406: ``encoded = act(W_enc g + b_enc)``), and
the encoded value is ``act(pre(k))``. Every point of the curve is therefore a partial sum over the
ranked dims, which is computed here without sorting the input space:

1. :func:`bucket_counts` puts every dim into one of 65,536 value buckets, the top 16 bits of the
   order-preserving key of its float32 importance (``sort_keys(v) >> 16``; higher bucket = more
   important, equal values share a bucket, NaN is bucket 0). The ``k`` at bucket boundaries are
   the counts of dims in all buckets from the top down to a bucket.
2. :func:`plan_curve` turns the wanted ``k`` into cuts: a bucket and how many of its members are
   in (all of them at a boundary). A ``k`` inside a bucket is kept exactly when the bucket is small
   (or always, for the ``k`` asked for explicitly, e.g. the current selection); otherwise it moves
   to the nearer bucket boundary.
3. :class:`BucketSums` streams over the input space in chunks of dims (importance values, the
   ``W_enc`` columns and the gradient columns of ``m`` samples per chunk, in any order) and keeps
   only per-sample sums per bucket (``(65536, latent_dim, m)`` float64) plus, for the few buckets a
   cut falls inside, each member's contribution.
4. :meth:`BucketSums.finish` adds the bucket sums from the top down; a cut inside a bucket adds
   that bucket's members in their exact rank order (:func:`ranked_order`). Points at bucket
   boundaries and points inside recorded buckets are exact: the same kept set as ``select``; the
   sums differ from the pruned model's own ``F.linear`` only by floating-point rounding.

Measures at each point (:class:`Curve`), per latent unit:

* ``label_correlation`` - the reference's encoder evaluation measure: the Pearson correlation of
  the encoded values with the class labels, 0.0 when either is constant, when there are fewer
  than two examples or when it is NaN (``gradiend`` 0.2.3,
  ``gradiend.evaluator.encoder_metrics.get_correlation``, called by ``EncoderEvaluator`` on the
  rows of ``encode_dataset_to_rows``: each row encodes one example's *source* gradient with the
  GRADIEND's encoder, activation included; its label is +1 for the first class of the trained
  pair and -1 for the second, negated when the source is the alternative gradient). For
  latent_dim > 1 the reference's metrics code (``_compute_metrics_from_df``) means it per latent
  unit and reports unit 0 as ``correlation``, but cannot run on such models:
  ``encode(..., return_float=True)`` raises a TypeError for more than one unit, and its
  training-only correlation takes the std of the list-valued column. Here it is computed per unit
  with ``get_correlation``'s rules, and unit 0 is the headline.
* ``separation`` - Cohen's d of the pre-activations between the two label groups, as in
  :func:`gradiend_core.analysis.cut_cost.class_separation` (pre-activations, because a trained
  encoder's tanh saturates and its outputs then carry no distance).
* ``agreement`` - the Pearson correlation of the pruned encoder's encoded values with the
  unpruned encoder's (1 = the cut changes nothing but scale).

Memory: ``65536 * latent_dim * m`` float64 sums (32 MiB for m = 64), the members of the buckets a
cut falls inside, and one chunk of gradients at a time; never ``m x input_dim`` at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse
import torch

from ..errors import SelectionError
from ..ranking.keys import N_BUCKETS, bucket_of, ranked_order
from .measures import CHUNK, Activation, Curve, Encoder, check_inputs, encode, point_measures

__all__ = [
    "BucketSums",
    "CurvePlan",
    "DEFAULT_POINTS",
    "MEMBER_CAP",
    "bucket_counts",
    "log_grid",
    "plan_curve",
    "pruning_curves",
]


#: Points of the log grid by default (the exact selection points come on top).
DEFAULT_POINTS = 48
#: A ``k`` of the grid inside a bucket of at most this many dims is kept exactly; otherwise it
#: moves to the nearer bucket boundary (recording a bucket costs ``latent_dim * m`` floats a member).
MEMBER_CAP = 1 << 14
#: Threads for the per-bucket products of one chunk (dims below this many per thread stay on one).
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_MIN_DIMS_PER_THREAD = 1 << 16
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="gradiend-curve")
    return _POOL


def _split(c: int, workers: int) -> list[tuple[int, int]]:
    """``[start, stop)`` spans cutting ``c`` dims into at most ``workers`` pieces of at least
    :data:`_MIN_DIMS_PER_THREAD` dims (one piece for small chunks)."""
    k = max(1, min(workers, c // _MIN_DIMS_PER_THREAD))
    edges = np.linspace(0, c, k + 1).astype(np.int64)
    return [(int(a), int(e)) for a, e in zip(edges[:-1], edges[1:])]


def _bucket_product(
    vals: np.ndarray, rows: np.ndarray, x: np.ndarray, n_rows: int, span: tuple[int, int]
) -> np.ndarray:
    """Sums per bucket of the dims ``span`` = ``[a, e)``: ``(n_rows, m)``, row ``rows[i]`` adds
    ``vals[i] * x[i]`` (``vals``: one latent's W_enc entries, ``rows``: each dim's bucket row,
    ``x``: the gradients, one row per dim)."""
    a, e = span
    h = scipy.sparse.csc_matrix((vals[a:e], rows[a:e], np.arange(e - a + 1, dtype=np.int32)), shape=(n_rows, e - a))
    return h @ x[a:e]


def bucket_counts(importance: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """Dims per value bucket, int64 ``(65536,)``.

    Args:
        importance: float32 ``(input_dim,)``, or an iterable of its consecutive chunks (for an
            importance vector read from disk piece by piece).
    """
    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    chunks = (
        (importance[s : s + CHUNK] for s in range(0, importance.size, CHUNK))
        if isinstance(importance, np.ndarray)
        else importance
    )
    for chunk in chunks:
        counts += np.bincount(bucket_of(np.ravel(chunk)), minlength=N_BUCKETS)
    return counts


def log_grid(n: int, points: int = DEFAULT_POINTS) -> np.ndarray:
    """About ``points`` values of ``k`` from 1 to ``n``, evenly spaced on a log scale.

    Returns:
        Sorted unique int64 ``k``, 1 and ``n`` included.

    Raises:
        SelectionError: for ``n < 1`` or ``points < 2``.
    """
    if n < 1:
        raise SelectionError(f"a curve needs at least one dim; got input_dim {n}.")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise SelectionError(f"points must be an integer >= 2 (1 dim and all dims at least); got {points!r}.")
    ks = np.rint(np.geomspace(1, n, int(points))).astype(np.int64)
    return np.unique(np.concatenate([[1, n], ks]))


@dataclass(frozen=True)
class CurvePlan:
    """Where the points of a curve cut the ranking.

    Attributes:
        counts: int64 ``(65536,)`` dims per bucket.
        ks: int64 ``(P,)`` the points, ascending and unique.
        buckets: int64 ``(P,)`` the bucket the ``k``-th ranked dim lies in.
        taken: int64 ``(P,)`` how many members of that bucket the top ``k`` holds (all of them at a
            bucket boundary).
        requested: bool ``(P,)`` whether ``k`` is exactly a ``k`` asked for (False: moved to the
            nearer bucket boundary).
        recorded: sorted int64 buckets whose members :class:`BucketSums` must keep.
    """

    counts: np.ndarray
    ks: np.ndarray
    buckets: np.ndarray
    taken: np.ndarray
    requested: np.ndarray
    recorded: np.ndarray

    @property
    def input_dim(self) -> int:
        return int(self.counts.sum())


def _above(counts: np.ndarray) -> np.ndarray:
    """Dims in strictly higher buckets, per bucket (int64 ``(65536,)``)."""
    return np.cumsum(counts[::-1])[::-1] - counts


def _cut(counts: np.ndarray, above: np.ndarray, k: int) -> tuple[int, int]:
    """``(bucket, taken)`` of the top ``k``: the bucket of the ``k``-th ranked dim and how many of
    its members are in the top ``k``."""
    b = int(np.flatnonzero((above < k) & (above + counts >= k))[-1])
    return b, k - int(above[b])


def plan_curve(
    counts: np.ndarray,
    ks: Sequence[int],
    *,
    exact: Sequence[int] = (),
    member_cap: int = MEMBER_CAP,
) -> CurvePlan:
    """Plan the points of a curve from the bucket counts (no gradient needed yet).

    Args:
        counts: int64 ``(65536,)`` from :func:`bucket_counts`.
        ks: wanted ``k`` (e.g. :func:`log_grid`), each in ``[1, input_dim]``; a ``k`` inside a
            bucket of more than ``member_cap`` dims moves to the nearer bucket boundary.
        exact: ``k`` that are always computed exactly (e.g. the current selection), whatever the
            size of their bucket.
        member_cap: largest bucket recorded member by member for a grid point.

    Returns:
        A :class:`CurvePlan`; ``input_dim`` is always one of its points.

    Raises:
        SelectionError: for a ``k`` outside ``[1, input_dim]``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (N_BUCKETS,):
        raise SelectionError(f"counts must have shape ({N_BUCKETS},), got {counts.shape}.")
    n = int(counts.sum())
    above = _above(counts)
    wanted = [int(k) for k in ks] + [n]
    forced = [int(k) for k in exact]
    for k in wanted + forced:
        if not 1 <= k <= n:
            raise SelectionError(f"k must be in [1, {n}] (the input_dim); got {k}.")
    asked = set(wanted) | set(forced)
    points: dict[int, tuple[int, int]] = {}
    for k in wanted:
        b, r = _cut(counts, above, k)
        if r < counts[b] and counts[b] > member_cap:
            lo, hi = int(above[b]), int(above[b] + counts[b])
            k = hi if lo == 0 or hi - k <= k - lo else lo
            b, r = _cut(counts, above, k)
        points[k] = (b, r)
    for k in forced:
        points[k] = _cut(counts, above, k)
    ordered = sorted(points)
    buckets = np.array([points[k][0] for k in ordered], dtype=np.int64)
    taken = np.array([points[k][1] for k in ordered], dtype=np.int64)
    inside = taken < counts[buckets]
    return CurvePlan(
        counts=counts,
        ks=np.array(ordered, dtype=np.int64),
        buckets=buckets,
        taken=taken,
        requested=np.array([k in asked for k in ordered], dtype=bool),
        recorded=np.unique(buckets[inside]),
    )


# ------------------------------------------------------------------------------ accumulation
class BucketSums:
    """Per-sample sums of ``W_enc[:, i] * g[i]`` per importance bucket, streamed over the dims.

    Call :meth:`add` once for every chunk of dims (any order, no overlap, together covering
    ``[0, input_dim)``), then :meth:`finish`.

    Args:
        plan: from :func:`plan_curve` (its ``recorded`` buckets are kept member by member).
        n_samples: ``m``, rows of every gradient chunk.
        latent_dim: rows of every ``W_enc`` chunk.

    Attributes:
        sums: float64 ``(65536, latent_dim, m)``.
    """

    def __init__(self, plan: CurvePlan, n_samples: int, latent_dim: int) -> None:
        if n_samples < 1 or latent_dim < 1:
            raise SelectionError(f"n_samples and latent_dim must be >= 1, got {n_samples} and {latent_dim}.")
        self.plan = plan
        self.m = int(n_samples)
        self.latent_dim = int(latent_dim)
        self.sums = np.zeros((N_BUCKETS, self.latent_dim, self.m), dtype=np.float64)
        self._row = np.zeros(N_BUCKETS, dtype=np.int32)  # bucket -> row of the chunk's occupied buckets
        self._record = np.zeros(N_BUCKETS, dtype=bool)
        self._record[plan.recorded] = True
        self._members: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {int(b): [] for b in plan.recorded}
        self._spans: list[tuple[int, int]] = []

    def add(self, start: int, importance: np.ndarray, enc_w: torch.Tensor, gradients: torch.Tensor) -> None:
        """Add the dims ``[start, start + c)``.

        Args:
            start: local index of the chunk's first dim.
            importance: float32 ``(c,)``, the part's importance of these dims.
            enc_w: ``W_enc[:, start:start + c]``, ``(latent_dim, c)``.
            gradients: ``(m, c)``, the samples' gradient entries of these dims (float32 or
                float64; the products are summed in that dtype within the chunk, in float64 across
                chunks). A transposed view of a ``(c, m)`` array is used without a copy.

        Raises:
            SelectionError: for shapes that do not fit, or a chunk outside ``[0, input_dim)``.
        """
        imp = np.asarray(importance, dtype=np.float32).reshape(-1)
        c = imp.size
        n = self.plan.input_dim
        if not (0 <= start and start + c <= n):
            raise SelectionError(f"chunk [{start}, {start + c}) lies outside the input space [0, {n}).")
        g = torch.as_tensor(gradients)
        if not g.is_floating_point():
            raise SelectionError(f"gradients must be floating point, got {g.dtype}.")
        if tuple(g.shape) != (self.m, c) or tuple(enc_w.shape) != (self.latent_dim, c):
            raise SelectionError(
                f"chunk of {c} dims: gradients must be ({self.m}, {c}) and enc_w ({self.latent_dim}, {c}); "
                f"got {tuple(g.shape)} and {tuple(enc_w.shape)}."
            )
        if c == 0:
            return
        self._spans.append((int(start), int(start + c)))
        dtype = torch.float64 if g.dtype == torch.float64 else torch.float32
        gt = g.t().to(dtype).contiguous()  # (c, m), one row per dim; a transposed (c, m) buffer is not copied
        w = enc_w.detach().to(dtype)
        b = bucket_of(imp)
        occupied = np.flatnonzero(np.bincount(b, minlength=N_BUCKETS))
        row = self._row
        row[occupied] = np.arange(occupied.size, dtype=np.int32)
        rows = row[b]
        x = gt.numpy()
        # Sum per bucket as a sparse (buckets x dims) @ dense (dims x m) product whose CSC matrix holds
        # one W_enc entry per dim (column): scipy's kernel reads the gradient rows in order and adds
        # each into its bucket's row, which stays in cache. No sort is needed. A per-dim scatter-add
        # (bincount, index_add_) or a CSR product (random row reads) costs several times more.
        parts = _split(c, _WORKERS)
        for lat in range(self.latent_dim):
            product = partial(_bucket_product, w[lat].numpy(), rows, x, occupied.size)
            # scipy's sparse kernels release the GIL: the halves of a chunk run on two cores
            partials = list(_pool().map(product, parts)) if len(parts) > 1 else [product(parts[0])]
            self.sums[occupied, lat, :] += sum(p.astype(np.float64) for p in partials)
        rec = self._record[b]
        if rec.any():
            pos = np.flatnonzero(rec)
            t = torch.from_numpy(pos)
            contrib = (w[:, t].to(torch.float64).t()[:, :, None] * gt[t].to(torch.float64)[:, None, :]).numpy()
            for bucket in np.unique(b[pos]):
                sel = b[pos] == bucket
                self._members[int(bucket)].append((pos[sel] + start, imp[pos[sel]], contrib[sel]))

    def _check_covered(self) -> None:
        spans = sorted(self._spans)
        end = 0
        for s, e in spans:
            if s != end:
                what = "overlap" if s < end else "miss"
                raise SelectionError(f"the chunks added {what} dims around {min(s, end)}: add each dim exactly once.")
            end = e
        if end != self.plan.input_dim:
            raise SelectionError(
                f"the chunks added cover [0, {end}) of [0, {self.plan.input_dim}); add the rest first."
            )

    def member_sums(self, bucket: int) -> np.ndarray:
        """Cumulative contributions of a recorded bucket's members in rank order.

        Returns:
            float64 ``(count, latent_dim, m)``: row ``r`` is the sum over the bucket's ``r + 1``
            highest-ranked members.
        """
        parts = self._members[int(bucket)]
        idx = np.concatenate([p[0] for p in parts])
        vals = np.concatenate([p[1] for p in parts])
        contrib = np.concatenate([p[2] for p in parts])
        return np.cumsum(contrib[ranked_order(vals, idx)], axis=0)

    def pre_activations(self, bias: np.ndarray) -> np.ndarray:
        """Pre-activations at every point of the plan, float64 ``(P, latent_dim, m)``.

        Raises:
            SelectionError: when the chunks added do not cover the input space exactly once.
        """
        self._check_covered()
        plan = self.plan
        # from_top[b] = sum over all buckets >= b
        from_top = np.cumsum(self.sums[::-1], axis=0)[::-1]
        out = np.empty((plan.ks.size, self.latent_dim, self.m), dtype=np.float64)
        cache: dict[int, np.ndarray] = {}
        for p, (b, r) in enumerate(zip(plan.buckets, plan.taken)):
            b, r = int(b), int(r)
            if r == plan.counts[b]:
                total = from_top[b]
            else:
                if b not in cache:
                    cache[b] = self.member_sums(b)
                total = (from_top[b + 1] if b + 1 < N_BUCKETS else 0.0) + cache[b][r - 1]
            out[p] = total + np.asarray(bias, dtype=np.float64).reshape(-1, 1)
        return out

    def finish(self, encoder: Encoder, labels: np.ndarray, part: str, selection_k: int | None = None) -> Curve:
        """The :class:`Curve` of the accumulated sums.

        Args:
            encoder: bias and activation of the encoder (its weight was streamed via :meth:`add`).
            labels: float ``(m,)`` class labels of the samples (+1 / -1, the reference's labels).
            part: the importance's name, for the record.
            selection_k: the current selection's ``k`` (one of the plan's exact points), if any.
        """
        pre = self.pre_activations(encoder.bias)
        return _curve(pre, encoder.activation, np.asarray(labels, dtype=np.float64), self.plan, part, selection_k)


def _curve(
    pre: np.ndarray, activation: Activation, labels: np.ndarray, plan: CurvePlan, part: str, selection_k: int | None
) -> Curve:
    if labels.shape != (pre.shape[2],):
        raise SelectionError(f"labels must have shape ({pre.shape[2]},), got {labels.shape}.")
    full = encode(activation, pre[-1])
    rows = []
    for p in range(pre.shape[0]):
        rows.append(point_measures(pre[p], encode(activation, pre[p]), full, labels))
    return Curve(
        part=part,
        input_dim=plan.input_dim,
        n_samples=int(pre.shape[2]),
        ks=plan.ks.copy(),
        requested=plan.requested.copy(),
        label_correlation=np.stack([r["label_correlation"] for r in rows]),
        separation=np.stack([r["separation"] for r in rows]),
        agreement=np.stack([r["agreement"] for r in rows]),
        selection_k=selection_k if selection_k is not None and int(selection_k) in set(plan.ks.tolist()) else None,
    )


def pruning_curves(
    encoder: Encoder,
    gradients: torch.Tensor,
    labels: np.ndarray,
    importances: Mapping[str, np.ndarray],
    *,
    points: int = DEFAULT_POINTS,
    selection_k: int | None = None,
    chunk: int = CHUNK,
    member_cap: int = MEMBER_CAP,
) -> dict[str, Curve]:
    """Pruning curves of several parts on gradients held in memory (streamed in chunks of dims).

    Args:
        encoder: :meth:`Encoder.of` a checkpoint.
        gradients: ``(m, input_dim)`` float32 or float64, the samples' source gradients.
        labels: ``(m,)`` their labels (+1 / -1 as the reference labels them).
        importances: part name -> float32 importance ``(input_dim,)``.
        points: size of the log grid (:func:`log_grid`).
        selection_k: a ``k`` computed exactly on every curve (the current selection).
        chunk: dims per streamed chunk.
        member_cap: see :func:`plan_curve`.

    Returns:
        Part name -> :class:`Curve`, in the order of ``importances``.

    Raises:
        SelectionError: for shapes that do not fit or ``k`` out of range.
    """
    g, lab = check_inputs(encoder, gradients, labels)
    n = encoder.input_dim
    grid = log_grid(n, points)
    out: dict[str, Curve] = {}
    for part, imp in importances.items():
        imp = np.asarray(imp, dtype=np.float32)
        if imp.shape != (n,):
            raise SelectionError(f"{part} importance must have shape ({n},), got {imp.shape}.")
        plan = plan_curve(
            bucket_counts(imp), grid, exact=() if selection_k is None else [selection_k], member_cap=member_cap
        )
        acc = BucketSums(plan, g.shape[0], encoder.latent_dim)
        for s in range(0, n, chunk):
            acc.add(s, imp[s : s + chunk], encoder.weight[:, s : s + chunk], g[:, s : s + chunk])
        out[part] = acc.finish(encoder, lab, part, selection_k)
    return out
