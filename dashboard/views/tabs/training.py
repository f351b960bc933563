"""View "Training": score and loss over steps, best step, convergence and recorded pruning."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.figures.training import training_figure
from dashboard.state.context import ViewContext
from dashboard.views.widgets.charts import show_figure
from dashboard.views.widgets.metrics import metric_row, note_metric
from dashboard.views.widgets.tables import cell_text as _text
from dashboard.views.widgets.tables import show_table
from gradiend_core.analysis.training import training_record

__all__ = ["render"]


def render(ctx: ViewContext) -> None:
    """Draw what the checkpoint records about its training; say what is missing."""
    side = ctx.data.side_files
    rec = training_record(
        side.get("training.json"), ctx.data.metadata, side.get("pruning.json"), side.get("gradiend_context.json")
    )
    for note in rec.notes:
        st.caption(note)
    if "training.json" in side:
        conv = rec.convergence.get("converged")
        with metric_row("training_metrics"):
            note_metric(
                "Best step",
                f"{rec.best_step:,}" if rec.best_step is not None else "n/a",
                help=f"epoch {rec.best_epoch}" if rec.best_epoch is not None else None,
            )
            note_metric(
                "Best score (correlation)",
                f"{rec.best_score:.5f}" if rec.best_score is not None else "n/a",
                help="Encoder correlation of the best checkpoint (training.json best_score_checkpoint).",
            )
            note_metric("Steps trained", f"{rec.final_step:,}" if rec.final_step is not None else "n/a")
            note_metric(
                "Converged",
                "n/a" if conv is None else ("yes" if conv else "no"),
                help="; ".join(f"{k} = {_text(v)}" for k, v in rec.convergence.items())
                or "No convergence_info recorded.",
            )
        if rec.has_curves:
            show_figure(training_figure(rec), "training_curves", "training_record")
        if rec.convergence:
            st.markdown("**Convergence**")
            values = [_text(v) for v in rec.convergence.values()]
            show_table(pd.DataFrame({"field": list(rec.convergence), "value": values}), "training_convergence")
        if rec.settings:
            st.markdown("**Training settings** (training_args)")
            values = [_text(v) for v in rec.settings.values()]
            show_table(pd.DataFrame({"setting": list(rec.settings), "value": values}), "training_settings")
        if rec.input_dims:
            st.caption(
                "Input dims by stage: " + " -> ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in rec.input_dims.items())
            )
        if rec.post_prune_result:
            st.caption(
                "Post-pruning result: " + ", ".join(f"{k} = {_text(v)}" for k, v in rec.post_prune_result.items())
            )
        if rec.time_seconds:
            st.caption("Time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rec.time_seconds.items()))
    st.markdown("**Pruning recorded**")
    if rec.pruning:
        show_table(
            pd.DataFrame(
                [
                    {
                        "stage": p.stage,
                        "recorded in": p.source,
                        "settings": ", ".join(f"{k}={_text(v)}" for k, v in p.settings.items()),
                    }
                    for p in rec.pruning
                ]
            ),
            "training_pruning",
        )
    else:
        st.caption(
            "No pruning config recorded "
            "(training_args.pre_prune_config / post_prune_config, config metadata, pruning.json)."
        )
