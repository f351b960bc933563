"""Figure of model against model (view "Compare models")."""

from __future__ import annotations

import plotly.graph_objects as go

from gradiend_core.analysis.models import ModelOverlap
from dashboard.figures.overlap import VALUES, overlap_heatmap


def model_overlap_heatmap(result: ModelOverlap, part: str, value: str = "overlap") -> go.Figure:
    """Pairwise top-k overlap of models in base-global index space.

    Args:
        result: from :func:`gradiend_core.analysis.models.model_overlap`.
        part: the importance part every model ranked by.
        value: ``"overlap"`` (% of the smaller set, the reference heatmap's percentages),
            ``"intersection"`` (dims) or ``"jaccard"``.

    Returns:
        The :func:`dashboard.figures.overlap.overlap_heatmap` of ``result.overlap``: trace 0's
        ``z`` is the chosen value, rows and columns in ``result.overlap.names`` order.
    """
    topk = result.topk
    what = f"top {topk:g} of each model's input dims" if isinstance(topk, float) else f"top {topk:,} dims of each model"
    title = f"Top-k overlap in base-global space ({what}, {part}): {VALUES[value][0]}"
    return overlap_heatmap(result.overlap, value, title=title, axis_title="model")
