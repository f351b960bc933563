"""Figures of part against part (view "Compare parts"): Spearman heatmap, UpSet, scatter."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout, log_axis, positive_range
from dashboard.figures.style import DROPPED_COLOR, KEPT_COLOR, OKABE_ITO
from gradiend_core.analysis.correlation import PairedSample, SpearmanMatrix
from gradiend_core.analysis.overlap import IntersectionPatterns

__all__ = ["importance_scatter", "spearman_heatmap", "upset_figure"]


def spearman_heatmap(spearman: SpearmanMatrix) -> go.Figure:
    """Spearman's rho between parts as an annotated heatmap on [-1, 1].

    Returns:
        A figure with one heatmap trace, ``z`` = ``spearman.rho`` (row 0 at the top); the title
        says whether every dim or a seeded sample was used.
    """
    names = list(spearman.names)
    if spearman.exact:
        basis = f"all {spearman.n_used:,} dims"
    else:
        basis = f"seeded uniform sample of {spearman.n_used:,} of {spearman.n_total:,} dims (seed {spearman.seed})"
    if spearman.n_nan_dropped:
        basis += f", {spearman.n_nan_dropped:,} NaN dims left out"
    fig = go.Figure(
        go.Heatmap(
            z=spearman.rho,
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            texttemplate="%{z:.3f}",
            colorbar=dict(title=dict(text="Spearman ρ (unitless)", side="right")),
            hovertemplate="%{y} vs %{x}<br>Spearman ρ = %{z:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        **base_layout(f"Spearman rank correlation of importance ({basis})", height=max(380, 110 + 70 * len(names))),
        xaxis=dict(title="part"),
        yaxis=dict(title="part", autorange="reversed"),
    )
    return fig


def upset_figure(patterns: IntersectionPatterns, topk_label: str) -> go.Figure:
    """UpSet-style plot: one bar per exact intersection pattern, a dot matrix below naming it.

    Args:
        patterns: from :func:`gradiend_core.analysis.overlap.intersection_patterns`.
        topk_label: the topk the sets were taken with, for the title.

    Returns:
        A two-row figure. Trace 0 is the bar trace: ``x`` = pattern labels (set names joined by
        " & "), ``y`` = dims with exactly that pattern, sorted descending, ``customdata`` = the
        pattern's row in ``patterns``. The dot matrix follows (one trace of grey "not in set"
        dots, then one trace per pattern whose points carry the pattern's row as ``customdata``).
    """
    labels = [patterns.label(r) for r in range(patterns.counts.size)]
    names = list(patterns.names)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.03)
    fig.add_bar(
        x=labels,
        y=patterns.counts,
        marker_color=DROPPED_COLOR,
        name="dims",
        customdata=np.arange(len(labels)),
        texttemplate="%{y:,}",
        textposition="outside",
        cliponaxis=False,
        hovertemplate="in exactly: %{x}<br>%{y:,} dims<extra></extra>",
        row=1,
        col=1,
    )
    xs, ys = np.meshgrid(np.arange(len(labels)), np.arange(len(names)), indexing="ij")
    fig.add_scatter(
        x=[labels[i] for i in xs.ravel()],
        y=[names[j] for j in ys.ravel()],
        mode="markers",
        marker=dict(color="#D9D9D9", size=13),
        hoverinfo="skip",
        showlegend=False,
        row=2,
        col=1,
    )
    for r, label in enumerate(labels):
        members = [n for n, inside in zip(names, patterns.membership[r]) if inside]
        fig.add_scatter(
            x=[label] * len(members),
            y=members,
            customdata=[r] * len(members),
            mode="markers+lines",
            marker=dict(color=KEPT_COLOR, size=13),
            line=dict(color=KEPT_COLOR, width=3),
            showlegend=False,
            hovertemplate=f"pattern: {label}<br>%{{y}} is in it<extra></extra>",
            row=2,
            col=1,
        )
    sizes = ", ".join(f"{n} {s:,}" for n, s in zip(names, patterns.set_sizes))
    fig.update_layout(
        **base_layout(
            f"Exact intersections of the parts' top-{topk_label} sets",
            height=580,
            subtitle=f"set sizes (dims): {sizes}",
        )
    )
    fig.update_layout(showlegend=False, bargap=0.35)
    fig.update_yaxes(title_text="dims in exactly this pattern", row=1, col=1)
    fig.update_yaxes(title_text="part", categoryorder="array", categoryarray=names[::-1], row=2, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_xaxes(
        title_text="intersection pattern (filled dots: the parts whose top-k holds the dims)",
        showticklabels=False,
        row=2,
        col=1,
    )
    return fig


def importance_scatter(sample: PairedSample, part_x: str, part_y: str) -> go.Figure:
    """Log-log scatter of one part's importance against another's on a sample of dims.

    Returns:
        A figure whose trace 0 has ``x``/``y`` = the sampled importance of ``part_x``/``part_y``
        where both are finite and > 0 (``customdata`` = local index); the title gives the
        sample size and seed and how many sampled dims a log axis cannot show.
    """
    ok = sample.loggable
    hidden = int(ok.size - np.count_nonzero(ok))
    title = f"{part_y} vs {part_x} importance"
    subtitle = f"seeded uniform sample of {sample.indices.size:,} of {sample.n_total:,} dims (seed {sample.seed})"
    if hidden:
        subtitle += f"; {hidden:,} with a zero or non-finite value not shown"
    fig = go.Figure(
        go.Scatter(
            x=sample.x[ok],
            y=sample.y[ok],
            mode="markers",
            customdata=sample.indices[ok],
            marker=dict(color=OKABE_ITO["blue"], size=4, opacity=0.5),
            hovertemplate=f"local index %{{customdata:,}}<br>{part_x} %{{x:.4g}}<br>{part_y} %{{y:.4g}}<extra></extra>",
        )
    )
    fig.update_layout(
        **base_layout(title, height=480, subtitle=subtitle),
        xaxis=log_axis(f"{part_x} importance (log scale)", *positive_range(sample.x[ok])),
        yaxis=log_axis(f"{part_y} importance (log scale)", *positive_range(sample.y[ok])),
        showlegend=False,
    )
    return fig
