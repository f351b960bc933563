"""Keep-masks from parameter-name patterns, and how masks compose.

A name filter is a mask like any other: it is ANDed with the mask file (if any) and handed to
:func:`gradiend_core.selection.select` as ``mask``, so threshold and topk then act on what it
keeps (mask -> threshold -> topk). The mask itself is built by
:func:`gradiend_core.masks.name_filter_mask`.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..errors import SelectionError
from ..masks import name_filter_mask
from ..param_map import ParamMap

__all__ = ["compose_masks", "matching_parameters", "name_mask"]


def _clean(pattern: Optional[str]) -> Optional[str]:
    return pattern.strip() if pattern and pattern.strip() else None


def matching_parameters(param_map: ParamMap, include: Optional[str] = None, exclude: Optional[str] = None) -> List[str]:
    """Names of the mapped parameters the patterns keep, in map order.

    Raises:
        SelectionError: for an invalid regular expression.
    """
    keep = name_filter_mask(ParamMap.full((e.name, (1,)) for e in param_map), _clean(include), _clean(exclude))
    return [name for name, k in zip(param_map.names, keep) if k]


def name_mask(
    param_map: ParamMap, include: Optional[str] = None, exclude: Optional[str] = None
) -> Optional[np.ndarray]:
    """Keep-mask of the input dims whose parameter name matches ``include`` and not ``exclude``.

    Args:
        param_map: the model's map.
        include, exclude: Python regular expressions searched anywhere in the parameter name;
            empty or ``None`` means "no constraint".

    Returns:
        bool ``(input_dim,)``, or ``None`` when both patterns are empty (no filter).

    Raises:
        SelectionError: for an invalid regular expression, or patterns that keep no input dim
            (the message names how many parameters matched).
    """
    include, exclude = _clean(include), _clean(exclude)
    if include is None and exclude is None:
        return None
    mask = name_filter_mask(param_map, include, exclude)
    if not mask.any():
        n = len(matching_parameters(param_map, include, exclude))
        what = f"{n} parameter(s) match but none has an input dim left" if n else "no parameter name matches"
        raise SelectionError(
            f"the name filter (include {include!r}, exclude {exclude!r}) keeps nothing: {what}. "
            "Loosen the include pattern or narrow the exclude pattern."
        )
    return mask


def compose_masks(*masks: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """AND of the given bool masks of one shape, ignoring ``None``; ``None`` if all are ``None``.

    Raises:
        SelectionError: for masks of different shapes.
    """
    given = [np.asarray(m, dtype=bool) for m in masks if m is not None]
    if not given:
        return None
    shapes = {m.shape for m in given}
    if len(shapes) != 1:
        raise SelectionError(f"masks to combine must have one shape, got {sorted(shapes)}.")
    out = given[0].copy()
    for m in given[1:]:
        out &= m
    return out
