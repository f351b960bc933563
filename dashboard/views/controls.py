"""Sidebar: the selection inputs (part, mask file, threshold, topk).

The part is one of the four weight parts or, when the checkpoint has a pre-prune record
(``pre_prune.safetensors``), ``gradient-mean``: the |mean source gradient| pre-pruning ranked by.

Values are mirrored into the URL query (``part``, ``topk``, ``threshold``) so a copied link
reopens the same selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import streamlit as st

from gradiend_core.checkpoint import CheckpointData
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.importance import DEFAULT_PART, GRADIENT_MEAN, PARTS
from gradiend_core.analysis.names import name_mask
from gradiend_core.masks import MASK_SUFFIXES, load_mask
from gradiend_core.selection import parse_topk
from dashboard.loading import has_pre_prune_record, load_pre_prune, load_ranking, session_dir

DEFAULT_TOPK = "0.05"
#: Threshold step when the part's importance is unknown or has no positive finite value.
DEFAULT_STEP = 1e-3


@dataclass
class SelectionInputs:
    """What the user chose; ``error`` holds the message of an invalid input.

    ``mask`` is the uploaded mask file's content (the name filter is kept apart in
    ``name_include``/``name_exclude``; the plan composes the two).
    """

    source: str
    topk: Optional[Union[int, float]]
    topk_text: str
    threshold: Optional[float]
    mask: Optional[np.ndarray]
    mask_name: Optional[str]
    mask_path: Optional[str]
    error: Optional[str] = None
    name_include: Optional[str] = None
    name_exclude: Optional[str] = None


def source_options(data: CheckpointData) -> Tuple[str, ...]:
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
    dims = ranking.dims()
    n_pos_inf = dims.count_at_least(math.inf)  # +Inf ranks first, then the finite values
    if n_pos_inf + ranking.n_nan >= ranking.size:
        return DEFAULT_STEP
    largest = dims.value_at(n_pos_inf)
    if not (math.isfinite(largest) and largest > 0):
        return DEFAULT_STEP
    return 10.0 ** (math.floor(math.log10(largest)) - 1)


def _init_from_query(options: Tuple[str, ...]) -> None:
    qp = st.query_params
    if "part" not in st.session_state:
        st.session_state["part"] = qp.get("part") if qp.get("part") in options else DEFAULT_PART
    elif st.session_state["part"] not in options:  # e.g. gradient-mean, then a model without a record
        st.session_state["part"] = DEFAULT_PART
    if "topk" not in st.session_state:
        st.session_state["topk"] = qp.get("topk", DEFAULT_TOPK)
    for key in ("name_include", "name_exclude"):
        if key not in st.session_state:
            st.session_state[key] = qp.get(key) or None
    if "threshold" not in st.session_state:
        try:
            st.session_state["threshold"] = float(qp["threshold"]) if "threshold" in qp else None
        except ValueError:
            st.session_state["threshold"] = None


def render(data: CheckpointData) -> SelectionInputs:
    """Draw the selection inputs; return them parsed (errors are reported, not raised)."""
    options = source_options(data)
    _init_from_query(options)
    st.sidebar.header("Selection")
    st.sidebar.caption("Applied in order: mask -> threshold -> topk.")
    part = st.sidebar.selectbox(
        "Importance part", options, key="part",
        help="encoder-weight: L1 of encoder columns; decoder-weight: L1 of decoder rows; "
        "decoder-bias: |bias|; decoder-sum: |row sum + bias|."
        + (" gradient-mean: the pre-prune importance, |mean source gradient| over the examples pre-pruning "
           "averaged (pre_prune.safetensors)." if GRADIENT_MEAN in options else ""),
    )
    error = None
    if part == GRADIENT_MEAN:
        try:
            record = load_pre_prune(str(data.path))
            if record is None:
                raise CheckpointError(f"{data.path}: pre_prune.safetensors is gone; pick a weight part.")
            st.sidebar.caption(
                f"Ranking by the pre-prune record: |mean {record.source} gradient| over {record.n_samples:,} "
                f"examples, measured on {record.importance.size:,} dims."
            )
        except CheckpointError as e:
            error = str(e)
    mask_file = st.sidebar.file_uploader(
        "Mask file (optional)", type=[s.lstrip(".") for s in MASK_SUFFIXES], key="mask_file",
        help=f"1-D bool tensor of length input_dim ({data.architecture.input_dim:,}) or unpruned length "
        f"({data.param_map.unpruned_length:,}, base-global indices).",
    )
    step = threshold_step(str(data.path), part) if error is None else DEFAULT_STEP
    threshold = st.sidebar.number_input(
        "Threshold (optional)", min_value=0.0, value=None, step=step, format="%g", key="threshold",
        help=f"Keep dims with importance >= threshold. Leave empty for none. Type any number (1e-5, 0.003); "
        f"the +/- buttons step by {step:g}, a tenth of the largest {part} importance's power of ten.",
    )
    topk_text = st.sidebar.text_input(
        "topk", key="topk",
        help="A count (5000), a fraction of what is left after mask and threshold (0.05, 1e-4) or a "
        "percentage (5%). Leave empty for none. 1.0 keeps everything.",
    )
    topk = None
    if topk_text.strip():
        try:
            topk = parse_topk(topk_text)
        except SelectionError as e:
            error = str(e)
    mask = mask_name = mask_path = None
    if mask_file is not None:
        dest = session_dir() / "masks" / Path(mask_file.name).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(mask_file.getvalue())
        try:
            mask = load_mask(dest, data.param_map)
            mask_name, mask_path = mask_file.name, str(dest)
        except SelectionError as e:
            error = str(e).replace(str(dest), mask_file.name)  # the user knows the file by its name
    include, exclude = st.session_state.get("name_include"), st.session_state.get("name_exclude")
    if include or exclude:
        try:
            names = name_mask(data.param_map, include, exclude)
            st.sidebar.caption(
                f"Parameter-name filter (set in *Where in the model*): include `{include or '-'}`, exclude "
                f"`{exclude or '-'}`; {int(names.sum()):,} dims match."
            )
            st.sidebar.button("Clear name filter", key="name_filter_sidebar_clear", on_click=_clear_name_filter)
        except SelectionError as e:
            error = str(e)
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
    return SelectionInputs(part, topk, topk_text, threshold, mask, mask_name, mask_path, error, include, exclude)


def _clear_name_filter() -> None:
    st.session_state["name_include"] = st.session_state["name_exclude"] = None
