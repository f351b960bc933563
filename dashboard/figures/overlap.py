"""Heatmap of pairwise set overlap (parts of one model, or models of one base)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout
from dashboard.figures.style import HEATMAP_SCALE
from gradiend_core.analysis.overlap import OverlapMatrix
from gradiend_core.util.units import format_fraction, format_percent

__all__ = ["VALUES", "overlap_heatmap"]

#: value -> (colour-bar title, number format, z range); cell text follows :func:`_cell_text`
VALUES = {
    "jaccard": ("Jaccard |A∩B| / |A∪B|", ".3f", (0.0, 1.0)),
    "intersection": ("|A∩B| (dims)", ",d", None),
    "overlap": ("|A∩B| / min(|A|, |B|) (%)", ".1f", (0.0, 100.0)),
}


def overlap_values(overlap: OverlapMatrix, value: str) -> np.ndarray:
    """The matrix a heatmap shows: Jaccard in [0, 1], intersection counts, or overlap in %.

    Raises:
        ValueError: for an unknown ``value``.
    """
    if value == "jaccard":
        return overlap.jaccard
    if value == "intersection":
        return overlap.intersection.astype(np.int64)
    if value == "overlap":
        return overlap.overlap_fraction * 100.0
    raise ValueError(f"value must be one of {', '.join(VALUES)}; got {value!r}.")


def _cell_text(overlap: OverlapMatrix, value: str) -> list:
    """Cell labels by the page's share rule: 100 % (or a Jaccard of 1) only for identical sets."""
    if value == "jaccard":
        return [[format_fraction(float(v)) for v in row] for row in overlap.jaccard]
    if value == "overlap":
        return [[format_percent(float(v)) for v in row] for row in overlap.overlap_fraction]
    return [[f"{int(v):,}" for v in row] for row in overlap.intersection]


def overlap_heatmap(
    overlap: OverlapMatrix,
    value: str = "jaccard",
    title: str | None = None,
    axis_title: str = "part",
    labels: Sequence[str] | None = None,
) -> go.Figure:
    """Pairwise overlap of named sets as an annotated heatmap.

    Args:
        overlap: from :func:`gradiend_core.analysis.overlap.overlap_matrix`.
        value: ``"jaccard"``, ``"intersection"`` or ``"overlap"`` (see :func:`overlap_values`).
        title: figure title (a default names the value).
        axis_title: what the rows and columns are (``"part"``, ``"model"``).
        labels: tick labels (default ``overlap.names``).

    Returns:
        A figure with one heatmap trace: ``z`` = :func:`overlap_values`, rows and columns in
        ``overlap.names`` order (row 0 at the top); hover shows |A|, |B|, |A∩B|, Jaccard, overlap.
    """
    bar, _, zrange = VALUES.get(value, (None, None, None))
    z = overlap_values(overlap, value)
    names = list(labels or overlap.names)
    m = len(names)
    hover = [
        [
            f"{names[i]} vs {names[j]}<br>|A| = {int(overlap.sizes[i]):,} dims, |B| = {int(overlap.sizes[j]):,} dims"
            f"<br>|A∩B| = {int(overlap.intersection[i, j]):,} dims"
            f"<br>Jaccard = {format_fraction(float(overlap.jaccard[i, j]))}"
            f"<br>overlap = {format_percent(float(overlap.overlap_fraction[i, j]))} of the smaller set"
            for j in range(m)
        ]
        for i in range(m)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale=HEATMAP_SCALE,
            zmin=zrange[0] if zrange else None,
            zmax=zrange[1] if zrange else None,
            text=_cell_text(overlap, value),
            texttemplate="%{text}",
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
            colorbar=dict(title=dict(text=bar, side="right")),
        )
    )
    fig.update_layout(
        **base_layout(title or f"Top-k overlap: {bar}", height=max(380, 110 + 70 * m)),
        xaxis=dict(title=axis_title, side="bottom"),
        yaxis=dict(title=axis_title, autorange="reversed"),
    )
    return fig
