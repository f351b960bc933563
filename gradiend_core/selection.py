"""The one selection rule: mask -> threshold -> topk.

Every caller (model ``prune``, ``get_enhancer_mask``, ``get_topk_weights``, the reduction
preview, the CLI, the dashboard, pre- and post-pruning) goes through :func:`select`, so a preview
can never disagree with an export.

Rule (the pruning guide's order, the reference's ``ParamMappedGradiendModel.prune`` semantics):

1. ``mask`` - bool, shape ``(input_dim,)``: keep only dimensions where it is True.
2. ``threshold`` - float >= 0: of those, keep dimensions with ``importance >= threshold``.
3. ``topk`` - of those ``n`` left, keep the ``k`` most important, where ``k = min(topk, n)`` for
   an int ``topk >= 1`` and ``k = ceil(topk * n)`` for a float in ``(0, 1]`` (so ``1.0`` keeps
   all). The float product is taken as the reference takes it, ``math.ceil(topk * n)``, so counts
   match its exports exactly, floating-point rounding included.

Ranking is total and deterministic: higher importance first; equal importance -> lower local
index first; NaN ranks below every number (it is never silently "most important") and never
passes a threshold; ``+inf`` ranks first. The reference breaks ties arbitrarily (``torch.topk``
with ``sorted=False``), so on exact ties the two may keep different but equally important dims.

Implementation: a :class:`Ranking` buckets importance once in linear time; a threshold or a topk
then reads bucket counts and sorts only the one bucket that straddles the cut, which keeps
interactive re-selection cheap for models with hundreds of millions of input dimensions.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from .errors import SelectionError

TopK = Union[int, float]


def validate_topk(topk: object) -> Optional[TopK]:
    """Check ``topk``: ``None``, an int >= 1 (a count) or a float in (0, 1] (a fraction).

    Returns:
        ``topk`` as a Python ``int`` or ``float`` (numpy scalars are converted).

    Raises:
        SelectionError: for a bool, a non-number, an int < 1 or a float outside (0, 1].
    """
    if topk is None:
        return None
    if isinstance(topk, (bool, np.bool_)):
        raise SelectionError(f"topk must be an int (a count) or a float in (0, 1] (a fraction), not a bool ({topk!r}).")
    if isinstance(topk, numbers.Integral):
        if topk < 1:
            raise SelectionError(f"topk as a count must be >= 1; got {int(topk)}. To keep a fraction, pass a float in (0, 1].")
        return int(topk)
    if isinstance(topk, numbers.Real):
        t = float(topk)
        if not (0.0 < t <= 1.0) or math.isnan(t):
            raise SelectionError(
                f"topk as a float is a fraction and must be in (0, 1]; got {t!r}. For a count, pass an int."
            )
        return t
    raise SelectionError(f"topk must be an int or a float, got {type(topk).__name__} ({topk!r}).")


def validate_threshold(threshold: object) -> Optional[float]:
    """Check ``threshold``: ``None`` or a finite-or-infinite number >= 0.

    Raises:
        SelectionError: for a bool, a non-number, NaN or a negative value.
    """
    if threshold is None:
        return None
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise SelectionError(f"threshold must be a number >= 0, got {type(threshold).__name__} ({threshold!r}).")
    t = float(threshold)
    if math.isnan(t) or t < 0:
        raise SelectionError(f"threshold must be >= 0 (importance is an absolute value); got {t!r}.")
    return t


def validate_mask(mask: object, input_dim: int) -> Optional[np.ndarray]:
    """Check a keep-mask and return it as a numpy bool array of shape ``(input_dim,)``.

    Accepts a torch or numpy bool tensor of shape ``(input_dim,)``.

    Raises:
        SelectionError: for another dtype, shape or length, or an all-False mask.
    """
    if mask is None:
        return None
    if torch.is_tensor(mask):
        if mask.dtype != torch.bool:
            raise SelectionError(f"mask must have dtype bool, got {mask.dtype}; convert it with mask.bool() if it is 0/1.")
        arr = mask.detach().cpu().numpy()
    elif isinstance(mask, np.ndarray):
        if mask.dtype != np.bool_:
            raise SelectionError(f"mask must have dtype bool, got {mask.dtype}; convert it with mask.astype(bool) if it is 0/1.")
        arr = mask
    else:
        raise SelectionError(f"mask must be a torch or numpy bool tensor of shape ({input_dim},), got {type(mask).__name__}.")
    if arr.shape != (input_dim,):
        raise SelectionError(
            f"mask must have shape ({input_dim},) (the current input_dim), got {tuple(arr.shape)}. Masks are in the "
            "model's current input space; for a pruned model, build them from its param_map."
        )
    if not arr.any():
        raise SelectionError("mask is all False: it keeps no dimension.")
    return arr


def parse_topk(text: str) -> TopK:
    """Parse a typed topk: ``"5000"`` or ``"5e3"`` -> 5000 (a count); ``"0.05"``, ``"1e-4"``,
    ``"1.0"`` -> a fraction (float); ``"5%"`` -> 0.05. The result is validated.

    Raises:
        SelectionError: for text that is not a count, fraction or percentage, or out of range.
    """
    t = str(text).strip().replace("_", "").replace(" ", "")
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if not 0 < pct <= 100:
                raise SelectionError(f"topk as a percentage must be in (0, 100] %; got {text!r}.")
            value: TopK = pct / 100.0
        elif t.lstrip("+-").isdigit():
            value = int(t)
        else:
            value = float(t)
            if value > 1 and value.is_integer():  # "5e3" is a count written in scientific notation
                value = int(value)
    except SelectionError:
        raise
    except (ValueError, OverflowError):
        raise SelectionError(
            f"topk must be a count (e.g. 5000), a fraction (e.g. 0.05 or 1e-4) or a percentage (e.g. 5%); got {text!r}."
        ) from None
    return validate_topk(value)  # type: ignore[return-value]


def resolve_k(topk: TopK, n_left: int) -> int:
    """How many dimensions ``topk`` keeps out of ``n_left`` (the rule in the module docstring)."""
    if isinstance(topk, float):
        return min(n_left, int(math.ceil(topk * n_left)))
    return min(int(topk), n_left)


#: Elements processed per chunk when building a ranking (bounds temporaries to ~50 MB).
_CHUNK = 1 << 22
_N_BUCKETS = 1 << 16


def sort_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values: ``a > b`` iff ``key(a) > key(b)``.

    The IEEE-754 bit pattern of a non-negative float grows with its value; negative floats are
    bit-inverted so they sort below. NaN gets key 0, below every number (``-inf`` included).
    Equal floats get equal keys, ``-0.0`` and ``+0.0`` included.
    """
    # Adding +0.0 turns -0.0 into +0.0 (IEEE 754), so the two zeros tie as they compare equal.
    v = np.ascontiguousarray(values, dtype=np.float32) + np.float32(0.0)
    bits = v.view(np.uint32)
    keys = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32, copy=False)
    nan = np.isnan(v)
    if nan.any():
        keys[nan] = 0
    return keys


def _buckets(chunk: np.ndarray) -> np.ndarray:
    """Top 16 bits of :func:`sort_keys` (uint16), with a fast path for non-negative values.

    For values without a sign bit the key is ``bits | 0x80000000``, so the bucket is
    ``(bits >> 16) | 0x8000``; NaN (whose bits sort above +inf) goes to bucket 0.
    """
    bits = chunk.view(np.uint32)
    if np.signbit(chunk).any():
        return (sort_keys(chunk) >> 16).astype(np.uint16)
    b = (bits >> 16).astype(np.uint16) | np.uint16(0x8000)
    high = np.flatnonzero(b >= np.uint16(0xFF80))  # +inf and every NaN bit pattern live up here
    if high.size:
        b[high[np.isnan(chunk[high])]] = 0
    return b


class Ranking:
    """Importance ordered by the selection rule's total order, built in one linear pass.

    Instead of sorting all ``n`` values (a stable sort of 10^8 float32 takes tens of seconds
    on two cores), each value goes into one of 65,536 buckets by the top 16 bits of its
    order-preserving key (:func:`sort_keys`); the bucket counts locate any rank or threshold,
    and only the one bucket that straddles a cut is sorted exactly. Results are identical to
    a full stable sort by (importance descending, index ascending, NaN last).

    Args:
        importance: 1-D float array or tensor of shape ``(input_dim,)``; converted to float32.

    Attributes:
        importance: float32 ``(n,)``.
        bucket: uint16 ``(n,)``, the bucket of each dim (higher bucket = more important).
        counts: int64 ``(65536,)``, dims per bucket.
        n_nan, n_zero, n_nonfinite: counts of NaN, exact zeros, and NaN or +-inf values.
        total: sum of the non-NaN importance, float64.

    Raises:
        SelectionError: for an empty or non-1-D importance.
    """

    def __init__(self, importance: Union[np.ndarray, torch.Tensor]):
        if torch.is_tensor(importance):
            importance = importance.detach().cpu().to(torch.float32).numpy()
        try:
            imp = np.asarray(importance, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise SelectionError(f"importance must be a 1-D vector of numbers, got {type(importance).__name__} ({e}).") from e
        imp = np.ascontiguousarray(imp) if imp.ndim == 1 else imp
        if imp.ndim != 1 or imp.size == 0:
            raise SelectionError(f"importance must be a non-empty 1-D vector, got shape {imp.shape}.")
        self.importance = imp
        n = imp.size
        self.bucket = np.empty(n, dtype=np.uint16)
        counts = np.zeros(_N_BUCKETS, dtype=np.int64)
        n_nan = n_zero = n_fin = 0
        total = 0.0
        n_inf = 0
        for start in range(0, n, _CHUNK):
            chunk = imp[start : start + _CHUNK]
            b = _buckets(chunk)
            self.bucket[start : start + chunk.size] = b
            c = np.bincount(b, minlength=_N_BUCKETS)
            counts += c
            nan_here = int(c[0])  # bucket 0 holds NaN only: -inf's key is 0x007FFFFF (bucket 0x7F)
            n_nan += nan_here
            n_inf += int(c[_N_BUCKETS - 128]) + int(c[0x7F])  # +inf (key 0xFF800000), -inf
            n_zero += int(np.count_nonzero(chunk == 0))
            with np.errstate(invalid="ignore"):  # +inf and -inf together sum to NaN; that is the answer
                total += float(np.nansum(chunk, dtype=np.float64) if nan_here else np.sum(chunk, dtype=np.float64))
        n_fin = n - n_nan - n_inf
        self.counts = counts
        #: Sum of all non-NaN importance (float64), the denominator of the kept-importance share.
        self.total = total
        self.n_nan, self.n_zero, self.n_nonfinite = n_nan, n_zero, n - n_fin
        self._masked: Dict[bytes, Tuple[np.ndarray, np.ndarray]] = {}
        self._order: Optional[np.ndarray] = None

    @property
    def size(self) -> int:
        return int(self.importance.size)

    # ---------------------------------------------------------------- exact ranks
    def _counts_for(self, mask: Optional[np.ndarray]) -> np.ndarray:
        """Per-bucket counts of the dims ``mask`` keeps (all dims without a mask); cached per mask."""
        if mask is None:
            return self.counts
        digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
        hit = self._masked.get(digest)
        if hit is None:
            counts = np.zeros(_N_BUCKETS, dtype=np.int64)
            for start in range(0, self.size, _CHUNK):
                sl = slice(start, start + _CHUNK)
                counts += np.bincount(self.bucket[sl][mask[sl]], minlength=_N_BUCKETS)
            if len(self._masked) >= 4:
                self._masked.pop(next(iter(self._masked)))
            self._masked[digest] = hit = (counts, mask)
        return hit[0]

    def _bucket_members(self, b: int, mask: Optional[np.ndarray]) -> np.ndarray:
        """Dims in bucket ``b`` (kept by ``mask``), most important first, ties by lower index."""
        hit = self.bucket == b
        if mask is not None:
            hit &= mask
        idx = np.flatnonzero(hit)
        keys = sort_keys(self.importance[idx])
        return idx[np.argsort(~keys, kind="stable")]

    def top(self, k: int, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Sorted local indices (int64) of the ``k`` highest-ranked dims (among ``mask``)."""
        return self._top(k, mask)[0]

    def _top(self, k: int, mask: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[float], Optional[Tuple[int, int]]]:
        """``(keep, cut, boundary)``: the kept dims, the lowest kept importance, and the bucket the
        cut falls in with how many of its dims are kept (``None`` when everything is kept)."""
        counts = self._counts_for(mask)
        total = int(counts.sum())
        k = min(int(k), total)
        if k <= 0:
            return np.empty(0, dtype=np.int64), None, None
        if k == total:
            keep = np.arange(self.size, dtype=np.int64) if mask is None else np.flatnonzero(mask).astype(np.int64)
            return keep, None, None
        above = np.cumsum(counts[::-1])[::-1] - counts  # dims in strictly higher buckets
        b = int(np.flatnonzero((above < k) & (above + counts >= k))[-1])
        higher = self.bucket > b
        if mask is not None:
            higher &= mask
        r = k - int(above[b])
        rest = self._bucket_members(b, mask)[:r]
        head = np.flatnonzero(higher)
        tail = np.sort(rest)
        # Both parts are sorted; merging by insertion is linear, where sorting the union is not.
        keep = np.insert(head, np.searchsorted(head, tail), tail).astype(np.int64, copy=False)
        return keep, float(self.importance[rest[-1]]), (b, r)

    def count_at_least(self, threshold: float, mask: Optional[np.ndarray] = None) -> int:
        """Dims with ``importance >= threshold`` (among ``mask``); NaN never counts.

        The comparison is made in float32, the threshold rounded to the nearest float32, which
        is how torch and NumPy compare a float32 vector with a Python float.
        """
        kt = int(sort_keys(np.array([threshold], dtype=np.float32))[0])
        b = kt >> 16
        counts = self._counts_for(mask)
        members = self._bucket_members(b, mask)
        return int(counts[b + 1 :].sum()) + int(np.count_nonzero(sort_keys(self.importance[members]) >= kt))

    def max_value(self) -> float:
        """Largest non-NaN importance (``nan`` if all are NaN)."""
        nonempty = np.flatnonzero(self.counts)
        if self.n_nan == self.size:
            return float("nan")
        return float(self.importance[self._bucket_members(int(nonempty[-1]), None)[0]])

    # ---------------------------------------------------------------- full order (on demand)
    @property
    def order(self) -> np.ndarray:
        """All local indices from most to least important (int64; computed on first use)."""
        if self._order is None:
            keys = sort_keys(self.importance)
            self._order = np.argsort(~keys, kind="stable").astype(np.int64, copy=False)
        return self._order

    @property
    def sorted_values(self) -> np.ndarray:
        """``importance[order]``: float32, descending, NaN last (computed on first use)."""
        return self.importance[self.order]


@dataclass(frozen=True)
class Selection:
    """Result of :func:`select`.

    Attributes:
        keep: sorted local indices kept, int64 ``(k,)``.
        input_dim: dimensions before selection.
        n_after_mask: dimensions the mask kept (``input_dim`` without a mask).
        n_after_threshold: dimensions left after mask and threshold.
    """

    keep: np.ndarray
    input_dim: int
    n_after_mask: int
    n_after_threshold: int
    cut: Optional[float] = None
    boundary: Optional[Tuple[int, int]] = None

    @property
    def k(self) -> int:
        """Kept dimensions."""
        return int(self.keep.size)

    def mask(self) -> np.ndarray:
        """Kept dimensions as a bool array of shape ``(input_dim,)``."""
        m = np.zeros(self.input_dim, dtype=bool)
        m[self.keep] = True
        return m


def select(
    importance: Union[Ranking, np.ndarray, torch.Tensor, None],
    *,
    input_dim: Optional[int] = None,
    mask: object = None,
    threshold: object = None,
    topk: object = None,
) -> Selection:
    """Apply mask -> threshold -> topk and return the kept local indices.

    Args:
        importance: a :class:`Ranking`, or importance of shape ``(input_dim,)``; may be ``None``
            when only a mask is given.
        input_dim: required when ``importance`` is ``None``.
        mask: optional bool keep-mask of shape ``(input_dim,)`` (torch or numpy).
        threshold: optional float >= 0.
        topk: optional int >= 1 (count) or float in (0, 1] (fraction of what is left).

    Returns:
        A :class:`Selection`.

    Raises:
        SelectionError: for invalid arguments (see the validators), when none of mask,
            threshold and topk is given, or when the selection keeps nothing (the message gives
            the largest importance left, so a user can pick a threshold that keeps something).
    """
    topk = validate_topk(topk)
    threshold = validate_threshold(threshold)
    if mask is None and threshold is None and topk is None:
        raise SelectionError("give at least one of mask, threshold and topk.")
    ranking = None
    if importance is not None:
        ranking = importance if isinstance(importance, Ranking) else Ranking(importance)
        n = ranking.size
        if input_dim is not None and input_dim != n:
            raise SelectionError(f"importance has length {n} but input_dim is {input_dim}.")
    elif input_dim is None:
        raise SelectionError("input_dim is required when no importance is given.")
    else:
        n = int(input_dim)
    keep_mask = validate_mask(mask, n)
    if ranking is None:
        if threshold is not None or topk is not None:
            raise SelectionError("threshold and topk need importance values (a part or an importance vector).")
        keep = np.flatnonzero(keep_mask).astype(np.int64)
        return Selection(keep, n, int(keep.size), int(keep.size))

    n_mask = n if keep_mask is None else int(np.count_nonzero(keep_mask))
    # Dims passing the threshold are a prefix of the rank order, so topk among them is a top-k overall.
    n_left = n_mask if threshold is None else ranking.count_at_least(threshold, keep_mask)
    if n_left == 0:
        if keep_mask is not None:
            left = ranking.importance[keep_mask]
            left = left[~np.isnan(left)]
            largest = float(left.max()) if left.size else float("nan")
            scope = "among the dimensions the mask keeps"
        else:
            largest, scope = ranking.max_value(), "in this part"
        if np.isnan(largest):
            raise SelectionError(
                f"threshold {threshold!r} keeps nothing: every importance value {scope} is NaN, and NaN never passes "
                "a threshold. Use topk, or fix the weights."
            )
        raise SelectionError(
            f"threshold {threshold!r} keeps nothing: the largest importance {scope} is {largest!r}. "
            "Lower the threshold."
        )
    k = n_left if topk is None else resolve_k(topk, n_left)
    keep, cut, boundary = ranking._top(k, keep_mask)
    return Selection(keep, n, n_mask, n_left, cut, boundary if keep_mask is None else None)


def topk_indices(importance: Union[Ranking, np.ndarray, torch.Tensor], topk: object) -> np.ndarray:
    """Local indices of the ``topk`` most important dimensions, most important first (int64)."""
    ranking = importance if isinstance(importance, Ranking) else Ranking(importance)
    t = validate_topk(topk)
    if t is None:
        raise SelectionError("topk is required.")
    keep = ranking.top(resolve_k(t, ranking.size))
    return keep[np.argsort(~sort_keys(ranking.importance[keep]), kind="stable")]
