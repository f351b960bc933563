"""Tables drawn the same way in every view: one percent format, no raw ``None``/``null``.

Numbers stay numbers (a click on a header sorts by value); what a cell shows comes from a pandas
Styler, so percentages read exactly as the metrics do (:func:`gradiend_core.util.units.format_percent`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from gradiend_core.util.units import format_percent

__all__ = ["MISSING", "cell_text", "display_table", "show_table"]

#: What a cell without a value shows.
MISSING = "n/a"


def cell_text(value) -> str:
    """A value as table text: ``None``/NaN -> ``n/a``, bools -> yes/no, floats in ``%g``, lists and
    dicts as ``k=v`` text (never the words None, null, True or False)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell_text(v)}" for k, v in value.items()) or MISSING
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cell_text(v) for v in value) + "]"
    return str(value)


def _number(fmt: str) -> Callable[[float], str]:
    def show(v: float) -> str:
        return MISSING if v == -math.inf else fmt.format(v)

    return show


def display_table(df: pd.DataFrame, percent: Sequence[str] = (), formats: dict[str, str] | None = None) -> Styler:
    """``df`` with display text for every cell.

    Args:
        df: the table.
        percent: columns of shares in [0, 1], shown by :func:`format_percent`.
        formats: ``column -> str.format`` pattern for other numeric columns (default: ``{:,.0f}`` for
            integers, ``{:.4g}`` for floats).

    Returns:
        A Styler over a copy of ``df`` in which a missing number is ``-inf`` (Streamlit draws a
        null cell as "None" whatever the display text says; ``-inf`` sorts last and shows ``n/a``)
        and a missing text is ``n/a``.
    """
    out = df.copy()
    formatters: dict[str, Callable] = {}
    for col in out.columns:
        series = out[col]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            out[col] = [cell_text(v) for v in series]
            continue
        out[col] = series.astype(np.float64).fillna(-math.inf) if series.isna().any() else series
        if col in percent:
            formatters[col] = lambda v: MISSING if v == -math.inf else format_percent(v)
        else:
            default = "{:,.0f}" if pd.api.types.is_integer_dtype(series) else "{:.4g}"
            formatters[col] = _number((formats or {}).get(col, default))
    return out.style.format(formatters)


def show_table(
    df: pd.DataFrame, key: str, percent: Sequence[str] = (), formats: dict[str, str] | None = None, **kwargs
) -> None:
    """Draw ``df`` with :func:`display_table` (``kwargs`` go to ``st.dataframe``; hide_index by default)."""
    kwargs.setdefault("hide_index", True)
    st.dataframe(display_table(df, percent, formats), key=key, **kwargs)
