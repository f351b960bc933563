"""Figures of the view "Pruning stages": the combined reduction and the pre-/post-prune recall."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout, log_axis
from dashboard.figures.style import CUT_COLOR, DROPPED_COLOR, KEPT_COLOR, OKABE_ITO
from gradiend_core.analysis.stages import ReductionStage, StageRecall
from gradiend_core.util.units import format_bytes, format_count, format_percent

__all__ = ["PANELS", "recall_figure", "reduction_figure", "stage_label"]

#: (attribute, panel title with the unit and the scale) of the three reduction panels; the panel
#: titles name the y axes, which stay untitled so that three panels fit a 1,024 px page.
PANELS = (
    ("input_dim", "Input dims<br>(count, log scale)"),
    ("params", "GRADIEND parameters<br>(count, log scale)"),
    ("memory_bytes", "Parameter memory<br>(bytes, log scale)"),
)
CHECKPOINT_COLOR = OKABE_ITO["green"]


def stage_label(stage: ReductionStage, sep: str = " ") -> str:
    """The stage's name, marked when it is the checkpoint as saved."""
    return stage.name + (f"{sep}(this checkpoint)" if stage.is_checkpoint and stage.name != "this checkpoint" else "")


def _text(attr: str, value: int, first: int) -> str:
    shown = format_bytes(value) if attr == "memory_bytes" else format_count(value)
    return shown if value == first else f"{shown}<br>{format_percent(value / first)}"


def reduction_figure(stages: Sequence[ReductionStage]) -> go.Figure:
    """The pruning chain as three bar panels (dims, parameters, bytes) on log y axes.

    The stages are named in the legend below the panels, not under the bars: three panels of long
    stage names do not fit a 1,024 px page without the names running into each other.

    Args:
        stages: from :func:`gradiend_core.analysis.stages.combined_reduction`, in chain order.

    Returns:
        A figure with one bar trace per panel and stage, panel by panel (in :data:`PANELS`
        order), stages in chain order: ``name`` = :func:`stage_label`, ``x`` = ``[name]``,
        ``y`` = ``[value]``; bar text shows the value and its share of the unpruned stage. The
        checkpoint's own stage is drawn in green, the current selection in orange, the others in
        blue; each stage has one legend entry.
    """
    colors = [
        KEPT_COLOR if i == len(stages) - 1 else CHECKPOINT_COLOR if s.is_checkpoint else DROPPED_COLOR
        for i, s in enumerate(stages)
    ]
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[1] for p in PANELS], horizontal_spacing=0.07)
    for col, (attr, title) in enumerate(PANELS, start=1):
        values = [int(getattr(s, attr)) for s in stages]
        what = title.split("<br>")[0]
        for i, (stage, value) in enumerate(zip(stages, values)):
            exact = f"{value:,} B" if attr == "memory_bytes" else f"{value:,}"
            fig.add_bar(
                x=[stage_label(stage)],
                y=[value],
                name=stage_label(stage),
                legendgroup=str(i),
                showlegend=col == 1,
                marker_color=colors[i],
                text=[_text(attr, value, values[0])],
                textposition="outside",
                cliponaxis=False,
                hovertemplate=f"%{{x}}<br>{what}: {exact}<extra></extra>",
                row=1,
                col=col,
            )
        lo, hi = max(min(values), 1), max(values[0], 1)
        axis = log_axis(title, lo, hi)
        axis.pop("title")  # the panel title names the axis
        fig.update_yaxes(**axis, range=[np.log10(lo) - 0.3, np.log10(hi) + 0.6], row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    first, last = stages[0], stages[-1]
    layout = base_layout(
        "Combined reduction of both pruning stages",
        height=480,
        subtitle=f"{first.input_dim:,} -> {last.input_dim:,} input dims "
        f"({format_percent(last.input_dim / first.input_dim)} of the unpruned length); "
        f"{format_bytes(first.memory_bytes)} -> {format_bytes(last.memory_bytes)} of GRADIEND parameters; log scales",
    )
    layout["margin"] = dict(l=60, r=20, t=130, b=60)
    layout["legend"] = dict(orientation="h", yanchor="top", y=-0.04, xanchor="left", x=0.0, title=dict(text="stage:"))
    fig.update_layout(**layout, barmode="overlay")
    return fig


def recall_figure(recall: StageRecall) -> go.Figure:
    """Recall of the pre-prune ranking against the post-prune top-k, for every k on the curve.

    Args:
        recall: from :func:`gradiend_core.analysis.stages.stage_recall`.

    Returns:
        A figure with traces "ranking recall" (``x`` = ``recall.curve_k``, ``y`` =
        ``recall.curve_ranking_recall``), "random ranking" (``k / n``), "kept-set recall" (only
        when the checkpoint was not trained on pre-pruned dims; otherwise it is 1 throughout), and
        a marker "current k" at ``(recall.k, recall.ranking_recall)``.
    """
    ks = recall.curve_k.astype(np.float64)
    fig = go.Figure()
    fig.add_scatter(
        x=ks,
        y=recall.curve_ranking_recall,
        mode="lines+markers",
        name="ranking recall |P_k ∩ T_k| / k",
        line=dict(color=DROPPED_COLOR, width=2),
        marker=dict(size=5),
        hovertemplate="k = %{x:,}<br>ranking recall = %{y:.1%}<extra></extra>",
    )
    if not recall.pre_pruned:
        fig.add_scatter(
            x=ks,
            y=recall.curve_kept_recall,
            mode="lines",
            name="kept-set recall |R ∩ T_k| / k",
            line=dict(color=OKABE_ITO["purple"], width=2),
            hovertemplate="k = %{x:,}<br>kept-set recall = %{y:.1%}<extra></extra>",
        )
    fig.add_scatter(
        x=ks,
        y=ks / recall.n_dims,
        mode="lines",
        name="random ranking (k / n)",
        line=dict(color=OKABE_ITO["grey"], dash="dot"),
        hovertemplate="k = %{x:,}<br>random: %{y:.1%}<extra></extra>",
    )
    fig.add_scatter(
        x=[recall.k],
        y=[recall.ranking_recall],
        mode="markers",
        name=f"current k = {recall.k:,}",
        marker=dict(color=CUT_COLOR, size=12, symbol="diamond"),
        hovertemplate="current k = %{x:,}<br>ranking recall = %{y:.1%}<extra></extra>",
    )
    layout = base_layout(
        f"Pre-prune ranking vs post-prune ({recall.post_part}) top-k",
        height=460,
        subtitle=f"over this checkpoint's {recall.n_dims:,} dims, matched by base-global index",
    )
    layout["margin"] = dict(layout["margin"], b=110)
    layout["legend"] = dict(layout["legend"], y=-0.28)
    fig.update_layout(
        **layout,
        xaxis=dict(
            **log_axis("k: dims in each top-k set (count, log scale)", 1, max(recall.n_dims, 2)),
            range=[-0.05, np.log10(max(recall.n_dims, 2)) + 0.05],
        ),
        yaxis=dict(title="recall (% of the post-prune top-k)", tickformat=".0%", range=[-0.02, 1.05]),
    )
    return fig
