"""The last valid selection, shown while the sidebar holds an input being retyped.

While topk or threshold is empty or invalid the page keeps showing the preview, the views and the
export form of the last selection that planned without error, says so next to the error, and
disables the export until the input is valid again.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from dashboard.state.inputs import SelectionInputs

__all__ = ["describe", "recall", "remember", "show_stale"]

KEY = "_last_valid_selection"


def remember(path: str, inputs: SelectionInputs) -> None:
    """Store ``inputs`` as the last valid selection of the checkpoint at ``path``."""
    st.session_state[KEY] = (path, inputs)


def recall(path: str, error: str) -> SelectionInputs | None:
    """The last valid selection of ``path`` carrying ``error`` (so that the export stays disabled),
    or ``None`` when this checkpoint has none yet."""
    last = st.session_state.get(KEY)
    if last is None or last[0] != path:
        return None
    return dataclasses.replace(last[1], error=error)


def describe(inputs: SelectionInputs) -> str:
    """The selection in words: ``part decoder-weight, topk 0.05, no threshold``."""
    bits = [f"part {inputs.source}", f"topk {inputs.topk_text.strip()}" if inputs.topk is not None else "no topk"]
    bits.append(f"threshold {inputs.threshold:g}" if inputs.threshold is not None else "no threshold")
    if inputs.mask_name:
        bits.append(f"mask file {inputs.mask_name}")
    if inputs.name_include or inputs.name_exclude:
        bits.append("the parameter-name filter")
    return ", ".join(bits)


def show_stale(error: str, shown: SelectionInputs) -> None:
    """Draw the input error and the note that the page shows the last valid selection."""
    st.error(error)
    st.info(
        f"Showing the last valid selection ({describe(shown)}): the preview, the views and the export below are "
        "of it until the sidebar input is valid again. Export is off meanwhile.",
        icon=":material/history:",
    )
