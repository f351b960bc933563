"""Saved masks: a named mask expression with its resolved mask, in one safetensors file.

Layout: one tensor ``mask``, bool ``(unpruned_length,)``, the mask over base-global indices (so it
applies to any pruned variant of the base model); header metadata (strings):

* ``format`` - ``gradiend_core.mask/1``;
* ``name`` - the mask's name; ``expression`` - its canonical expression text;
* ``mask_sha256`` - :func:`gradiend_core.selection.masks.sha256_mask` of the stored (base-global) mask;
* ``kept`` - True entries; ``unpruned_length``;
* ``base_model`` - ``metadata.base_model`` of the model it was made on (may be empty);
* ``base_params_sha256`` - :func:`space_digest` of that model's map (names and shapes of the
  mapped parameters, i.e. what a base-global index means).

Such a file is also a plain mask file: :func:`gradiend_core.selection.masks.read_mask_file`, ``--mask``
and ``file('...')`` read its ``mask`` tensor (``file()`` additionally refuses a bundle of another
base model).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import SelectionError
from ...space.coords import global_mask_to_local
from ...space.param_map import ParamMap
from ..masks import sha256_mask

__all__ = [
    "BUNDLE_FORMAT",
    "MaskBundle",
    "bundle_problem",
    "load_mask_bundle",
    "make_mask_bundle",
    "save_mask_bundle",
    "space_digest",
]

BUNDLE_FORMAT = "gradiend_core.mask/1"


def space_digest(param_map: ParamMap) -> str:
    """Hex sha256 of the mapped parameters' names and shapes, in map order: two maps with the
    same digest share one base-global index space."""
    spec = [[e.name, [int(s) for s in e.shape]] for e in param_map]
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class MaskBundle:
    """A saved mask.

    Attributes:
        name: the mask's name.
        expression: canonical expression text it was made from.
        mask: bool ``(unpruned_length,)`` over base-global indices.
        base_model: ``metadata.base_model`` of the model it was made on (``None`` if unknown).
        base_params_sha256: :func:`space_digest` of that model's map.
    """

    name: str
    expression: str
    mask: np.ndarray
    base_model: str | None
    base_params_sha256: str

    @property
    def sha256(self) -> str:
        """:func:`gradiend_core.selection.masks.sha256_mask` of :attr:`mask`."""
        return sha256_mask(self.mask)  # type: ignore[return-value]

    def metadata(self) -> dict[str, str]:
        """The safetensors header metadata (see the module docstring)."""
        return {
            "format": BUNDLE_FORMAT,
            "name": self.name,
            "expression": self.expression,
            "mask_sha256": self.sha256,
            "kept": str(int(np.count_nonzero(self.mask))),
            "unpruned_length": str(int(self.mask.size)),
            "base_model": self.base_model or "",
            "base_params_sha256": self.base_params_sha256,
        }

    def to_bytes(self) -> bytes:
        """The bundle as safetensors bytes (e.g. for a download button)."""
        from safetensors.torch import save

        return save({"mask": torch.from_numpy(np.ascontiguousarray(self.mask, dtype=bool))}, self.metadata())

    def local_mask(self, param_map: ParamMap, metadata: Mapping[str, Any] | None = None) -> np.ndarray:
        """The mask in a model's current input space, bool ``(input_dim,)``.

        Raises:
            SelectionError: when the model has another base (see :func:`bundle_problem`).
        """
        problem = _problem(self.metadata(), param_map, metadata or {})
        if problem:
            raise SelectionError(f"saved mask {self.name!r}: {problem}")
        return global_mask_to_local(param_map, self.mask)


def make_mask_bundle(name: str, result: Any, base_model: str | None = None) -> MaskBundle:
    """A bundle from an evaluated expression.

    Args:
        name: non-empty name.
        result: a :class:`~gradiend_core.selection.expr.evaluate.MaskResult`.
        base_model: the model's ``metadata.base_model`` (recorded, and checked on reuse).

    Raises:
        SelectionError: for an empty name.
    """
    if not isinstance(name, str) or not name.strip():
        raise SelectionError(f"a saved mask needs a non-empty name, got {name!r}.")
    return MaskBundle(name.strip(), result.expression, result.global_mask(), base_model, space_digest(result.param_map))


def save_mask_bundle(bundle: MaskBundle, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a bundle atomically (temporary file in the same directory, then rename).

    Args:
        bundle: the bundle.
        path: target file; must end in ``.safetensors`` so it reloads as a mask file.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        SelectionError: for another suffix or an existing file without ``overwrite``.
        OSError: when the directory cannot be written.
    """
    p = Path(path).expanduser()
    if not p.name.lower().endswith(".safetensors"):
        raise SelectionError(f"{p}: a saved mask is a .safetensors file; name it e.g. {p.name}.safetensors.")
    if p.exists() and not overwrite:
        raise SelectionError(f"{p} exists; pass overwrite=True to replace it.")
    data = bundle.to_bytes()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _header(raw: bytes, where: str) -> dict[str, str]:
    # The safetensors layout is specified: an 8-byte little-endian header length, then the JSON
    # header. ``safetensors.torch.load`` drops the metadata of in-memory files, so it is read here.
    if len(raw) < 8:
        raise SelectionError(f"{where}: not a safetensors file (too short).")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        head = json.loads(raw[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise SelectionError(f"{where}: not a safetensors file ({e}).") from None
    return dict(head.get("__metadata__") or {})


def load_mask_bundle(source: str | os.PathLike | bytes) -> MaskBundle:
    """Read a bundle from a file or from its bytes (e.g. an upload).

    Raises:
        SelectionError: for a file that is not a saved mask (no ``format`` header, or another
            one), a mask that is not bool 1-D, or a mask whose digest differs from the recorded
            one (a damaged file).
    """
    from safetensors.torch import load

    if isinstance(source, (bytes, bytearray)):
        raw, where = bytes(source), "saved mask"
    else:
        where = str(source)
        try:
            raw = Path(source).expanduser().read_bytes()
        except OSError as e:
            raise SelectionError(f"{where}: cannot read the saved mask ({e.strerror or e}).") from None
    meta = _header(raw, where)
    if meta.get("format") != BUNDLE_FORMAT:
        raise SelectionError(
            f"{where}: not a saved mask (header format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}); "
            "a plain mask file is read with file('...') or --mask."
        )
    try:
        tensors = load(raw)
    except Exception as e:
        raise SelectionError(f"{where}: cannot read the mask tensor ({e}).") from None
    t = tensors.get("mask")
    if t is None or t.dtype != torch.bool or t.ndim != 1:
        raise SelectionError(f"{where}: the tensor 'mask' must be bool and 1-D.")
    mask = t.numpy()
    if sha256_mask(mask) != meta.get("mask_sha256"):
        raise SelectionError(f"{where}: the mask does not match its recorded sha256; the file is damaged.")
    return MaskBundle(
        meta.get("name", ""),
        meta.get("expression", ""),
        mask,
        meta.get("base_model") or None,
        meta.get("base_params_sha256", ""),
    )


def _problem(meta: Mapping[str, str], param_map: ParamMap, metadata: Mapping[str, Any]) -> str | None:
    if meta.get("base_params_sha256") and meta["base_params_sha256"] != space_digest(param_map):
        return "it was saved from a model whose mapped parameters (names or shapes) differ from this model's."
    mine = metadata.get("base_model") or metadata.get("base_model_id")
    if meta.get("base_model") and mine and str(mine) != meta["base_model"]:
        return f"it was saved from a model of base model {meta['base_model']!r}, this model's is {str(mine)!r}."
    return None


def bundle_problem(path: str | os.PathLike, param_map: ParamMap, metadata: Mapping[str, Any]) -> str | None:
    """Why a saved mask file does not fit a model (``None`` if it fits, or is not a saved mask)."""
    p = Path(path)
    if not p.name.lower().endswith(".safetensors"):
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        return None
    if meta.get("format") != BUNDLE_FORMAT:
        return None
    return _problem(meta, param_map, metadata)
