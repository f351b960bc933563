"""Heatmap of pairwise set overlap (parts of one model, or models of one base)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from gradiend_core.analysis.overlap import OverlapMatrix
from dashboard.figures.common import base_layout
from dashboard.figures.style import HEATMAP_SCALE

#: value -> (colour-bar title, text format, z range)
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


def overlap_heatmap(
    overlap: OverlapMatrix,
    value: str = "jaccard",
    title: Optional[str] = None,
    axis_title: str = "part",
    labels: Optional[Sequence[str]] = None,
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
    bar, fmt, zrange = VALUES.get(value, (None, None, None))
    z = overlap_values(overlap, value)
    names = list(labels or overlap.names)
    m = len(names)
    size_i = np.repeat(overlap.sizes[:, None], m, axis=1)
    size_j = np.repeat(overlap.sizes[None, :], m, axis=0)
    custom = np.stack([size_i, size_j, overlap.intersection, overlap.jaccard, overlap.overlap_fraction * 100], axis=-1)
    fig = go.Figure(
        go.Heatmap(
            z=z, x=names, y=names, colorscale=HEATMAP_SCALE, zmin=zrange[0] if zrange else None,
            zmax=zrange[1] if zrange else None, texttemplate=f"%{{z:{fmt}}}", customdata=custom,
            colorbar=dict(title=dict(text=bar, side="right")),
            hovertemplate="%{y} vs %{x}<br>|A| = %{customdata[0]:,} dims, |B| = %{customdata[1]:,} dims"
            "<br>|A∩B| = %{customdata[2]:,} dims<br>Jaccard = %{customdata[3]:.3f}"
            "<br>overlap = %{customdata[4]:.1f} % of the smaller set<extra></extra>",
        )
    )
    fig.update_layout(
        **base_layout(title or f"Top-k overlap: {bar}", height=max(380, 110 + 70 * m)),
        xaxis=dict(title=axis_title, side="bottom"),
        yaxis=dict(title=axis_title, autorange="reversed"),
    )
    return fig
