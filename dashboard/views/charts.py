"""Drawing a figure the same way in every analysis view: full width, PNG download in the modebar."""

from __future__ import annotations

from typing import Union

import plotly.graph_objects as go
import streamlit as st

from dashboard.figures.common import chart_config


def show_figure(fig: go.Figure, key: str, filename: str, width: Union[int, str] = "stretch") -> None:
    """Draw ``fig`` with Plotly's modebar (camera button: download ``<filename>.png``), full width or
    ``width`` pixels (figures of a fixed width wrap onto a new row in a horizontal container)."""
    st.plotly_chart(fig, width=width, key=key, config=chart_config(filename))
