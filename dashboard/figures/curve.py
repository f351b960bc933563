"""Figure of the pruning curve (view "Pruning curve"): encoder quality against kept dims, per part."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, log_axis
from dashboard.figures.style import CUT_COLOR, OKABE_ITO, SEQUENCE
from gradiend_core.curve.measures import Curve

__all__ = ["MEASURE_LABELS", "curve_figure"]

#: Axis label of each measure.
MEASURE_LABELS = {
    "label_correlation": "label correlation (Pearson r)",
    "separation": "class separation (Cohen's d)",
    "agreement": "agreement with all dims (Pearson r)",
}


def curve_figure(
    curves: Sequence[Curve],
    measure: str = "label_correlation",
    *,
    selection_k: int | None = None,
    selection_part: str | None = None,
    masked_point: tuple[int, float] | None = None,
    target: float | None = None,
    subtitle: str = "",
) -> go.Figure:
    """The measure of each part's curve against the kept dims ``k``, log x axis.

    Args:
        curves: one :class:`~gradiend_core.curve.measures.Curve` per part (same checkpoint).
        measure: ``label_correlation``, ``separation`` or ``agreement`` (latent unit 0).
        selection_k: the current selection's ``k``: a vertical line, and a marker on every curve
            that has that point.
        selection_part: the part the current selection ranks by (its marker is larger).
        masked_point: ``(k, value)`` of a selection that is not a top-k of any part (a mask is
            in effect), drawn as its own marker.
        target: a horizontal line at this value (e.g. 99 % of the full model's correlation).
        subtitle: second title line (where the gradients come from).

    Returns:
        A figure whose first ``len(curves)`` traces are the curves in order (``x`` = ``k``,
        ``y`` = the measure, ``customdata`` = ``k / input_dim``), then the selection markers.
    """
    fig = go.Figure()
    n = max((c.input_dim for c in curves), default=1)
    for i, c in enumerate(curves):
        color = SEQUENCE[i % len(SEQUENCE)]
        y = getattr(c, measure)[:, 0]
        fig.add_scatter(
            x=c.ks,
            y=y,
            mode="lines+markers",
            name=c.part,
            line=dict(color=color, width=2),
            marker=dict(size=5, color=color, symbol=["circle" if r else "circle-open" for r in c.requested]),
            customdata=c.ks / c.input_dim,
            hovertemplate=(
                f"{c.part}<br>top %{{x:,}} dims (%{{customdata:.4%}})<br>"
                f"{measure.replace('_', ' ')} %{{y:.4f}}<extra></extra>"
            ),
        )
    if selection_k is not None:
        fig.add_vline(x=selection_k, line_color=CUT_COLOR, line_dash="dash", line_width=1)
        for i, c in enumerate(curves):
            hit = np.flatnonzero(c.ks == selection_k)
            if hit.size == 0:
                continue
            big = c.part == selection_part
            fig.add_scatter(
                x=[selection_k],
                y=[getattr(c, measure)[hit[0], 0]],
                mode="markers",
                name=f"current selection, {c.part}" if big else f"top {selection_k:,} by {c.part}",
                showlegend=big,
                marker=dict(
                    size=14 if big else 9,
                    symbol="x",
                    color=SEQUENCE[i % len(SEQUENCE)],
                    line=dict(width=1, color="black"),
                ),
                hovertemplate=f"{'current selection' if big else 'same k'}: top {selection_k:,} by {c.part}"
                f"<br>{measure.replace('_', ' ')} %{{y:.4f}}<extra></extra>",
            )
    if masked_point is not None:
        fig.add_scatter(
            x=[masked_point[0]],
            y=[masked_point[1]],
            mode="markers",
            name="current selection (with mask)",
            marker=dict(size=14, symbol="x", color=OKABE_ITO["vermillion"], line=dict(width=1, color="black")),
            hovertemplate=f"current selection (mask): {masked_point[0]:,} dims<br>%{{y:.4f}}<extra></extra>",
        )
    if target is not None and np.isfinite(target):
        fig.add_hline(
            y=target,
            line_color=OKABE_ITO["grey"],
            line_dash="dot",
            line_width=1,
            annotation_text=f"target {target:.4g}",
            annotation_position="top left",
        )
    fig.update_layout(
        **base_layout("Encoder quality vs kept dims", height=480, subtitle=subtitle),
        xaxis=log_axis("kept dims k (top-k of the part, log scale)") | dict(range=[-0.05, np.log10(n) + 0.05]),
        yaxis=dict(title=MEASURE_LABELS.get(measure, measure)),
    )
    # the legend sits below the plot area (base_layout), where it cannot cover a curve
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0))
    return fig
