"""Figures of one part's importance mass: ECDF and retained-mass curve (view "Distributions")."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, log_axis, percent_log_ticks, positive_range
from dashboard.figures.style import CUT_COLOR, DROPPED_COLOR, KEPT_COLOR, OKABE_ITO
from gradiend_core.analysis.mass import MassProfile
from gradiend_core.util.units import format_percent

__all__ = ["ecdf_figure", "retained_mass_figure"]

_SHARE_COLORS = (OKABE_ITO["green"], OKABE_ITO["purple"], OKABE_ITO["sky"], OKABE_ITO["grey"])


def ecdf_figure(profile: MassProfile, part: str, cut: float | None = None) -> go.Figure:
    """ECDF of a part's importance on a log x axis.

    Args:
        profile: from :func:`gradiend_core.analysis.mass.mass_profile`.
        part: the part's name, for labels.
        cut: smallest kept importance of the current selection (a dashed line named in the legend),
            or ``None`` (a mask alone, another part, or everything kept).

    Returns:
        A figure whose first trace ("ECDF") has ``x`` = ``profile.ecdf_x`` (importance values
        > 0: the upper edges of the occupied value buckets, at most ``max_points`` of them) and
        ``y`` = ``profile.ecdf_y``, the exact share of non-NaN dims with importance <= x; then
        the cut line when there is one.
    """
    fig = go.Figure()
    fig.add_scatter(
        x=profile.ecdf_x,
        y=profile.ecdf_y,
        mode="lines",
        name="ECDF",
        line=dict(color=DROPPED_COLOR, width=2),
        hovertext=[f"{format_percent(v)} of dims" for v in profile.ecdf_y],
        hovertemplate="%{hovertext} have importance ≤ %{x:.4g}<extra></extra>",
    )
    if cut is not None and np.isfinite(cut) and cut > 0:
        fig.add_scatter(
            x=[cut, cut],
            y=[0, 1],
            mode="lines",
            name=f"cut: importance ≥ {cut:.3g} kept",
            line=dict(color=CUT_COLOR, dash="dash", width=2),
            hovertemplate=f"cut at {cut:.4g}<extra></extra>",
        )
    notes = []
    if profile.n_zero:
        notes.append(f"{profile.n_zero:,} zeros")
    if profile.n_nan or profile.n_inf:
        notes.append(f"{profile.n_nan + profile.n_inf:,} NaN/Inf")
    hidden = f"; not on the axis: {', '.join(notes)}" if notes else ""
    fig.update_layout(
        **base_layout(
            f"ECDF of {part} importance",
            subtitle=f"{profile.n_valid:,} dims, exact at {profile.ecdf_x.size:,} values{hidden}",
        ),
        xaxis=log_axis(f"{part} importance (log scale)", *positive_range(profile.ecdf_x)),
        yaxis=dict(title="share of dims with importance ≤ x (%)", tickformat=".0%", range=[0, 1.02]),
        showlegend=cut is not None,
    )
    fig.update_layout(legend=dict(y=-0.3), margin=dict(b=120))
    return fig


def retained_mass_figure(
    profile: MassProfile,
    part: str,
    selection: tuple[float, float] | None = None,
    selection_label: str = "current selection",
) -> go.Figure:
    """Retained importance mass against the share of dims kept, log x axis.

    Args:
        profile: from :func:`gradiend_core.analysis.mass.mass_profile` (total > 0 to be useful).
        part: the part's name, for labels.
        selection: ``(dims_share, mass_share)`` of the current selection
            (:func:`gradiend_core.analysis.mass.selection_point`), or ``None``.
        selection_label: legend name of the selection marker.

    Returns:
        A figure whose first trace ("retained mass") has ``x`` = ``k / n_total`` and ``y`` =
        share of the part's total importance held by the top ``k`` dims, both in (0, 1], at the
        profile's positions (``customdata`` = ``k``); then one marker trace per share in
        ``profile.share_points``, then the selection marker.
    """
    x, y = profile.dims_share, profile.mass_share
    fig = go.Figure()
    fig.add_scatter(
        x=x,
        y=y,
        mode="lines",
        name="retained mass",
        line=dict(color=DROPPED_COLOR, width=2),
        customdata=profile.positions,
        hovertext=[f"keep {format_percent(v)} of the importance" for v in y],
        hovertemplate="top %{customdata:,} dims (%{x:.3%} of dims)<br>%{hovertext}<extra></extra>",
    )
    for (share, (k, kept)), color in zip(sorted(profile.share_points.items()), _SHARE_COLORS):
        fig.add_scatter(
            x=[k / profile.n_total],
            y=[kept],
            mode="markers",
            name=f"{share:.0%} of mass: {k:,} dims",
            marker=dict(color=color, size=10, symbol="diamond"),
            customdata=[k],
            hovertemplate=f"{share:.0%} of the mass needs the top %{{customdata:,}} dims (%{{x:.3%}} of dims)"
            f"<br>they keep {format_percent(kept)}<extra></extra>",
        )
    if selection is not None and np.isfinite(selection[1]):
        fig.add_scatter(
            x=[selection[0]],
            y=[selection[1]],
            mode="markers",
            name=selection_label,
            marker=dict(color=KEPT_COLOR, size=13, symbol="x", line=dict(width=1, color="black")),
            hovertemplate=f"{selection_label}<br>%{{x:.3%}} of dims<extra></extra>",
        )
    fig.update_layout(
        **base_layout(
            f"Retained {part} importance vs dims kept",
            subtitle=f"{profile.n_total:,} dims, exact at {profile.positions.size:,} ranks",
        ),
        xaxis=log_axis("share of dims kept (top-k / input_dim, log scale)") | percent_log_ticks(1.0 / profile.n_total),
        yaxis=dict(title="share of total importance kept (%)", tickformat=".0%", range=[0, 1.02]),
    )
    # below the plot: inside it, the legend covered the curve's knee and the selection marker
    fig.update_layout(
        legend=dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0.0), margin=dict(b=150), height=480
    )
    return fig
