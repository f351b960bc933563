"""The bucket codec of importance: order-preserving keys, value buckets, their bounds, the rule's order.

The selection rule orders dims by importance descending, ties by lower local index, NaN after every
number (see :mod:`gradiend_core.selection.rule`). Each float32 value has an order-preserving uint32
key (:func:`sort_keys`); its top 16 bits are its bucket (65,536 buckets, each 1/128 of an octave
wide; a higher bucket holds larger values). :class:`~gradiend_core.ranking.ranking.Ranking` and the
pruning curve (:mod:`gradiend_core.curve.sums`) count and order dims with these functions only.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INF_BUCKET",
    "NAN_BUCKET",
    "NEG_INF_BUCKET",
    "N_BUCKETS",
    "ZERO_BUCKET",
    "bucket_bounds",
    "bucket_of",
    "finite_or_zero",
    "mass_weights",
    "rank_within",
    "ranked_order",
    "sort_keys",
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


def bucket_bounds(buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def rank_within(values: np.ndarray) -> np.ndarray:
    """Stable permutation that orders one bucket's values by the rule (value desc; the members are
    ascending by index already, so stability breaks ties by lower index)."""
    low = (sort_keys(values) & np.uint32(0xFFFF)).astype(np.uint16)
    return np.argsort(~low, kind="stable")  # numpy sorts 16-bit keys stably by radix: O(m)


def ranked_order(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The order of some dims under the selection rule: importance descending, then lower index.

    Used for the members of one bucket, whose exact order the bucket sums do not carry.

    Args:
        values: float32 importance of the dims, ``(c,)``.
        indices: their int64 local indices, ``(c,)`` (unique).

    Returns:
        int64 positions into ``values`` from most to least important (NaN last).
    """
    keys = sort_keys(np.asarray(values, dtype=np.float32))
    return np.lexsort((np.asarray(indices, dtype=np.int64), ~keys)).astype(np.int64)


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
