"""Figures of one part's importance distribution (view "Selection"): the histogram of every dim, and
the top of the ranking, where the kept dims are visible at any topk."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import HOVER_LABEL, log_axis, log_ticks
from dashboard.figures.style import CUT_COLOR, DROPPED_COLOR, KEPT_COLOR
from gradiend_core.analysis.distribution import LogHistogram, RankCurve

__all__ = ["importance_histogram", "rank_figure"]

#: Below the plot: the legend, clear of the title and of the bars.
_LEGEND = dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0)


def _title(text: str, subtitle: str) -> dict:
    return dict(text=f"{text}<br><sup>{subtitle}</sup>" if subtitle else text)


def _count_axis(top: int, log: bool) -> dict:
    """The histogram's count axis: log (ticks 1, 1e1, 1e2, ...) when counts span more than three
    decades, else linear."""
    if not log:
        return dict(title="input dims per bin", type="linear")
    return log_axis("input dims per bin", 1, top) | dict(range=[math.log10(0.8), math.log10(top * 2)])


def importance_histogram(
    hist: LogHistogram, part: str, cut: float | None = None, title: str | None = None
) -> go.Figure:
    """Histogram of importance on a log x axis: every dim in blue, the kept dims in orange in front.

    The two are overlaid, not stacked: each bar's top reads its own count on the (possibly log)
    count axis, so a bin where 40 % is kept shows an orange bar at 40 % of the count.

    Args:
        hist: from :func:`gradiend_core.analysis.distribution.log_histogram` (exact zeros and non-finite
            values are not binned; they are counted in the subtitle).
        part: importance source, for labels.
        cut: smallest kept importance (a dashed line, named in the legend), or ``None`` (a mask
            alone, or everything kept: no cut to draw).
        title: figure title (a default names the part).

    Returns:
        A figure with bar traces ``all dims`` and ``kept`` whose y values are dims per bin and x
        values bin centres in log10(importance), then the cut line when there is one.
    """
    x = hist.centers
    hover = [f"importance {10**a:.3g} to {10**b:.3g}" for a, b in zip(hist.log_edges[:-1], hist.log_edges[1:])]
    custom = np.stack([np.array(hover, dtype=object), hist.kept_counts], axis=-1)
    fig = go.Figure()
    fig.add_bar(
        x=x,
        y=hist.counts,
        width=hist.width,
        name="all dims",
        marker_color=DROPPED_COLOR,
        customdata=custom,
        hovertemplate="%{customdata[0]}<br>%{y:,} dims, %{customdata[1]:,} kept<extra></extra>",
    )
    fig.add_bar(
        x=x,
        y=hist.kept_counts,
        width=hist.width,
        name="kept",
        marker_color=KEPT_COLOR,
        customdata=custom,
        hovertemplate="%{customdata[0]}<br>%{y:,} dims kept<extra></extra>",
    )
    log_y = hist.counts.max(initial=0) > 1000
    if cut is not None and np.isfinite(cut) and cut > 0:
        top = float(hist.counts.max(initial=1)) * (2 if log_y else 1.05)
        fig.add_scatter(
            x=[math.log10(cut)] * 2,
            y=[0.8 if log_y else 0, top],
            mode="lines",
            name=f"cut: importance ≥ {cut:.3g} kept",
            line=dict(color=CUT_COLOR, dash="dash", width=2),
            hovertemplate=f"cut at {cut:.4g}<extra></extra>",
        )
    ticks = log_ticks(10 ** float(hist.log_edges[0]), 10 ** float(hist.log_edges[-1]))
    notes = []
    if hist.n_zero:
        notes.append(f"{hist.n_zero:,} dims with importance 0 ({hist.zero_kept:,} kept)")
    if hist.n_nonfinite:
        notes.append(f"{hist.n_nonfinite:,} NaN/Inf ({hist.nonfinite_kept:,} kept)")
    subtitle = f"{int(hist.kept_counts.sum()) + hist.zero_kept + hist.nonfinite_kept:,} of {hist.n_total:,} dims kept"
    if notes:
        subtitle += "; not on the log axis: " + ", ".join(notes)
    fig.update_layout(
        title=_title(title or f"{part} importance of every dim", subtitle),
        barmode="overlay",
        bargap=0,
        xaxis=dict(
            title=f"{part} importance (log scale)", tickvals=np.log10(ticks["tickvals"]), ticktext=ticks["ticktext"]
        ),
        yaxis=_count_axis(int(hist.counts.max(initial=0)), log_y),
        legend=_LEGEND,
        hoverlabel=HOVER_LABEL,
        margin=dict(l=70, r=20, t=70, b=110),
        height=400,
    )
    return fig


def rank_figure(curve: RankCurve, part: str) -> go.Figure:
    """Importance against rank over the top of the ranking, both axes log: the ``k`` kept ranks in
    orange, the next ranks up to ``curve.upto`` in blue, the cut at rank ``k``.

    Returns:
        A figure with traces ``kept`` (``x`` = ranks ``<= k``, ``y`` = importance) and ``dropped``
        (the ranks after ``k``, starting at rank ``k`` so the line is continuous), then the cut line.
    """
    r, v = curve.ranks, curve.values
    kept, dropped = r <= curve.k, r >= curve.k
    few = int(kept.sum()) <= 60
    fig = go.Figure()
    fig.add_scatter(
        x=r[kept],
        y=v[kept],
        mode="lines+markers" if few else "lines",
        name=f"kept: ranks 1 to {curve.k:,}",
        line=dict(color=KEPT_COLOR, width=3),
        marker=dict(size=6),
        hovertemplate="rank %{x:,}<br>importance %{y:.4g}<extra>kept</extra>",
    )
    if curve.upto > curve.k:
        fig.add_scatter(
            x=r[dropped],
            y=v[dropped],
            mode="lines",
            name=f"dropped: ranks {curve.k + 1:,} to {curve.upto:,} shown",
            line=dict(color=DROPPED_COLOR, width=2),
            hovertemplate="rank %{x:,}<br>importance %{y:.4g}<extra>dropped</extra>",
        )
    lo, hi = (float(v.min()), float(v.max())) if v.size else (curve.cut, curve.cut)
    fig.add_scatter(
        x=[curve.k, curve.k],
        y=[lo, hi],
        mode="lines",
        name=f"cut: rank {curve.k:,}, importance {curve.cut:.3g}",
        line=dict(color=CUT_COLOR, dash="dash", width=2),
        hovertemplate=f"rank {curve.k:,}: {curve.cut:.4g}<extra>cut</extra>",
    )
    approx = ""
    if curve.upto > curve.exact_upto:
        approx = f"; exact to rank {curve.exact_upto:,}, then at value-bucket edges"
    hidden = f"; {curve.n_undrawable:,} ranks with importance 0, Inf or NaN not drawn" if curve.n_undrawable else ""
    fig.update_layout(
        title=_title(
            f"Top of the {part} ranking: the {curve.k:,} kept dims and the next ones",
            f"ranks 1 to {curve.upto:,} of {curve.n:,}{approx}{hidden}",
        ),
        xaxis=log_axis("rank (1 = most important)", 1, max(curve.upto, 2)),
        yaxis=log_axis(f"{part} importance", lo, hi),
        legend=_LEGEND,
        hoverlabel=HOVER_LABEL,
        margin=dict(l=70, r=20, t=70, b=110),
        height=360,
    )
    return fig
