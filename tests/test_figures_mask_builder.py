"""Pure figure helpers of mask building: cell targets on heatmaps and reading chart selections."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.figures.mask_panel import PICK_TRACE, add_pick_targets, picked_cells, picked_indices


def _heatmap(z, custom=None):
    rows, cols = len(z), len(z[0])
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"c{j}" for j in range(cols)],
            y=[f"r{i}" for i in range(rows)],
            customdata=custom,
            hovertemplate="%{y}, %{x}: %{z:.1f} (%{customdata[0]})<extra></extra>",
        )
    )
    return fig


def test_targets_sit_on_every_filled_cell_with_hover_and_indices():
    z = [[1.0, np.nan, 3.0], [4.0, 5.0, np.nan]]
    custom = np.arange(6).reshape(2, 3, 1) * 10
    fig = add_pick_targets(_heatmap(z, custom))
    hm, targets = fig.data
    assert targets.name == PICK_TRACE and hm.hoverinfo == "skip"
    filled = [(0, 0), (0, 2), (1, 0), (1, 1)]
    assert list(zip(targets.y, targets.x)) == [(f"r{r}", f"c{c}") for r, c in filled]
    # customdata: the cell's own entries, then z, then row and column
    assert [list(cd) for cd in targets.customdata] == [[10 * (3 * r + c), z[r][c], r, c] for r, c in filled]
    # the heatmap's hover moved to the targets, %{z} read from the customdata entry that holds z
    assert "%{customdata[1]:.1f}" in targets.hovertemplate and "%{z" not in targets.hovertemplate
    assert fig.layout.hoverdistance == -1
    # unselected targets are invisible, selected ones outlined
    assert targets.marker.opacity == 0 and targets.selected.marker.opacity == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.data())
def test_selected_targets_read_back_as_their_cells(rows, cols, data):
    z = np.arange(rows * cols, dtype=float).reshape(rows, cols)
    fig = add_pick_targets(_heatmap(z.tolist()))
    targets = fig.data[1]
    chosen = data.draw(st.lists(st.integers(0, rows * cols - 1), unique=True, max_size=rows * cols))
    # what Streamlit reports for selected points: curve and point numbers with their customdata
    points = [{"curve_number": 1, "point_number": i, "customdata": list(targets.customdata[i])} for i in chosen]
    # a click on another trace (no cell indices in its customdata) is ignored
    points.append({"curve_number": 0, "point_number": 0, "x": "c0", "y": "r0"})
    assert picked_cells({"selection": {"points": points}}) == sorted((i // cols, i % cols) for i in chosen)


def test_picked_indices_of_bars_and_dots():
    sel = {
        "points": [
            {"curve_number": 0, "point_number": 3, "customdata": 3},
            {"curve_number": 5, "point_number": 0, "customdata": [1]},
            {"curve_number": 1, "point_number": 7},  # grey background dot: no pattern
            {"curve_number": 0, "point_number": 3, "customdata": 3},
        ]
    }
    assert picked_indices(sel) == [1, 3]
    assert picked_indices(None) == [] and picked_cells(None) == []
