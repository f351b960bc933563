"""Model against model: top-k overlap in base-global index space.

Semantics of the reference's ``plot_topk_overlap_heatmap`` (``gradiend`` 0.2.3,
``comparison.similarity._compute_topk_overlap_similarity_matrix``): every model takes its own
top-k of ``part`` (a float ``topk`` is a fraction of *its own* input_dim), the kept local indices
are mapped to base-global indices, and cell ``(i, j)`` is ``|A_i & A_j|``; its percentages divide
by ``min(|A_i|, |A_j|)``. Base-global indices do not change when a model is pruned, so a
pre-pruned and an unpruned model of one base compare correctly - but only models whose
param_maps list the same parameters with the same shapes share that space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..ranking.ranking import Ranking
from ..selection.rule import select
from ..space.coords import base_global_of
from ..space.param_map import ParamMap
from ..space.signature import BaseSignature, base_signature, compatibility_problems
from .overlap import OverlapMatrix, overlap_matrix

__all__ = [
    "ModelOverlap",
    "global_topk",
    "model_overlap",
]


def global_topk(param_map: ParamMap, ranking: Ranking, topk: object) -> np.ndarray:
    """Sorted base-global indices (int64) of a model's top-k by the one selection rule."""
    return base_global_of(param_map, select(ranking, topk=topk).keep)


@dataclass(frozen=True)
class ModelOverlap:
    """Top-k overlap of models in base-global space.

    Attributes:
        overlap: the :class:`OverlapMatrix` (``names`` are the model labels).
        input_dims: int64 ``(m,)``, each model's input_dim (the space its topk was taken from).
        topk: the topk every model used.
    """

    overlap: OverlapMatrix
    input_dims: np.ndarray
    topk: object


def model_overlap(
    models: Mapping[str, tuple[ParamMap, Ranking]],
    topk: object,
    signatures: Mapping[str, BaseSignature] | None = None,
) -> ModelOverlap:
    """Pairwise top-k overlap of models of one base model.

    Args:
        models: ``{label: (param_map, ranking of the chosen part)}``, two or more.
        topk: int >= 1 or float in (0, 1], applied to each model's own input space.
        signatures: optional precomputed signatures; checked to be compatible.

    Returns:
        A :class:`ModelOverlap`.

    Raises:
        ValueError: for fewer than two models, or models whose param_maps (names and shapes)
            differ - the message says which, see :func:`compatibility_problems`.
        SelectionError: for an invalid ``topk``.
    """
    if len(models) < 2:
        raise ValueError("compare at least two models.")
    sigs = signatures or {k: base_signature(pm, {}) for k, (pm, _) in models.items()}
    mismatch = [p.message for p in compatibility_problems(sigs) if p.kind == "params"]
    if mismatch:
        raise ValueError("models do not share one base-global index space: " + " ".join(mismatch))
    universe = next(iter(models.values()))[0].unpruned_length
    sets: dict[str, np.ndarray] = {k: global_topk(pm, r, topk) for k, (pm, r) in models.items()}
    dims = np.array([pm.input_dim for pm, _ in models.values()], dtype=np.int64)
    return ModelOverlap(overlap_matrix(sets, universe), dims, topk)
