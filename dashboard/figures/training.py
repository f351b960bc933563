"""Figure of the training record (view "Training")."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout
from dashboard.figures.style import CUT_COLOR, DROPPED_COLOR, OKABE_ITO
from gradiend_core.analysis.training import TrainingRecord, moving_average

__all__ = ["training_figure"]


def training_figure(record: TrainingRecord, smooth: int | None = None) -> go.Figure:
    """Score (encoder correlation) and training loss over steps, best step marked.

    Args:
        record: from :func:`gradiend_core.analysis.training.training_record`.
        smooth: window (steps) of a trailing moving average drawn over the loss; ``None`` for
            ``max(1, steps // 50)``.

    Returns:
        A two-row figure: row 1 trace "score" (``x`` = evaluation steps, ``y`` = correlation),
        row 2 trace "loss" (``x`` = steps 1..n, ``y`` = per-step loss) and "loss (mean of w
        steps)"; the best step is a dashed vertical line in both rows. A row without data says so.
    """
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("encoder score (correlation) at evaluation steps", "training loss per step"),
    )
    if record.eval_steps.size:
        fig.add_scatter(
            x=record.eval_steps,
            y=record.scores,
            mode="lines+markers",
            name="score",
            line=dict(color=DROPPED_COLOR),
            hovertemplate="step %{x:,}<br>correlation %{y:.4f}<extra></extra>",
            row=1,
            col=1,
        )
    if record.losses.size:
        fig.add_scatter(
            x=record.loss_steps,
            y=record.losses,
            mode="lines",
            name="loss",
            line=dict(color=OKABE_ITO["grey"], width=1),
            hovertemplate="step %{x:,}<br>loss %{y:.4g}<extra></extra>",
            row=2,
            col=1,
        )
        w = smooth or max(1, record.losses.size // 50)
        if w > 1:
            fig.add_scatter(
                x=record.loss_steps,
                y=moving_average(record.losses, w),
                mode="lines",
                name=f"loss (mean of {w} steps)",
                line=dict(color=OKABE_ITO["orange"], width=2),
                hovertemplate=f"step %{{x:,}}<br>mean loss of the last {w} steps %{{y:.4g}}<extra></extra>",
                row=2,
                col=1,
            )
    if record.best_step is not None:
        label = f"best step {record.best_step:,}"
        if record.best_score is not None:
            label += f" (correlation {record.best_score:.5f})"
        fig.add_vline(x=record.best_step, line_color=CUT_COLOR, line_dash="dash", row="all", col=1)
        last = max(
            int(record.eval_steps.max()) if record.eval_steps.size else 0,
            int(record.loss_steps.max()) if record.loss_steps.size else 0,
        )
        right_half = record.best_step > 0.5 * last
        fig.add_annotation(
            x=record.best_step,
            y=0.05,
            yref="y domain",
            text=label,
            showarrow=False,
            xanchor="right" if right_half else "left",
            xshift=-4 if right_half else 4,
            font=dict(color=CUT_COLOR),
            bgcolor="rgba(255,255,255,0.7)",
            row=1,
            col=1,
        )
    for row, has in ((1, record.eval_steps.size), (2, record.losses.size)):
        if not has:
            fig.add_annotation(
                text="not recorded", x=0.5, y=0.5, xref="x domain", yref="y domain", showarrow=False, row=row, col=1
            )
    fig.update_layout(**base_layout("Training record (training.json)", height=600))
    fig.update_layout(legend=dict(y=-0.12))
    fig.update_yaxes(title_text="correlation (unitless)", row=1, col=1)
    fig.update_yaxes(title_text="loss (training objective)", row=2, col=1)
    fig.update_xaxes(title_text="training step", row=2, col=1)
    last = max(
        [
            int(record.eval_steps.max()) if record.eval_steps.size else 0,
            int(record.loss_steps.max()) if record.loss_steps.size else 0,
        ]
    )
    if last:
        fig.update_xaxes(range=[-0.02 * last, last * 1.02])
    return fig
