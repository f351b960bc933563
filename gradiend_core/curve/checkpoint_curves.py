"""A checkpoint's pruning curves: its parts' importance, its encoder and evaluation gradients together.

:func:`checkpoint_curves` is what the CLI's ``curve`` command and the dashboard's "Pruning curve"
view call; the math is in :mod:`gradiend_core.curve.sums` and :mod:`gradiend_core.curve.measures`, the
gradients come from :mod:`gradiend_core.gradients.eval_gradients`.

The CLI's ``curve`` command (:mod:`gradiend_core.cli.curve`) prints them as CSV
(:func:`gradiend_core.curve.measures.curve_csv`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..checkpoint import CheckpointData
from ..checkpoint.files import PRE_PRUNE_FILE
from ..errors import SelectionError
from ..gradients.eval_gradients import EvalGradients
from ..ranking.importance import GRADIENT_MEAN, PARTS, source_importance
from .measures import Curve, Encoder, cut_quality
from .sums import DEFAULT_POINTS, pruning_curves

__all__ = ["available_parts", "checkpoint_curves", "importance_of", "selection_quality"]


def available_parts(data: CheckpointData) -> tuple:
    """The importance sources a curve can rank by: the four parts, and ``gradient-mean`` when the
    checkpoint has a pre-prune record."""
    return PARTS + ((GRADIENT_MEAN,) if (data.path / PRE_PRUNE_FILE).is_file() else ())


def importance_of(data: CheckpointData, part: str) -> np.ndarray:
    """float32 ``(input_dim,)`` importance of ``part`` (a weight part or ``gradient-mean``).

    Raises:
        CheckpointError: for ``gradient-mean`` without a pre-prune record.
        SelectionError: for an unknown part.
    """
    if part not in PARTS + (GRADIENT_MEAN,):
        raise SelectionError(f"part must be one of {', '.join(PARTS + (GRADIENT_MEAN,))}; got {part!r}.")
    return source_importance(data, part)


def checkpoint_curves(
    data: CheckpointData,
    gradients: EvalGradients,
    parts: Sequence[str] | None = None,
    *,
    points: int = DEFAULT_POINTS,
    selection_k: int | None = None,
    importances: dict[str, np.ndarray] | None = None,
) -> list[Curve]:
    """The pruning curve of each part of a checkpoint on the given gradients.

    Args:
        data: the checkpoint.
        gradients: from :func:`gradiend_core.gradients.eval_gradients.eval_gradients`.
        parts: importance sources (default: :func:`available_parts`).
        points: log-grid size.
        selection_k: a ``k`` computed exactly on every curve (the current selection).
        importances: precomputed importance by part (e.g. a dashboard's cached ones).

    Raises:
        SelectionError, CheckpointError: for unknown parts, shapes or k out of range.
    """
    parts = list(parts or available_parts(data))
    imps = {p: (importances or {}).get(p) for p in parts}
    imps = {p: v if v is not None else importance_of(data, p) for p, v in imps.items()}
    curves = pruning_curves(
        Encoder.of(data), gradients.gradients, gradients.labels, imps, points=points, selection_k=selection_k
    )
    return [curves[p] for p in parts]


def selection_quality(data: CheckpointData, keep: np.ndarray, gradients: EvalGradients) -> dict[str, object]:
    """What a cut keeps of the encoder's quality, ready for ``pruning.json`` (``cut_quality``).

    Pass it to :func:`gradiend_core.pruning.export.export_pruned` as ``cut_quality=``. Adds where the
    gradients came from (``gradients``, ``source``, ``split``, ``classes``) to the measures of
    :func:`gradiend_core.curve.measures.cut_quality`.
    """
    out = cut_quality(Encoder.of(data), gradients.gradients, gradients.labels, keep)
    out.update(
        {
            "gradients": gradients.origin,
            "source": gradients.source,
            "split": gradients.split,
            "classes": list(gradients.classes),
        }
    )
    return out
