"""Local input indices -> parameter, flat index in the parameter, base-global index.

:meth:`ParamMap.base_global_index` materialises one int64 per input dim (800 MB at 100M dims);
these helpers decode only the indices asked for, in O(k log P) for ``k`` indices and ``P``
parameters, reading each parameter's stored positions only for the indices that fall in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..param_map import ParamMap

__all__ = ["DecodedLocal", "base_global_of", "decode_local"]


@dataclass(frozen=True)
class DecodedLocal:
    """Where local input indices live in the base model (arrays aligned with the input).

    Attributes:
        local: int64 ``(k,)``, the local indices.
        param: int64 ``(k,)``, index into ``param_map.entries``.
        flat: int64 ``(k,)``, flat (row-major) index inside that parameter.
        base_global: int64 ``(k,)``, base-global index (unchanged by pruning).
    """

    local: np.ndarray
    param: np.ndarray
    flat: np.ndarray
    base_global: np.ndarray


def decode_local(param_map: ParamMap, local: np.ndarray) -> DecodedLocal:
    """Decode local input indices (any order, repeats allowed).

    Raises:
        IndexError: for an index outside ``[0, input_dim)``.
    """
    local = np.asarray(local, dtype=np.int64).reshape(-1)
    if local.size and (int(local.min()) < 0 or int(local.max()) >= param_map.input_dim):
        raise IndexError(
            f"local index out of range [0, {param_map.input_dim}): got min {int(local.min())}, max {int(local.max())}."
        )
    if local.size > 1 and not bool(np.all(local[1:] >= local[:-1])):
        order = np.argsort(local, kind="stable")
        d = decode_local(param_map, local[order])
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        return DecodedLocal(local, d.param[inv], d.flat[inv], d.base_global[inv])
    # sorted: each parameter's indices are one contiguous run
    bounds = np.searchsorted(local, param_map.local_offsets, side="left")
    param = np.repeat(np.arange(len(param_map), dtype=np.int64), np.diff(bounds))
    flat = local - param_map.local_offsets[param]
    for p in np.flatnonzero(np.diff(bounds)):
        positions = param_map.entries[int(p)].positions
        if positions is not None:
            flat[bounds[p] : bounds[p + 1]] = positions[flat[bounds[p] : bounds[p + 1]]]
    return DecodedLocal(local, param, flat, flat + param_map.global_offsets[param])


def base_global_of(param_map: ParamMap, local: np.ndarray) -> np.ndarray:
    """Base-global indices (int64) of local indices; sorted when ``local`` is sorted."""
    return decode_local(param_map, local).base_global
