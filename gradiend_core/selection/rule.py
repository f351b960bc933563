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

Implementation: a :class:`~gradiend_core.ranking.ranking.Ranking` summarises importance per value bucket;
a threshold or a topk then reads bucket counts and sorts only the one bucket that straddles the
cut, and the kept index set is built only when asked for, which keeps interactive re-selection
cheap for models with hundreds of millions of input dimensions.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import SelectionError
from ..ranking.bounds import Bounds
from ..ranking.keys import sort_keys
from ..ranking.ranked_dims import RankedDims
from ..ranking.ranking import Ranking

__all__ = [
    "Ranking",
    "Selection",
    "SelectionBounds",
    "TopK",
    "parse_topk",
    "resolve_k",
    "select",
    "select_bounds",
    "sort_keys",
    "topk_indices",
    "validate_mask",
    "validate_threshold",
    "validate_topk",
]

TopK = int | float


def validate_topk(topk: object) -> TopK | None:
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
            raise SelectionError(
                f"topk as a count must be >= 1; got {int(topk)}. To keep a fraction, pass a float in (0, 1]."
            )
        return int(topk)
    if isinstance(topk, numbers.Real):
        t = float(topk)
        if not (0.0 < t <= 1.0) or math.isnan(t):
            raise SelectionError(
                f"topk as a float is a fraction and must be in (0, 1]; got {t!r}. For a count, pass an int."
            )
        return t
    raise SelectionError(f"topk must be an int or a float, got {type(topk).__name__} ({topk!r}).")


def validate_threshold(threshold: object) -> float | None:
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


def validate_mask(mask: object, input_dim: int) -> np.ndarray | None:
    """Check a keep-mask and return it as a numpy bool array of shape ``(input_dim,)``.

    Accepts a torch or numpy bool tensor of shape ``(input_dim,)``.

    Raises:
        SelectionError: for another dtype, shape or length, or an all-False mask.
    """
    if mask is None:
        return None
    if torch.is_tensor(mask):
        if mask.dtype != torch.bool:
            raise SelectionError(
                f"mask must have dtype bool, got {mask.dtype}; convert it with mask.bool() if it is 0/1."
            )
        arr = mask.detach().cpu().numpy()
    elif isinstance(mask, np.ndarray):
        if mask.dtype != np.bool_:
            raise SelectionError(
                f"mask must have dtype bool, got {mask.dtype}; convert it with mask.astype(bool) if it is 0/1."
            )
        arr = mask
    else:
        raise SelectionError(
            f"mask must be a torch or numpy bool tensor of shape ({input_dim},), got {type(mask).__name__}."
        )
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


@dataclass(frozen=True, eq=False)
class Selection:
    """Result of :func:`select`: how many dims are kept, and which (built on first use).

    Counts and shares are read from the ranking's bucket summaries, so a selection of any size is
    cheap; the index set :attr:`keep` costs O(k) and is built only when something asks for it.

    Attributes:
        input_dim: dimensions before selection.
        n_after_mask: dimensions the mask kept (``input_dim`` without a mask).
        n_after_threshold: dimensions left after mask and threshold.
        k: kept dimensions.
        topk: the topk asked for (``None`` without one).
        dims: the ranked dims the topk chose among (``None`` for a mask alone).
    """

    input_dim: int
    n_after_mask: int
    n_after_threshold: int
    k: int
    topk: TopK | None = None
    dims: RankedDims | None = None
    mask_array: np.ndarray | None = None

    @cached_property
    def keep(self) -> np.ndarray:
        """Sorted local indices kept, int64 ``(k,)``."""
        if self.dims is not None:
            return self.dims.top(self.k)
        return np.flatnonzero(self.mask_array).astype(np.int64)

    @property
    def topk_clipped(self) -> bool:
        """True when a topk count asked for more dims than mask and threshold left."""
        return isinstance(self.topk, int) and self.topk > self.n_after_threshold

    @cached_property
    def cut(self) -> float | None:
        """Lowest kept importance (the effective threshold); ``None`` without importance."""
        return self.dims.value_at(self.k - 1) if self.dims is not None else None

    @cached_property
    def kept_mass(self) -> float | None:
        """float64 sum of the kept dims' finite importance; ``None`` without importance."""
        return self.dims.mass_top(self.k) if self.dims is not None else None

    def mask(self) -> np.ndarray:
        """Kept dimensions as a bool array of shape ``(input_dim,)``."""
        m = np.zeros(self.input_dim, dtype=bool)
        m[self.keep] = True
        return m


def select(
    importance: Ranking | np.ndarray | torch.Tensor | None,
    *,
    input_dim: int | None = None,
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
        ranking = Ranking.coerce(importance)
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
        n_mask = int(np.count_nonzero(keep_mask))
        return Selection(n, n_mask, n_mask, n_mask, mask_array=keep_mask)

    dims = ranking.dims(keep_mask)
    # Dims passing the threshold are a prefix of the rank order, so topk among them is a top-k overall.
    n_left = dims.n if threshold is None else dims.count_at_least(threshold)
    if n_left == 0:
        _nothing_passes(threshold, dims, keep_mask is not None)
    k = n_left if topk is None else resolve_k(topk, n_left)
    return Selection(n, dims.n, n_left, k, topk, dims)


@dataclass(frozen=True, eq=False)
class SelectionBounds:
    """What :func:`select` would answer, bounded without reading any bucket's members.

    Attributes:
        input_dim, n_after_mask, topk, dims: as for :class:`Selection` (exact).
        n_after_threshold: :class:`~gradiend_core.ranking.bounds.Bounds` of the dims left after
            mask and threshold (exact without a threshold).
        k: bounds of the kept dims (exact when ``n_after_threshold`` is).
    """

    input_dim: int
    n_after_mask: int
    n_after_threshold: Bounds
    k: Bounds
    topk: TopK | None
    dims: RankedDims

    def kept_mass(self) -> Bounds:
        """Bounds of :attr:`Selection.kept_mass` (importance is non-negative, so it grows with k)."""
        lo, hi = self.dims.mass_top_bounds(int(self.k.lo)), self.dims.mass_top_bounds(int(self.k.hi))
        return Bounds(min(lo.lo, hi.lo), max(lo.hi, hi.hi))

    def param_counts(self) -> Bounds:
        """Bounds of the kept dims per parameter, int64 ``(P,)`` each (see
        :meth:`~gradiend_core.ranking.ranked_dims.RankedDims.param_counts_top_bounds`)."""
        lo, hi = self.dims.param_counts_top_bounds(int(self.k.lo)), self.dims.param_counts_top_bounds(int(self.k.hi))
        return Bounds(lo.lo, hi.hi)

    def selection(self) -> Selection | None:
        """The exact :class:`Selection` when the count is known (always without a threshold), else ``None``."""
        if not self.n_after_threshold.exact:
            return None
        return Selection(
            self.input_dim, self.n_after_mask, int(self.n_after_threshold.lo), int(self.k.lo), self.topk, self.dims
        )


def select_bounds(
    importance: Ranking | np.ndarray | torch.Tensor,
    *,
    mask: object = None,
    threshold: object = None,
    topk: object = None,
) -> SelectionBounds:
    """:func:`select`'s answer, bounded from the summaries alone (no pass over the weights, no
    bucket's members read unless a layout holds them): the rule applied to the bounds of the count
    a threshold leaves. Exact when no threshold is given or its fine bin decides it.

    Raises:
        SelectionError: for invalid arguments, as :func:`select`; when nothing can pass (the
            largest importance is known to be below the threshold).
    """
    topk = validate_topk(topk)
    threshold = validate_threshold(threshold)
    if mask is None and threshold is None and topk is None:
        raise SelectionError("give at least one of mask, threshold and topk.")
    ranking = Ranking.coerce(importance)
    keep_mask = validate_mask(mask, ranking.size)
    dims = ranking.dims(keep_mask)
    left = Bounds.of(dims.n) if threshold is None else dims.count_at_least_bounds(threshold)
    if left.hi == 0:
        _nothing_passes(threshold, dims, keep_mask is not None, bounded=True)
    k = left if topk is None else Bounds(resolve_k(topk, int(left.lo)), resolve_k(topk, int(left.hi)))
    return SelectionBounds(ranking.size, dims.n, left, k, topk, dims)


def _nothing_passes(threshold: float, dims: RankedDims, masked: bool, bounded: bool = False) -> None:
    scope = "among the dimensions the mask keeps" if masked else "in this part"
    largest: object = float("nan")
    if dims.n > int(dims.counts[0]):  # bucket 0 holds NaN only
        if bounded:  # no pass over the weights for the message: the value's fine bin
            b = dims.value_at_bounds(0)
            largest = b.lo if b.exact else f"between {b.lo!r} and {b.hi!r}"
        else:
            largest = dims.value_at(0)
    if isinstance(largest, float) and np.isnan(largest):
        raise SelectionError(
            f"threshold {threshold!r} keeps nothing: every importance value {scope} is NaN, and NaN never passes "
            "a threshold. Use topk, or fix the weights."
        )
    raise SelectionError(
        f"threshold {threshold!r} keeps nothing: the largest importance {scope} is {largest!r}. Lower the threshold."
    )


def topk_indices(importance: Ranking | np.ndarray | torch.Tensor, topk: object) -> np.ndarray:
    """Local indices of the ``topk`` most important dimensions, most important first (int64)."""
    ranking = Ranking.coerce(importance)
    t = validate_topk(topk)
    if t is None:
        raise SelectionError("topk is required.")
    return ranking.dims().ranked(resolve_k(t, ranking.size))
