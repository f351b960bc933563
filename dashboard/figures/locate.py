"""Figure of where kept dims sit in the base model (view "Where in the model")."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from gradiend_core.analysis.locate import LayerComponentGrid
from dashboard.figures.common import base_layout
from dashboard.figures.style import HEATMAP_SCALE

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
    custom = np.stack([grid.kept, grid.in_input, np.nan_to_num(grid.kept_importance_share), grid.n_params], axis=-1)
    fig = go.Figure(
        go.Heatmap(
            z=z, x=grid.components, y=[f"layer {l}" if l != "-" else "outside layers" for l in grid.layers],
            colorscale=HEATMAP_SCALE, texttemplate=f"%{{z:{fmt}}}", customdata=custom, hoverongaps=False,
            colorbar=dict(title=dict(text=bar, side="right"), tickformat=fmt.replace(",d", ",")),
            hovertemplate="%{y}, %{x}<br>kept %{customdata[0]:,} of %{customdata[1]:,} dims in input"
            "<br>%{customdata[2]:.2%} of the kept importance<br>%{customdata[3]} parameter(s)<extra></extra>",
        )
    )
    fig.update_layout(
        **base_layout("Kept dims by layer and component", height=max(360, 140 + 34 * len(grid.layers)),
                      subtitle=f"{metric}, ranked by {part}"),
        xaxis=dict(title="component (parsed from the parameter name)", tickangle=-30),
        yaxis=dict(title="layer (block number)", autorange="reversed"),
    )
    return fig
