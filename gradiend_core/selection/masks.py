"""Keep-masks from files and from parameter names.

A mask is a bool vector in the model's current input space, shape ``(input_dim,)``. A mask of
length ``unpruned_length`` is read as a mask over base-global indices and translated into the
current input space, so one mask file can be applied to differently pruned models of one base.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import regex
import torch

from ..errors import SelectionError
from ..space.param_map import ParamMap

__all__ = [
    "MASK_SUFFIXES",
    "NAME_MATCH_SECONDS",
    "compose_masks",
    "load_mask",
    "matching_parameters",
    "name_filter_mask",
    "name_mask",
    "read_mask_file",
    "search_names",
    "sha256_mask",
    "to_local_mask",
]


MASK_SUFFIXES = (".pt", ".pth", ".safetensors", ".npy")
#: Time a parameter-name pattern may take over all names of a checkpoint (seconds).
NAME_MATCH_SECONDS = 2.0


def search_names(pattern: str, names: Iterable[str], seconds: float = NAME_MATCH_SECONDS) -> np.ndarray:
    r"""bool ``(len(names),)``: whether the regular expression ``pattern`` is found anywhere in each
    name (``re.search`` semantics).

    Patterns come from links and shared commands, and the standard library's ``re`` cannot stop a
    pattern that backtracks catastrophically (``^(\\w+\\.?)*$x`` runs for hours on one name and
    holds the dashboard's server); the ``regex`` package matches the same syntax, resists most
    such patterns and stops the rest after ``seconds`` in all.

    Raises:
        SelectionError: for a pattern that does not compile or takes longer than ``seconds``.
    """
    try:
        re.compile(pattern)  # the standard library's message and syntax are the ones documented
        rx = regex.compile(pattern, flags=regex.VERSION0)
    except (re.error, regex.error) as e:
        raise SelectionError(f"invalid parameter-name pattern {pattern!r}: {e}") from e
    deadline = time.monotonic() + seconds
    hits = []
    try:
        for name in names:
            hits.append(rx.search(name, timeout=max(deadline - time.monotonic(), 1e-3)) is not None)
    except TimeoutError:
        raise SelectionError(
            f"the parameter-name pattern {pattern!r} takes more than {seconds:g} s to match the parameter names: "
            "it backtracks without end (a repeated group that can match the same text in many ways, like "
            "(\\w+\\.?)*). Simplify it, e.g. match a fixed part of the names."
        ) from None
    return np.array(hits, dtype=bool)


def sha256_mask(mask: np.ndarray | None) -> str | None:
    """Hex sha256 of a bool mask's packed bits (``None`` for no mask): the digest recorded for a
    mask in ``pruning.json`` and in saved masks."""
    if mask is None:
        return None
    return hashlib.sha256(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).hexdigest()


def _only_tensor(obj: object, path: Path) -> object:
    if isinstance(obj, dict):
        if "mask" in obj:
            return obj["mask"]
        if len(obj) == 1:
            return next(iter(obj.values()))
        raise SelectionError(
            f"{path}: holds {len(obj)} tensors ({', '.join(map(str, obj))}); store one, or name it 'mask'."
        )
    return obj


def _read_npy(p: Path) -> object:
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise SelectionError(
                f"{p}: holds Python objects, not a bool array; such files are never unpickled here. "
                "Save the mask with np.save(path, mask.astype(bool))."
            ) from e
        raise


def _read_safetensors(p: Path) -> object:
    from safetensors.torch import load_file

    return _only_tensor(load_file(str(p)), p)


def _read_torch(p: Path) -> object:
    return _only_tensor(torch.load(str(p), map_location="cpu", weights_only=True), p)


#: How each mask file suffix is read (no reader unpickles arbitrary objects).
_READERS = {".npy": _read_npy, ".safetensors": _read_safetensors, ".pt": _read_torch, ".pth": _read_torch}


def _mask_suffix(p: Path) -> str:
    """The file's mask suffix in lower case; SelectionError for any other suffix."""
    suffix = next((s for s in MASK_SUFFIXES if p.name.lower().endswith(s)), p.suffix.lower())
    if suffix not in MASK_SUFFIXES:
        raise SelectionError(f"{p}: mask files must end in {', '.join(MASK_SUFFIXES)}; got {suffix or 'no suffix'!r}.")
    return suffix


def _bool_vector(arr: object, p: Path) -> np.ndarray:
    """``arr`` as a 1-D numpy bool array; SelectionError for another type, dtype or shape."""
    if torch.is_tensor(arr):
        if arr.dtype != torch.bool:
            raise SelectionError(f"{p}: mask must have dtype bool, got {arr.dtype}; save mask.bool().")
        arr = arr.cpu().numpy()
    if not isinstance(arr, np.ndarray):
        raise SelectionError(f"{p}: expected a tensor or array, got {type(arr).__name__}.")
    if arr.dtype != np.bool_:
        raise SelectionError(f"{p}: mask must have dtype bool, got {arr.dtype}; save mask.astype(bool).")
    if arr.ndim != 1:
        raise SelectionError(f"{p}: mask must be 1-D, got shape {arr.shape}.")
    return arr


def read_mask_file(path: str | os.PathLike) -> np.ndarray:
    """Read a 1-D bool mask from ``.pt``/``.pth`` (torch.save, loaded with weights_only=True),
    ``.safetensors`` (one tensor, or one named ``mask``) or ``.npy`` (no pickles).

    Returns:
        numpy bool array, 1-D.

    Raises:
        SelectionError: for an unknown suffix, an unreadable file, a non-bool dtype or not 1-D.
    """
    p = Path(path)
    suffix = _mask_suffix(p)
    try:
        arr = _READERS[suffix](p)
    except SelectionError:
        raise
    except Exception as e:
        raise SelectionError(f"{p}: cannot read the mask ({e}).") from e
    return _bool_vector(arr, p)


def to_local_mask(mask: np.ndarray, param_map: ParamMap, source: str = "mask") -> np.ndarray:
    """Translate a mask to the current input space.

    Length ``input_dim`` -> used as is; length ``unpruned_length`` (base-global space) ->
    ``mask[base_global_index]``.

    Raises:
        SelectionError: for any other length.
    """
    n, full = param_map.input_dim, param_map.unpruned_length
    if mask.shape == (n,):
        return mask
    if mask.shape == (full,):
        local = mask[param_map.base_global_index()]
        if mask.any() and not local.any():
            raise SelectionError(
                f"{source} is a mask over base-global indices with {int(mask.sum()):,} true entries, but none of "
                f"them is among this model's {n:,} input dims (it was pruned to other entries)."
            )
        return local
    raise SelectionError(
        f"{source} has length {mask.shape[0]}, but this model has input_dim {n} (current input space) and "
        f"unpruned length {full} (base-global space); a mask must have one of those lengths."
    )


def load_mask(path: str | os.PathLike, param_map: ParamMap) -> np.ndarray:
    """:func:`read_mask_file` then :func:`to_local_mask`."""
    return to_local_mask(read_mask_file(path), param_map, str(path))


def name_filter_mask(param_map: ParamMap, include: str | None = None, exclude: str | None = None) -> np.ndarray:
    """Keep-mask of the input dims whose base-model parameter name matches ``include`` and not
    ``exclude`` (Python regular expressions, searched anywhere in the name).

    Raises:
        SelectionError: for an invalid regular expression or one that takes too long
            (:func:`search_names`).
    """
    names = [e.name for e in param_map]
    keep_param = np.ones(len(names), dtype=bool)
    if include:
        keep_param &= search_names(include, names)
    if exclude:
        keep_param &= ~search_names(exclude, names)
    return np.repeat(keep_param, param_map.per_param_counts())


def _clean(pattern: str | None) -> str | None:
    return pattern.strip() if pattern and pattern.strip() else None


def matching_parameters(param_map: ParamMap, include: str | None = None, exclude: str | None = None) -> list[str]:
    """Names of the mapped parameters the patterns keep, in map order.

    Raises:
        SelectionError: for an invalid regular expression.
    """
    keep = name_filter_mask(ParamMap.full((e.name, (1,)) for e in param_map), _clean(include), _clean(exclude))
    return [name for name, k in zip(param_map.names, keep) if k]


def name_mask(param_map: ParamMap, include: str | None = None, exclude: str | None = None) -> np.ndarray | None:
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


def compose_masks(*masks: np.ndarray | None) -> np.ndarray | None:
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
