"""Figure of where kept dims sit in the base model (view "Where in the model")."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout
from dashboard.figures.style import HEATMAP_SCALE
from gradiend_core.analysis.locate import LayerComponentGrid
from gradiend_core.util.units import format_percent

__all__ = ["METRICS", "grid_values", "layer_component_heatmap"]

#: metric -> (what z is, colour-bar title, text format)
METRICS = {
    "share of kept importance": ("kept_importance_share", "share of kept importance (%)", ".1%"),
    "kept dims": ("kept", "kept dims (count)", ",d"),
    "kept / in input": ("kept_fraction", "kept / dims in input space (%)", ".1%"),
}


def grid_values(grid: LayerComponentGrid, metric: str) -> np.ndarray:
    """The ``(layers, components)`` matrix a heatmap shows for ``metric`` (see :data:`METRICS`);
    float64, ``nan`` where the model has no such parameter.

    Raises:
        ValueError: for an unknown metric.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    z = np.asarray(getattr(grid, METRICS[metric][0]), dtype=np.float64)
    return np.where(grid.n_params > 0, z, np.nan)


def _cell(value: float, fmt: str) -> str:
    if not np.isfinite(value):
        return ""
    return f"{int(value):,}" if fmt == ",d" else format_percent(float(value))


def layer_component_heatmap(grid: LayerComponentGrid, metric: str, part: str) -> go.Figure:
    """Layer x component heatmap of a selection.

    Args:
        grid: from :func:`gradiend_core.analysis.locate.layer_component_grid`.
        metric: a key of :data:`METRICS`.
        part: the importance part, for the title.

    Returns:
        A figure with one heatmap trace: rows = ``grid.layers`` (``"-"`` = outside the blocks,
        at the top), columns = ``grid.components``, ``z`` = :func:`grid_values`; hover shows kept
        and in-input dims, kept share and parameter count of the cell.
    """
    z = grid_values(grid, metric)
    _, bar, fmt = METRICS[metric]
    share = grid.kept_importance_share
    # cell texts by the page's share rule (format_percent: 100 % only when all is kept)
    text = [[_cell(v, fmt) for v in row] for row in z]
    hover = [
        [
            f"kept {int(grid.kept[i, j]):,} of {int(grid.in_input[i, j]):,} dims in input<br>"
            f"{format_percent(float(share[i, j]))} of the kept importance<br>{int(grid.n_params[i, j])} parameter(s)"
            for j in range(z.shape[1])
        ]
        for i in range(z.shape[0])
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=grid.components,
            y=[f"layer {layer}" if layer != "-" else "outside layers" for layer in grid.layers],
            colorscale=HEATMAP_SCALE,
            text=text,
            texttemplate="%{text}",
            hovertext=hover,
            hoverongaps=False,
            colorbar=dict(title=dict(text=bar, side="right"), tickformat=fmt.replace(",d", ",")),
            hovertemplate="%{y}, %{x}<br>%{hovertext}<extra></extra>",
        )
    )
    fig.update_layout(
        **base_layout(
            "Kept dims by layer and component",
            height=max(360, 140 + 34 * len(grid.layers)),
            subtitle=f"{metric}, ranked by {part}",
        ),
        xaxis=dict(title="component (parsed from the parameter name)", tickangle=-30),
        yaxis=dict(title="layer (block number)", autorange="reversed"),
    )
    return fig
