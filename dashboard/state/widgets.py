"""Widget state that outlives the runs which do not draw the widget.

Streamlit forgets the value of a widget that a run does not draw: a choice in a view (the
*Compare parts* axes, the *Distributions* part, ...) would reset after a visit to another tab,
and the sidebar inputs would reset while no model is open. Assigning each value back to itself
at the top of every run turns it into session state that Streamlit keeps, and the widget shows it
again when it is drawn next.
"""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

__all__ = ["keep_widget_state"]


def keep_widget_state(keys: Iterable[str]) -> None:
    """Keep the current value of every widget key in ``keys`` for the next runs (call first in a run)."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
