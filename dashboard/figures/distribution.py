"""Figures of one part's importance distribution."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import plotly.graph_objects as go

from gradiend_core.distribution import LogHistogram
from dashboard.figures.style import CUT_COLOR, DROPPED_COLOR, KEPT_COLOR


def _power_ticks(lo: float, hi: float):
    start, stop = math.floor(lo), math.ceil(hi)
    step = max(1, (stop - start) // 10 + (1 if (stop - start) > 10 else 0))
    vals = list(range(start, stop + 1, step))
    return vals, [f"1e{v}" for v in vals]


def importance_histogram(hist: LogHistogram, part: str, cut: Optional[float] = None, title: Optional[str] = None) -> go.Figure:
    """Histogram of importance on a log x axis: kept dims in orange, dropped in blue.

    Args:
        hist: from :func:`gradiend_core.distribution.log_histogram`.
        part: importance source, for labels.
        cut: smallest kept importance (drawn as a vertical line), or ``None``.
        title: figure title (a default names the part and the zero count).

    Returns:
        A figure with two bar traces (``kept``, ``dropped``) whose y values are dims per bin,
        and x values are bin centres in log10(importance).
    """
    x = hist.centers
    dropped = hist.counts - hist.kept_counts
    hover = [
        f"importance {10 ** a:.3g} to {10 ** b:.3g}" for a, b in zip(hist.log_edges[:-1], hist.log_edges[1:])
    ]
    fig = go.Figure()
    fig.add_bar(
        x=x, y=dropped, width=hist.width, name="dropped", marker_color=DROPPED_COLOR,
        customdata=hover, hovertemplate="%{customdata}<br>%{y:,} dims dropped<extra></extra>",
    )
    fig.add_bar(
        x=x, y=hist.kept_counts, width=hist.width, name="kept", marker_color=KEPT_COLOR,
        customdata=hover, hovertemplate="%{customdata}<br>%{y:,} dims kept<extra></extra>",
    )
    if cut is not None and np.isfinite(cut) and cut > 0:
        fig.add_vline(
            x=math.log10(cut), line_color=CUT_COLOR, line_dash="dash",
            annotation_text=f"cut {cut:.3g}", annotation_position="top left",
        )
    vals, text = _power_ticks(float(hist.log_edges[0]), float(hist.log_edges[-1]))
    notes = []
    if hist.n_zero:
        notes.append(f"{hist.n_zero:,} dims with importance 0 not shown")
    if hist.n_nonfinite:
        notes.append(f"{hist.n_nonfinite:,} NaN/Inf not shown")
    fig.update_layout(
        title=title or f"{part} importance ({hist.n_total:,} dims)" + (f" - {'; '.join(notes)}" if notes else ""),
        barmode="stack",
        bargap=0,
        xaxis=dict(title=f"{part} importance (log scale)", tickvals=vals, ticktext=text),
        yaxis=dict(title="input dims per bin", type="log" if hist.counts.max(initial=0) > 1000 else "linear"),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        margin=dict(l=60, r=20, t=70, b=50),
        height=380,
    )
    return fig
