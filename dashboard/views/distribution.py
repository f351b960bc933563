"""Importance histogram of the chosen part with the current cut."""

from __future__ import annotations

import streamlit as st

from gradiend_core.distribution import cut_value, log_histogram
from gradiend_core.selection import Ranking, Selection
from dashboard.figures import importance_histogram


def render(ranking: Ranking, selection: Selection, part: str) -> None:
    """Draw the log-x histogram of ``part`` importance, kept dims highlighted, cut marked."""
    hist = log_histogram(ranking, selection)
    fig = importance_histogram(hist, part, cut_value(ranking, selection))
    st.plotly_chart(fig, width="stretch", key="importance_histogram")
