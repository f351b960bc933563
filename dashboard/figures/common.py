"""Shared pieces of the analysis figures: the chart config (PNG download) and axis helpers."""

from __future__ import annotations

import math
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


def base_layout(title: str, height: int = 420, subtitle: str = "") -> Dict[str, Any]:
    """Layout defaults: title (and a smaller second line), margins, height, and a horizontal
    legend below the plot, where it cannot cover the title."""
    text = f"{title}<br><sup>{subtitle}</sup>" if subtitle else title
    return dict(
        title=dict(text=text),
        height=height,
        margin=dict(l=70, r=30, t=90 if subtitle else 70, b=60),
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0),
        hoverlabel=HOVER_LABEL,
    )


def percent_log_ticks(smallest: float) -> Dict[str, Any]:
    """Tick values and labels for a log axis of shares from ``smallest`` to 1: 0.001 %, 0.01 %, ... 100 %."""
    lo = int(math.floor(math.log10(max(smallest, 1e-12))))
    vals = [10.0**e for e in range(lo, 1)]
    return dict(tickvals=vals, ticktext=[f"{100 * v:.10g} %" for v in vals])
