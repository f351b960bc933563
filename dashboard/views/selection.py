"""Importance histogram of the chosen part with the current cut."""

from __future__ import annotations

import streamlit as st

from gradiend_core.distribution import cut_value, log_histogram
from dashboard.context import ViewContext
from dashboard.figures.distribution import importance_histogram


def render(ctx: ViewContext) -> None:
    """Draw the log-x histogram of the selected part's importance, kept dims highlighted, cut marked."""
    ranking = ctx.ranking()
    hist = log_histogram(ranking, ctx.selection)
    fig = importance_histogram(hist, ctx.source, cut_value(ranking, ctx.selection))
    st.plotly_chart(fig, width="stretch", key="importance_histogram")
