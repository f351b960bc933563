"""Shared pieces of the analysis figures: the chart config (PNG download) and axis helpers."""

from __future__ import annotations

import re
from typing import Any, Dict

#: Plotly's default hover label, the look every analysis figure shares.
HOVER_LABEL = dict(namelength=-1)


def chart_config(filename: str, scale: int = 2) -> Dict[str, Any]:
    """Plotly ``config`` for ``st.plotly_chart``: the modebar's camera button downloads a PNG
    named ``<filename>.png`` at ``scale`` times the on-screen size; no Plotly logo.

    Args:
        filename: file name without extension; characters other than letters, digits, ``._-``
            become ``_``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("_") or "figure"
    return {
        "toImageButtonOptions": {"format": "png", "filename": safe, "scale": scale},
        "displaylogo": False,
        "displayModeBar": True,
    }


def log_axis(title: str) -> Dict[str, Any]:
    """A log-scale axis with powers of ten as tick labels."""
    return dict(title=title, type="log", exponentformat="power", showexponent="all")


def base_layout(title: str, height: int = 420) -> Dict[str, Any]:
    """Layout defaults: title, margins, height, horizontal legend above the plot."""
    return dict(
        title=dict(text=title),
        height=height,
        margin=dict(l=70, r=30, t=80, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        hoverlabel=HOVER_LABEL,
    )
