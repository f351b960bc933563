"""View "Selection": the importance histogram of the chosen part, and the top of its ranking with the cut."""

from __future__ import annotations

import streamlit as st

from dashboard.figures.selection import importance_histogram, rank_figure
from dashboard.state.context import ViewContext
from dashboard.views.widgets.charts import show_figure
from gradiend_core.analysis.distribution import cut_value, log_histogram, rank_curve

__all__ = ["render"]


def render(ctx: ViewContext) -> None:
    """Draw the log-x histogram of the selected part's importance (kept dims in front, the cut marked)
    and the importance of the top ranks, where the kept set is visible whatever topk is."""
    ranking = ctx.ranking()
    hist = log_histogram(ranking, ctx.selection)
    show_figure(
        importance_histogram(hist, ctx.source, cut_value(ranking, ctx.selection)),
        "importance_histogram",
        f"histogram_{ctx.source}",
    )
    curve = rank_curve(ctx.selection)
    if curve is None:
        st.caption(
            f"A mask alone keeps dims without ranking them by {ctx.source}, so there is no cut and no top of the "
            "ranking to show; the histogram marks where the kept dims' importance lies."
        )
        return
    show_figure(rank_figure(curve, ctx.source), "importance_rank", f"top_ranks_{ctx.source}")
    scope = "the dims the mask leaves" if ctx.plan.mask is not None else "all dims"
    st.caption(
        f"Ranks are among {scope} ({curve.n:,}), most important first, ties by lower index (the selection rule's "
        f"order). The rank axis shows about ten times the kept count, so the kept dims fill the left part of it at "
        "any topk."
    )
