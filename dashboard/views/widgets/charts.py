"""Drawing a figure the same way in every analysis view: full width, PNG download in the modebar."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard.figures.common import chart_config

__all__ = ["show_figure"]


def show_figure(fig: go.Figure, key: str, filename: str) -> None:
    """Draw ``fig`` with Plotly's modebar (camera button: download ``<filename>.png``)."""
    st.plotly_chart(fig, width="stretch", key=key, config=chart_config(filename))
