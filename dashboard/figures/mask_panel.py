"""Figures for building a mask by pointing: clickable heatmap cells, reading a chart's selection,
and the preview of a mask by layer and component.

Why the overlay: Plotly's click and box selection (what ``st.plotly_chart(on_select=...)``
reports) only selects points of traces that implement point selection (scatter, bar, ...); a
heatmap has none, so a click on a heatmap cell reports an empty selection. :func:`add_pick_targets`
lays one invisible square marker on the centre of every filled cell; a click anywhere in the
plot selects the nearest cell (``hoverdistance=-1``), shift-click adds cells, and the box tool
selects every cell whose centre it covers. The selected cells get an outline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import OKABE_ITO
from dashboard.figures.where_in_model import layer_component_heatmap
from gradiend_core.analysis.locate import LayerComponentGrid

__all__ = [
    "PICK_TRACE",
    "add_pick_targets",
    "mask_preview_heatmap",
    "picked_cells",
    "picked_indices",
]

#: Name of the trace of cell targets :func:`add_pick_targets` adds.
PICK_TRACE = "cell targets"
_HINT = "<br><i>click: pick this cell; shift-click or box select: more</i>"


def add_pick_targets(fig: go.Figure, trace: int = 0, size: int = 22) -> go.Figure:
    """Make the cells of a heatmap trace selectable (see the module docstring).

    Args:
        fig: a figure whose trace ``trace`` is a ``go.Heatmap`` with ``x``, ``y`` and ``z``
            (``z`` NaN where there is no cell, e.g. no such parameter).
        trace: index of the heatmap trace.
        size: marker size in px of a selected cell's outline.

    Returns:
        ``fig``, changed in place: the heatmap no longer shows hover labels; a scatter trace
        named :data:`PICK_TRACE` has one point per finite cell, row-major, with the heatmap's
        hover text and ``customdata`` = the cell's own customdata entries, then ``z``, then the
        row and column index (the last two entries, read by :func:`picked_cells`).
    """
    hm = fig.data[trace]
    z = np.asarray(hm.z, dtype=np.float64)
    xs, ys = list(hm.x), list(hm.y)
    if hm.customdata is None:
        custom = np.empty(z.shape + (0,), dtype=object)
    else:
        custom = np.asarray(hm.customdata, dtype=object)
    if custom.ndim == 2:
        custom = custom[..., None]
    rows, cols = np.nonzero(np.isfinite(z))
    data = [[_plain(v) for v in custom[r, c]] + [float(z[r, c]), int(r), int(c)] for r, c in zip(rows, cols)]
    n = custom.shape[-1]
    template = hm.hovertemplate or "%{y}, %{x}: %{z}<extra></extra>"
    template = template.replace("%{z", f"%{{customdata[{n}]").replace("<extra></extra>", _HINT + "<extra></extra>")
    fig.add_scatter(
        x=[xs[c] for c in cols],
        y=[ys[r] for r in rows],
        customdata=data,
        mode="markers",
        name=PICK_TRACE,
        marker=dict(symbol="square-open", size=size, color=OKABE_ITO["vermillion"], opacity=0, line=dict(width=3)),
        selected=dict(marker=dict(opacity=1)),
        unselected=dict(marker=dict(opacity=0)),
        hovertemplate=template,
        showlegend=False,
    )
    hm.update(hoverinfo="skip", hovertemplate=None)
    fig.update_layout(hoverdistance=-1)
    return fig


def _plain(v: Any) -> Any:
    # numpy scalars are not JSON-serialisable by every Plotly path; plain Python values are
    if isinstance(v, np.generic):
        return v.item()
    return v


def _points(selection: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not selection:
        return []
    sel = selection.get("selection", selection)
    return list(sel.get("points") or [])


def picked_cells(selection: Mapping[str, Any] | None) -> list[tuple[int, int]]:
    """The ``(row, column)`` cells picked on a figure made with :func:`add_pick_targets`.

    Args:
        selection: what ``st.plotly_chart(..., on_select="rerun")`` returns (or its
            ``"selection"`` entry): points carry ``customdata`` ending in row and column.

    Returns:
        Sorted distinct cells; points of other traces (no such customdata) are ignored.
    """
    cells = set()
    for p in _points(selection):
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)) and len(cd) >= 2 and all(isinstance(v, (int, float)) for v in cd[-2:]):
            cells.add((int(cd[-2]), int(cd[-1])))
    return sorted(cells)


def picked_indices(selection: Mapping[str, Any] | None) -> list[int]:
    """Sorted distinct integer ``customdata`` of the selected points (e.g. the UpSet pattern row
    of a bar or of a dot column); points without an integer ``customdata`` are ignored."""
    out = set()
    for p in _points(selection):
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)) and len(cd) == 1:
            cd = cd[0]
        if isinstance(cd, (int, float)) and not isinstance(cd, bool) and float(cd).is_integer():
            out.add(int(cd))
    return sorted(out)


def mask_preview_heatmap(grid: LayerComponentGrid, kept: int, input_dim: int) -> go.Figure:
    """Layer x component heatmap of the dims a mask keeps on its own (before threshold and topk).

    Args:
        grid: the mask's grid (:func:`gradiend_core.analysis.locate.layer_component_grid` of the
            breakdown of the mask alone).
        kept, input_dim: dims the mask keeps and the model's input_dim, for the title.

    Returns:
        :func:`dashboard.figures.where_in_model.layer_component_heatmap` with metric "kept dims" and a
        title that says what is shown, with cell targets (:func:`add_pick_targets`).
    """
    fig = layer_component_heatmap(grid, "kept dims", "the mask")
    # counts only: the mask step ranks nothing, so there is no kept importance to show
    fig.update_traces(
        hovertemplate="%{y}, %{x}<br>the mask keeps %{customdata[0]:,} of %{customdata[1]:,} dims in input"
        "<br>%{customdata[3]} parameter(s)<extra></extra>",
        selector=dict(type="heatmap"),
    )
    fig.update_layout(
        title=dict(
            text=f"Kept by the mask alone: {kept:,} of {input_dim:,} input dims"
            "<br><sup>before threshold and topk; click or box-select cells to pick them</sup>"
        ),
        margin=dict(t=90),
    )
    return add_pick_targets(fig)
