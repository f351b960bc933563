"""Coordinates of an input dim: local index <-> parameter and flat index <-> base-global index.

:meth:`ParamMap.base_global_index` materialises one int64 per input dim (800 MB at 100M dims);
these helpers decode only the indices asked for, in O(k log P) for ``k`` indices and ``P``
parameters, reading each parameter's stored positions only for the indices that fall in it.

Masks move between the base-global space and a model's current input space one parameter at a
time: a model's input dims are, per mapped parameter, the selected flat positions of that parameter
(sorted), so every mapping is a loop over parameters with a slice or a sorted lookup inside each;
no int64 index of ``input_dim`` or ``unpruned_length`` entries is built. Peak extra memory is one
bool per dim of the larger space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .param_map import ParamMap

__all__ = [
    "DecodedLocal",
    "base_global_of",
    "decode_local",
    "global_indices_to_local",
    "global_mask_to_local",
    "local_mask_to_global",
]


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


def _is_full(param_map: ParamMap) -> bool:
    # every parameter keeps all its entries exactly when the two spaces have one size
    return param_map.input_dim == param_map.unpruned_length


def global_mask_to_local(param_map: ParamMap, mask: np.ndarray) -> np.ndarray:
    """Restrict a mask over base-global indices to the model's input dims.

    Args:
        param_map: the model's map.
        mask: bool ``(unpruned_length,)``.

    Returns:
        bool ``(input_dim,)``: entry ``i`` is ``mask[base_global_index[i]]``.

    Raises:
        ValueError: for a mask of another shape.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (param_map.unpruned_length,):
        raise ValueError(f"a base-global mask must have shape ({param_map.unpruned_length},), got {mask.shape}.")
    if _is_full(param_map):
        return mask.copy()
    out = np.empty(param_map.input_dim, dtype=bool)
    for i, e in enumerate(param_map.entries):
        g0, g1 = int(param_map.global_offsets[i]), int(param_map.global_offsets[i + 1])
        l0, l1 = int(param_map.local_offsets[i]), int(param_map.local_offsets[i + 1])
        seg = mask[g0:g1]
        out[l0:l1] = seg if e.positions is None else seg[e.positions]
    return out


def local_mask_to_global(param_map: ParamMap, mask: np.ndarray) -> np.ndarray:
    """Scatter a mask over the model's input dims into base-global space.

    Args:
        param_map: the model's map.
        mask: bool ``(input_dim,)``.

    Returns:
        bool ``(unpruned_length,)``, False at the entries the model does not map.

    Raises:
        ValueError: for a mask of another shape.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (param_map.input_dim,):
        raise ValueError(f"a local mask must have shape ({param_map.input_dim},), got {mask.shape}.")
    if _is_full(param_map):
        return mask.copy()
    out = np.zeros(param_map.unpruned_length, dtype=bool)
    for i, e in enumerate(param_map.entries):
        g0, g1 = int(param_map.global_offsets[i]), int(param_map.global_offsets[i + 1])
        l0, l1 = int(param_map.local_offsets[i]), int(param_map.local_offsets[i + 1])
        if e.positions is None:
            out[g0:g1] = mask[l0:l1]
        else:
            out[g0:g1][e.positions] = mask[l0:l1]
    return out


def global_indices_to_local(param_map: ParamMap, indices: np.ndarray) -> np.ndarray:
    """Mark the input dims whose base-global index is in ``indices``.

    Args:
        param_map: the model's map.
        indices: sorted int64 base-global indices in ``[0, unpruned_length)``.

    Returns:
        bool ``(input_dim,)``; indices of entries the model does not map are ignored.
    """
    g = np.asarray(indices, dtype=np.int64)
    out = np.zeros(param_map.input_dim, dtype=bool)
    if _is_full(param_map):
        out[g] = True
        return out
    bounds = np.searchsorted(g, param_map.global_offsets, side="left")
    for i, e in enumerate(param_map.entries):
        if bounds[i] == bounds[i + 1] or e.num_selected == 0:
            continue
        flat = g[bounds[i] : bounds[i + 1]] - param_map.global_offsets[i]
        l0 = int(param_map.local_offsets[i])
        if e.positions is None:
            out[l0 + flat] = True
            continue
        at = np.searchsorted(e.positions, flat)
        hit = at < e.positions.size
        hit[hit] = e.positions[at[hit]] == flat[hit]
        out[l0 + at[hit]] = True
    return out
