"""Sidebar: choose the checkpoint (bundled sample, local path, or uploaded .zip)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.server.sessions import check_allowed, registry, session_files, upload_checkpoint
from dashboard.services.loading import load_checkpoint, path_from_argv, sample_models
from gradiend_core.errors import CheckpointError

__all__ = ["render"]

#: Where the checkpoint comes from (the options of the "Source" radio).
MODEL_SOURCES = ("Bundled sample", "Local path", "Upload .zip")
#: Largest accepted upload, bytes (Streamlit's own limit is set in .streamlit/config.toml).
MAX_UPLOAD_BYTES = 2 * 1024**3


def _initial_path() -> str | None:
    return st.query_params.get("model") or path_from_argv()


def render() -> str | None:
    """Draw the model picker and return the chosen checkpoint path (``None`` if none yet)."""
    samples = sample_models()
    by_name = {name: str(path) for name, path in samples}
    initial = _initial_path()
    if "model_source" not in st.session_state:
        initial_is_sample = initial is None or any(
            Path(initial).resolve() == Path(p).resolve() for p in by_name.values()
        )
        st.session_state["model_source"] = MODEL_SOURCES[0] if (initial_is_sample and samples) else MODEL_SOURCES[1]
        if initial and not initial_is_sample:
            st.session_state["model_path"] = initial
        elif initial:
            st.session_state["sample"] = next(
                n for n, p in by_name.items() if Path(p).resolve() == Path(initial).resolve()
            )

    st.sidebar.header("Model")
    source = st.sidebar.radio("Source", MODEL_SOURCES, key="model_source", horizontal=False)
    path: str | None = None
    if source == MODEL_SOURCES[0]:
        if not samples:
            st.sidebar.warning("No bundled samples found; run `python sample_models/build_samples.py`.")
            return None
        name = st.sidebar.selectbox("Sample", list(by_name), key="sample")
        path = by_name[name]
    elif source == MODEL_SOURCES[1]:
        typed = st.sidebar.text_input("Checkpoint directory", key="model_path", placeholder="/path/to/run/model")
        path = (typed or "").strip() or None  # a pasted path often carries spaces or a newline
        if path:
            check_allowed(Path(path), "checkpoint")
    else:
        path = _uploaded()
    if source != MODEL_SOURCES[2]:
        registry().release_upload(session_files())  # an upload no longer shown is deleted (unless shared)
        if path:
            st.query_params["model"] = path
    return path


def _uploaded() -> str | None:
    """The uploaded checkpoint, unpacked and opened once (see :mod:`dashboard.server.sessions`)."""
    up = st.sidebar.file_uploader("Zipped checkpoint directory", type=["zip"], key="model_zip")
    if up is None:
        registry().release_upload(session_files())
        return None
    if up.size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{up.name} is {up.size:,} bytes; uploads are limited to {MAX_UPLOAD_BYTES:,} bytes.")
    path = str(upload_checkpoint(up))
    try:
        load_checkpoint(path)  # a checkpoint that unpacks but does not open is deleted now, not at session end
    except CheckpointError as e:
        registry().fail_upload(session_files(), str(e).replace(path, up.name))
        raise CheckpointError(str(e).replace(path, up.name)) from e
    return path
