"""Figure of model against model (view "Compare models")."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboard.figures.overlap import VALUES, overlap_heatmap
from gradiend_core.analysis.models import ModelOverlap

__all__ = ["model_overlap_heatmap"]

#: Top margin (px) that keeps a two-line title clear of the chart's toolbar (modebar), which
#: Streamlit draws over the figure's top-right corner.
TOP_MARGIN = 104
#: Height (px) of that toolbar: the title starts below it.
TOOLBAR_HEIGHT = 36


def model_overlap_heatmap(result: ModelOverlap, part: str, value: str = "intersection") -> go.Figure:
    """Pairwise top-k overlap of models in base-global index space.

    Args:
        result: from :func:`gradiend_core.analysis.models.model_overlap`.
        part: the importance part every model ranked by.
        value: ``"intersection"`` (dims, the default: it reads right whatever the set sizes),
            ``"jaccard"`` or ``"overlap"`` (% of the smaller set, the reference heatmap's
            percentages; 23 dims inside 4,461 read 100 %).

    Returns:
        The :func:`dashboard.figures.overlap.overlap_heatmap` of ``result.overlap``: trace 0's
        ``z`` is the chosen value, rows and columns in ``result.overlap.names`` order; the row
        tick labels (``yaxis.ticktext``) add each model's set size |A| in dims; a short title with
        the details on a second line, below the toolbar.
    """
    topk = result.topk
    what = f"top {topk:g} of each model's input dims" if isinstance(topk, float) else f"top {topk:,} dims of each model"
    names = list(result.overlap.names)
    sizes = [f"{n}<br>|A| = {int(s):,} dims" for n, s in zip(names, result.overlap.sizes)]
    fig = overlap_heatmap(result.overlap, value, axis_title="model")
    fig.update_yaxes(tickvals=names, ticktext=sizes)
    fig.update_layout(
        title=dict(
            text=f"Top-k overlap of models: {VALUES[value][0]}<br><sup>{what}, ranked by {part}; "
            "base-global index space</sup>",
            x=0,
            xanchor="left",
            yref="container",
            y=1,
            yanchor="top",
            pad=dict(t=TOOLBAR_HEIGHT, l=10),
        ),
        margin=dict(t=TOP_MARGIN),
    )
    return fig
