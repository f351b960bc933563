"""The checkpoint summary row."""

from __future__ import annotations

import streamlit as st

from gradiend_core.checkpoint import CheckpointData
from gradiend_core.summary import checkpoint_summary
from gradiend_core.units import format_bytes, format_count


def render(data: CheckpointData) -> None:
    """Draw the model's key facts (base model, dims, dtype, activations, source/target, mapping)."""
    s = checkpoint_summary(data)
    cols = st.columns(5)
    cols[0].metric("Base model", str(s["base_model"]))
    cols[1].metric("input_dim (dims)", format_count(s["input_dim"]), help=f"{s['input_dim']:,} dims")
    cols[2].metric(
        "Unpruned length (dims)", format_count(s["unpruned_length"]),
        help=f"{s['unpruned_length']:,} entries in the {s['mapped_parameters']} mapped base-model parameters",
    )
    cols[3].metric("latent_dim", s["latent_dim"])
    cols[4].metric("Size on disk", format_bytes(s["disk_bytes"]))
    st.caption(
        f"dtype **{s['torch_dtype']}** · encoder activation **{s['activation_encoder']}** · decoder activation "
        f"**{s['activation_decoder']}** · decoder bias **{s['bias_decoder']}** · source **{s['source']}** · target "
        f"**{s['target']}** · mapping **{s['mapping_mode']}** · `{s['path']}`"
    )
