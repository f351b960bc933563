"""Sidebar: the selection inputs (part, mask file, threshold, topk).

The part is one of the four weight parts or, when the checkpoint has a pre-prune record
(``pre_prune.safetensors``), ``gradient-mean``: the |mean source gradient| pre-pruning ranked by.

Values are mirrored into the URL query (``part``, ``topk``, ``threshold``) so a copied link
reopens the same selection. A URL value an input cannot hold (``?threshold=nan``, ``?part=x``)
is not put into the input: the page says which URL parameter was ignored and stays usable.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard.server.sessions import registry, session_files
from dashboard.services.loading import has_pre_prune_record, load_pre_prune, load_ranking
from dashboard.state.inputs import SelectionInputs
from gradiend_core.checkpoint import CheckpointData
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.ranking.importance import DEFAULT_PART, GRADIENT_MEAN, PARTS
from gradiend_core.selection.masks import MASK_SUFFIXES, load_mask, name_mask
from gradiend_core.selection.rule import parse_topk

__all__ = ["render"]

DEFAULT_TOPK = "0.05"
#: Threshold step when the part's importance is unknown or has no positive finite value.
DEFAULT_STEP = 1e-3


def source_options(data: CheckpointData) -> tuple[str, ...]:
    """The importance sources of the selectbox: the four parts, plus ``gradient-mean`` when the
    checkpoint has a pre-prune record."""
    return PARTS + (GRADIENT_MEAN,) if has_pre_prune_record(str(data.path)) else PARTS


def threshold_step(path: str, part: str) -> float:
    """The +/- step of the threshold input: a tenth of the power of ten of the part's largest finite
    importance (0.066 -> 0.001, 5e-9 -> 1e-10), so a few clicks move the cut for importances of any
    scale; :data:`DEFAULT_STEP` when there is no positive finite importance."""
    try:
        ranking = load_ranking(path, part)
    except CheckpointError:
        return DEFAULT_STEP
    decade = ranking.largest_finite_decade()
    return DEFAULT_STEP if decade is None else 10.0 ** (decade - 1)


def url_threshold(text: str) -> tuple[float | None, str | None]:
    """The threshold of ``?threshold=text``: ``(value, None)``, or ``(None, why it is ignored)``
    for a value the threshold input cannot hold (not a number, NaN, infinite, negative)."""
    try:
        value = float(text)
    except ValueError:
        return None, f"URL parameter ?threshold={text} is not a number; it was ignored (no threshold is applied)."
    if not math.isfinite(value) or value < 0:
        return None, (
            f"URL parameter ?threshold={text} is not a usable threshold (a finite number >= 0, importance is an "
            "absolute value); it was ignored (no threshold is applied)."
        )
    return value, None


def _init_from_query(options: tuple[str, ...]) -> dict[str, str]:
    """Seed the inputs from the URL on a session's first run; returns messages about URL values
    that were ignored, by input."""
    qp = st.query_params
    problems: dict[str, str] = {}
    if "part" not in st.session_state:
        part = qp.get("part")
        if part is not None and part not in options:
            problems["part"] = (
                f"URL parameter ?part={part} is not an importance part of this model (one of {', '.join(options)}); "
                f"it was ignored ({DEFAULT_PART} is used)."
            )
        st.session_state["part"] = part if part in options else DEFAULT_PART
    elif st.session_state["part"] not in options:  # e.g. gradient-mean, then a model without a record
        st.session_state["part"] = DEFAULT_PART
    if "topk" not in st.session_state:
        text = qp.get("topk", DEFAULT_TOPK)
        try:
            parse_topk(text)
        except SelectionError as e:  # a link the input cannot hold: open with the default, and say so
            reason = str(e).rstrip(".")
            problems["topk"] = f"URL parameter ?topk={text} was ignored ({reason}); topk {DEFAULT_TOPK} is used."
            text = DEFAULT_TOPK
        st.session_state["topk"] = text
    for key in ("name_include", "name_exclude"):
        if key not in st.session_state:
            st.session_state[key] = qp.get(key) or None
    if "threshold" not in st.session_state:
        value, problem = url_threshold(qp["threshold"]) if "threshold" in qp else (None, None)
        st.session_state["threshold"] = value
        if problem:
            problems["threshold"] = problem
    return problems


def _show_url_problems(options: tuple[str, ...]) -> None:
    """Report ignored URL values until the user sets the input they were meant for."""
    problems = st.session_state.setdefault("_url_problems", {})
    problems.update(_init_from_query(options))
    if st.session_state.get("threshold") is not None:
        problems.pop("threshold", None)
    if st.session_state.get("part") != DEFAULT_PART:
        problems.pop("part", None)
    if st.session_state.get("topk") != DEFAULT_TOPK:
        problems.pop("topk", None)
    for text in problems.values():
        st.warning(text)


def render(data: CheckpointData) -> SelectionInputs:
    """Draw the selection inputs; return them parsed (errors are reported, not raised)."""
    options = source_options(data)
    _show_url_problems(options)
    st.sidebar.header("Selection")
    st.sidebar.caption("Applied in order: mask -> threshold -> topk.")
    part = _part_input(options)
    record_error = _record_caption(data) if part == GRADIENT_MEAN else None
    mask_file = st.sidebar.file_uploader(
        "Mask file (optional)",
        type=[s.lstrip(".") for s in MASK_SUFFIXES],
        key="mask_file",
        help=f"1-D bool tensor of length input_dim ({data.architecture.input_dim:,}) or unpruned length "
        f"({data.param_map.unpruned_length:,}, base-global indices).",
    )
    threshold = _threshold_input(part, threshold_step(str(data.path), part) if record_error is None else DEFAULT_STEP)
    topk_text = st.sidebar.text_input(
        "topk",
        key="topk",
        help="A count (5000), a fraction of what is left after mask and threshold (0.05, 1e-4) or a "
        "percentage (5%). Leave empty for none. 1.0 keeps everything.",
    )
    topk, topk_error = _parse_topk_input(topk_text)
    mask, mask_name, mask_path, mask_error = _uploaded_mask(mask_file, data)
    include, exclude = st.session_state.get("name_include"), st.session_state.get("name_exclude")
    filter_error = _name_filter_caption(data, include, exclude) if include or exclude else None
    _mirror_to_url(part, include, exclude, topk_text, threshold)
    # one message is shown: that of the last input in the order above that has a problem
    error = next((e for e in (filter_error, mask_error, topk_error, record_error) if e is not None), None)
    return SelectionInputs(part, topk, topk_text, threshold, mask, mask_name, mask_path, error, include, exclude)


def _part_input(options: tuple[str, ...]) -> str:
    """The importance-part selectbox."""
    return st.sidebar.selectbox(
        "Importance part",
        options,
        key="part",
        help="encoder-weight: L1 of encoder columns; decoder-weight: L1 of decoder rows; "
        "decoder-bias: |bias|; decoder-sum: |row sum + bias|."
        + (
            " gradient-mean: the pre-prune importance, |mean source gradient| over the examples pre-pruning "
            "averaged (pre_prune.safetensors)."
            if GRADIENT_MEAN in options
            else ""
        ),
    )


def _record_caption(data: CheckpointData) -> str | None:
    """Describe the pre-prune record ``gradient-mean`` ranks by; the error message when it cannot be read."""
    try:
        record = load_pre_prune(str(data.path))
        if record is None:
            raise CheckpointError(f"{data.path}: pre_prune.safetensors is gone; pick a weight part.")
        st.sidebar.caption(
            f"Ranking by the pre-prune record: |mean {record.source} gradient| over {record.n_samples:,} "
            f"examples, measured on {record.importance.size:,} dims."
        )
    except CheckpointError as e:
        return str(e)
    return None


def _threshold_input(part: str, step: float) -> float | None:
    """The threshold number input, whose +/- buttons move by ``step``."""
    return st.sidebar.number_input(
        "Threshold (optional)",
        min_value=0.0,
        value=None,
        step=step,
        format="%g",
        key="threshold",
        help=f"Keep dims with importance >= threshold. Leave empty for none. Type any number (1e-5, 0.003); "
        f"the +/- buttons step by {step:g}, a tenth of the largest {part} importance's power of ten.",
    )


def _parse_topk_input(topk_text: str) -> tuple[int | float | None, str | None]:
    """``(topk, None)``, ``(None, None)`` for an empty input, or ``(None, error message)``; the message
    names the URL parameter when the text came from the URL."""
    if not topk_text.strip():
        return None, None
    try:
        return parse_topk(topk_text), None
    except SelectionError as e:
        error = str(e)
        if topk_text.strip() == st.query_params.get("topk"):
            error = f"URL parameter ?topk={topk_text.strip()}: {error}"
        return None, error


def _uploaded_mask(mask_file, data: CheckpointData) -> tuple[np.ndarray | None, str | None, str | None, str | None]:
    """``(mask, file name, session copy path, None)`` for an uploaded mask, ``(None, None, None, error
    message)`` when it cannot be used, all ``None`` without an upload."""
    if mask_file is None:
        return None, None, None, None
    dest = None
    try:
        dest = _mask_copy(mask_file)
        return load_mask(dest, data.param_map), mask_file.name, str(dest), None
    except (SelectionError, CheckpointError) as e:
        # the user knows the file by its name, not by the session's copy
        text, name = str(e), mask_file.name
        error = text.replace(str(dest), name) if dest and str(dest) in text else f"{name}: {text}"
        return None, None, None, error


def _name_filter_caption(data: CheckpointData, include: str | None, exclude: str | None) -> str | None:
    """Describe the parameter-name filter with a button that clears it; the error message of a bad pattern."""
    try:
        names = name_mask(data.param_map, include, exclude)
        st.sidebar.caption(
            f"Parameter-name filter (set in *Where in the model*): include `{include or '-'}`, exclude "
            f"`{exclude or '-'}`; {int(names.sum()):,} dims match."
        )
        st.sidebar.button("Clear name filter", key="name_filter_sidebar_clear", on_click=_clear_name_filter)
    except SelectionError as e:
        return str(e)
    return None


def _mirror_to_url(
    part: str, include: str | None, exclude: str | None, topk_text: str, threshold: float | None
) -> None:
    """Write the inputs into the URL query (an empty input removes its parameter)."""
    st.query_params["part"] = part
    for key, value in (("name_include", include), ("name_exclude", exclude)):
        if value:
            st.query_params[key] = value
        elif key in st.query_params:
            del st.query_params[key]
    if topk_text.strip():
        st.query_params["topk"] = topk_text.strip()
    elif "topk" in st.query_params:
        del st.query_params["topk"]
    if threshold is not None:
        st.query_params["threshold"] = repr(float(threshold))
    elif "threshold" in st.query_params:
        del st.query_params["threshold"]


def _mask_copy(uploaded) -> Path:
    """The uploaded mask saved in this session's directory under a name made from its content
    (the browser's file name is never used as a path), written once per upload."""
    s = session_files()
    memo = st.session_state.get("_mask_copy")
    if memo and memo[0] == uploaded.file_id and (s.path / memo[1]).is_file():
        return s.path / memo[1]
    data = uploaded.getbuffer()
    suffix = next((x for x in MASK_SUFFIXES if uploaded.name.lower().endswith(x)), "")
    if not suffix:
        raise SelectionError(f"mask files must end in {', '.join(MASK_SUFFIXES)}.")
    name = f"masks/{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if memo and memo[1] != name:
        registry().discard(s, memo[1])  # the previous mask upload is no longer used
    path = registry().store(s, name, bytes(data))
    st.session_state["_mask_copy"] = (uploaded.file_id, name)
    return path


def _clear_name_filter() -> None:
    st.session_state["name_include"] = st.session_state["name_exclude"] = None
