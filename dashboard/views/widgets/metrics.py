"""Rows of metrics that stay readable on a narrow page.

``st.columns`` gives each metric a fixed share of the width, so at 1,024 px a row of five cuts
labels and values ("Importanc...", "52.3..."). A row here is a wrapping horizontal container and
each metric is as wide as its content: what does not fit moves to the next line.
"""

from __future__ import annotations

import streamlit as st

__all__ = ["change_metric", "metric_row", "note_metric"]


def metric_row(key: str):
    """A horizontal container that wraps its metrics onto more lines when the page is narrow."""
    return st.container(horizontal=True, gap="medium", key=key)


def change_metric(label: str, value, change: str = "", help: str | None = None) -> None:
    """A metric whose delta is a signed change (:func:`gradiend_core.util.units.format_change`): ``+`` an
    increase, drawn red, ``-`` a saving, drawn green."""
    st.metric(label, value, delta=change or None, delta_color="inverse", help=help, width="content")


def note_metric(label: str, value, note: str = "", help: str | None = None) -> None:
    """A metric whose delta is a plain note (grey, no arrow)."""
    st.metric(label, value, delta=note or None, delta_color="off", delta_arrow="off", help=help, width="content")
