"""Files a training run writes next to the GRADIEND checkpoint, and how they are read back.

* ``pre_prune.safetensors`` - the pre-prune importance and selection:
  ``importance`` float32 ``(n,)`` (|mean source gradient| over the pre-prune input space, the
  unpruned input space when pre-pruning starts from a full map), ``kept`` int64 ``(k,)`` (local
  indices into that space, sorted) and ``base_global_index`` int64 ``(n,)`` (the base-global
  index of each of those dimensions; left out when it is ``0..n-1``, i.e. when pre-pruning
  started from the unpruned space). Header metadata: the config, the source, the number of
  examples averaged.
* ``validation_gradients.safetensors`` - a few validation source gradients for "what a cut
  costs": ``gradients`` float32 ``(m, input_dim)`` in the checkpoint's input space, ``labels``
  float32 ``(m,)`` (+1 first class, -1 second), ``base_global_index`` int64 ``(input_dim,)``
  (left out when it is ``0..input_dim-1``, i.e. for an unpruned model). Header metadata: source
  and class names.

Both are extra files: the reference's ``ParamMappedGradiendModel.from_pretrained`` reads only
``config.json``, the weights and the mapping files it names, so it loads these checkpoints
unchanged (a test checks it).

They are written with the checkpoint in one atomic step
(``ParamMappedGradiendModel.save_pretrained(..., tensor_files=...)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .files import PRE_PRUNE_FILE, VALIDATION_FILE
from .reader import resolve_checkpoint_dir

__all__ = [
    "PrePruneRecord",
    "ValidationRecord",
    "align_columns",
    "load_pre_prune_record",
    "load_validation_record",
]

PRE_PRUNE_FORMAT = "gradiend_core.pre_prune/1"
VALIDATION_FORMAT = "gradiend_core.validation_gradients/1"

PathLike = str | os.PathLike


@dataclass
class PrePruneRecord:
    """What pre-pruning measured and kept.

    Attributes:
        importance: float32 ``(n,)``, |mean source gradient| of each dimension of the input space
            pre-pruning started from.
        kept: int64 ``(k,)``, sorted local indices (into that space) that were kept.
        base_global_index: int64 ``(n,)``, base-global index of each of those dimensions.
        config: the :class:`~gradiend_core.trainer.PrePruneConfig` as a dict.
        source: the gradient that was averaged (``factual``, ``alternative`` or ``diff``).
        n_samples: examples averaged.
    """

    importance: np.ndarray
    kept: np.ndarray
    base_global_index: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    source: str = "alternative"
    n_samples: int = 0

    def kept_base_global(self) -> np.ndarray:
        """Base-global indices of the kept dimensions, int64 ``(k,)``."""
        return self.base_global_index[self.kept]

    def importance_for(self, base_global_index: np.ndarray) -> np.ndarray:
        """The gradient-mean importance of the given base-global dimensions.

        Args:
            base_global_index: int64 ``(d,)``, e.g. a checkpoint's
                ``param_map.base_global_index()``.

        Returns:
            float32 ``(d,)``; NaN for dimensions pre-pruning did not measure.
        """
        g = np.asarray(base_global_index, dtype=np.int64)
        order = np.argsort(self.base_global_index, kind="stable")
        sorted_g = self.base_global_index[order]
        pos = np.searchsorted(sorted_g, g)
        pos_c = np.minimum(pos, sorted_g.size - 1)
        found = sorted_g[pos_c] == g
        out = np.full(g.shape, np.nan, dtype=np.float32)
        out[found] = self.importance[order[pos_c[found]]]
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "importance": torch.from_numpy(np.ascontiguousarray(self.importance, dtype=np.float32)),
            "kept": torch.from_numpy(np.array(self.kept, dtype=np.int64)),  # a copy: index sets may be read-only
        }
        return _with_index(out, self.base_global_index)

    def header(self) -> dict[str, str]:
        return {
            "format": PRE_PRUNE_FORMAT,
            "config": json.dumps(self.config),
            "source": self.source,
            "n_samples": str(int(self.n_samples)),
        }


@dataclass
class ValidationRecord:
    """Validation source gradients saved with a checkpoint.

    Attributes:
        gradients: float32 ``(m, input_dim)``.
        labels: float32 ``(m,)``, +1 for the first class and -1 for the second.
        base_global_index: int64 ``(input_dim,)`` of the columns.
        classes: the two class names.
        source: which gradient the rows are.
    """

    gradients: torch.Tensor
    labels: torch.Tensor
    base_global_index: np.ndarray
    classes: tuple[str, str] = ("positive", "negative")
    source: str = "alternative"

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "gradients": self.gradients.detach().to(torch.float32).contiguous(),
            "labels": self.labels.detach().to(torch.float32).contiguous(),
        }
        return _with_index(out, self.base_global_index)

    def header(self) -> dict[str, str]:
        return {"format": VALIDATION_FORMAT, "classes": json.dumps(list(self.classes)), "source": self.source}

    def restricted(self, base_global_index: np.ndarray) -> ValidationRecord:
        """The record on the columns of the given base-global dimensions (a subset of its own).

        Raises:
            CheckpointError: when some dimension is not among the record's columns.
        """
        cols = align_columns(self.base_global_index, base_global_index, VALIDATION_FILE)
        return ValidationRecord(
            self.gradients[:, torch.from_numpy(cols)],
            self.labels,
            np.asarray(base_global_index, dtype=np.int64),
            self.classes,
            self.source,
        )


def _with_index(tensors: dict[str, torch.Tensor], base_global_index: np.ndarray) -> dict[str, torch.Tensor]:
    """Add ``base_global_index`` unless it is ``0..n-1`` (an unpruned space; 8 bytes a dimension saved)."""
    g = np.asarray(base_global_index, dtype=np.int64)
    if not np.array_equal(g, np.arange(g.size, dtype=np.int64)):
        tensors["base_global_index"] = torch.from_numpy(np.ascontiguousarray(g))
    return tensors


def _index(tensors: Mapping[str, torch.Tensor], path: Path, n: int) -> np.ndarray:
    if "base_global_index" not in tensors:
        return np.arange(n, dtype=np.int64)
    return _need(tensors, "base_global_index", path, torch.int64, 1).numpy()


def align_columns(have: np.ndarray, want: np.ndarray, what: str) -> np.ndarray:
    """Positions in ``have`` of each base-global index in ``want`` (int64 ``(len(want),)``).

    Raises:
        CheckpointError: when ``want`` holds indices that ``have`` lacks.
    """
    have = np.asarray(have, dtype=np.int64)
    want = np.asarray(want, dtype=np.int64)
    if have.shape == want.shape and np.array_equal(have, want):
        return np.arange(want.size, dtype=np.int64)
    order = np.argsort(have, kind="stable")
    sorted_have = have[order]
    pos = np.minimum(np.searchsorted(sorted_have, want), max(sorted_have.size - 1, 0))
    found = sorted_have[pos] == want if sorted_have.size else np.zeros(want.shape, dtype=bool)
    if not found.all():
        raise CheckpointError(
            f"{what} covers {have.size} input dimensions but {int((~found).sum())} of the model's {want.size} are not "
            "among them; it belongs to another (differently pruned) model of this base."
        )
    return order[pos]


# ------------------------------------------------------------------------------------ read
def _read_safetensors(path: Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({e}); re-run the training to rewrite it."
        ) from e
    if meta.get("format") != expected_format:
        raise CheckpointError(
            f"{path}: header format is {meta.get('format')!r}, expected {expected_format!r}; the file was not written "
            "by gradiend_core.trainer."
        )
    return tensors, meta


def _need(tensors: Mapping[str, torch.Tensor], key: str, path: Path, dtype: torch.dtype, ndim: int) -> torch.Tensor:
    t = tensors.get(key)
    if t is None:
        raise CheckpointError(f"{path}: tensor {key!r} is missing.")
    if t.dtype != dtype or t.ndim != ndim:
        raise CheckpointError(
            f"{path}: tensor {key!r} must be {dtype} with {ndim} dimension(s), got {t.dtype} {tuple(t.shape)}."
        )
    return t


def load_pre_prune_record(checkpoint_dir: PathLike) -> PrePruneRecord | None:
    """Read ``pre_prune.safetensors`` of a checkpoint (or experiment) directory.

    Returns:
        The :class:`PrePruneRecord`, or ``None`` when the run did not pre-prune.

    Raises:
        CheckpointError: for a malformed file (missing tensor, wrong dtype, indices out of range).
    """
    path = resolve_checkpoint_dir(checkpoint_dir) / PRE_PRUNE_FILE
    if not path.is_file():
        return None
    tensors, meta = _read_safetensors(path, PRE_PRUNE_FORMAT)
    imp = _need(tensors, "importance", path, torch.float32, 1).numpy()
    kept = _need(tensors, "kept", path, torch.int64, 1).numpy()
    bgi = _index(tensors, path, imp.size)
    if bgi.size != imp.size:
        raise CheckpointError(f"{path}: base_global_index has {bgi.size} entries but importance has {imp.size}.")
    if kept.size and (kept.min() < 0 or kept.max() >= imp.size or np.any(np.diff(kept) <= 0)):
        raise CheckpointError(f"{path}: kept must be sorted unique indices in [0, {imp.size}).")
    try:
        config = json.loads(meta.get("config", "{}"))
    except json.JSONDecodeError:
        config = {}
    try:
        n_samples = int(meta.get("n_samples", 0))
    except ValueError as e:
        raise CheckpointError(f"{path}: header n_samples must be an integer, got {meta.get('n_samples')!r}.") from e
    return PrePruneRecord(imp, kept, bgi, config, meta.get("source", "alternative"), n_samples)


def load_validation_record(checkpoint_dir: PathLike) -> ValidationRecord | None:
    """Read ``validation_gradients.safetensors`` of a checkpoint (or experiment) directory.

    Returns:
        The :class:`ValidationRecord`, or ``None`` when the run saved none.

    Raises:
        CheckpointError: for a malformed file.
    """
    path = resolve_checkpoint_dir(checkpoint_dir) / VALIDATION_FILE
    if not path.is_file():
        return None
    tensors, meta = _read_safetensors(path, VALIDATION_FORMAT)
    grads = _need(tensors, "gradients", path, torch.float32, 2)
    labels = _need(tensors, "labels", path, torch.float32, 1)
    bgi = _index(tensors, path, int(grads.shape[1]))
    if labels.numel() != grads.shape[0] or bgi.size != grads.shape[1]:
        raise CheckpointError(
            f"{path}: gradients {tuple(grads.shape)}, labels {tuple(labels.shape)} and base_global_index "
            f"{bgi.shape} do not fit together."
        )
    try:
        classes = tuple(json.loads(meta.get("classes", '["positive", "negative"]')))
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: header 'classes' is not a JSON list ({e}).") from e
    return ValidationRecord(grads, labels, bgi, classes, meta.get("source", "alternative"))  # type: ignore[arg-type]
