"""Shared pieces of the analysis figures: the chart config (PNG download) and axis helpers."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

__all__ = [
    "HOVER_LABEL",
    "base_layout",
    "chart_config",
    "log_axis",
    "log_ticks",
    "percent_log_ticks",
    "positive_range",
    "tick_text",
]

#: Plotly's default hover label, the look every analysis figure shares.
HOVER_LABEL = dict(namelength=-1)


def chart_config(filename: str, scale: int = 2) -> dict[str, Any]:
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


def tick_text(mantissa, exponent: int) -> str:
    """The one label of a log-axis tick in every chart: ``1e-4``, ``5e-3``, ``1``, ``2``, ``1e3``."""
    return f"{mantissa}" if exponent == 0 else f"{mantissa}e{exponent}"


def _value_text(v: float) -> str:
    """Any positive value in the notation of :func:`tick_text`, 3 significant digits: ``6.45e-2``."""
    e = math.floor(math.log10(v))
    m = float(f"{v / 10.0**e:.3g}")
    if m >= 10:
        m, e = m / 10, e + 1
    return tick_text(f"{m:g}", e)


def log_ticks(lo: float, hi: float, max_ticks: int = 9) -> dict[str, Any]:
    """``tickvals``/``ticktext`` of a log axis spanning ``[lo, hi]`` (data units, > 0): powers of ten,
    every few decades over a wide range, and 2 and 5 times them over a narrow one, so at least two
    ticks are labelled; labels from :func:`tick_text`."""
    lo, hi = max(float(lo), 1e-300), max(float(hi), float(lo), 1e-300)
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [(m, e) for e in range(e0, e1 + 1) for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 2:
            break
    if len(ticks) > max_ticks:
        step = math.ceil(len(ticks) / max_ticks)
        ticks = [t for t in ticks if t[0] == 1 and (t[1] - e0) % step == 0] or ticks[::step]
    if not ticks:  # a range inside one step of 1..9: label its ends, in the same notation
        return dict(tickvals=[lo, hi], ticktext=[_value_text(lo), _value_text(hi)])
    return dict(tickvals=[m * 10.0**e for m, e in ticks], ticktext=[tick_text(m, e) for m, e in ticks])


def positive_range(values) -> tuple[float | None, float | None]:
    """``(smallest, largest)`` positive finite value of ``values``, ``(None, None)`` without any:
    the range a log axis can show."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return (float(v.min()), float(v.max())) if v.size else (None, None)


def log_axis(title: str, lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """A log-scale axis whose title says so, ticks from :func:`log_ticks` when the range is known."""
    if "log scale" not in title:
        title = f"{title} (log scale)"
    axis: dict[str, Any] = dict(title=title, type="log", exponentformat="e")
    if lo is not None and hi is not None and hi > 0:
        axis.update(log_ticks(lo if lo > 0 else hi / 10, hi))
    return axis


def base_layout(title: str, height: int = 420, subtitle: str = "") -> dict[str, Any]:
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


def percent_log_ticks(smallest: float) -> dict[str, Any]:
    """Tick values and labels for a log axis of shares from ``smallest`` to 1: 0.001 %, 0.01 %, ... 100 %."""
    lo = int(math.floor(math.log10(max(smallest, 1e-12))))
    vals = [10.0**e for e in range(lo, 1)]
    return dict(tickvals=vals, ticktext=[f"{100 * v:.10g} %" for v in vals])
