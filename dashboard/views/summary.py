"""The checkpoint summary row."""

from __future__ import annotations

import streamlit as st

from gradiend_core.checkpoint import CheckpointData
from gradiend_core.summary import checkpoint_summary
from gradiend_core.units import format_bytes, format_count


def render(data: CheckpointData) -> None:
    """Draw the model's key facts (base model, dims, dtype, activations, source/target, mapping)."""
    s = checkpoint_summary(data)
    cols = st.columns(4)
    cols[0].metric("input_dim (dims)", format_count(s["input_dim"]), help=f"{s['input_dim']:,} dims")
    cols[1].metric(
        "Unpruned length (dims)", format_count(s["unpruned_length"]),
        help=f"{s['unpruned_length']:,} entries in the {s['mapped_parameters']} mapped base-model parameters",
    )
    cols[2].metric("latent_dim", s["latent_dim"])
    cols[3].metric("Size on disk", format_bytes(s["disk_bytes"]), help="All files of the checkpoint directory.")
    st.caption(
        f"base model **{s['base_model']}** · dtype **{s['torch_dtype']}** · encoder activation "
        f"**{s['activation_encoder']}** · decoder activation **{s['activation_decoder']}** · decoder bias "
        f"**{s['bias_decoder']}** · source **{s['source']}** · target **{s['target']}** · mapping "
        f"**{s['mapping_mode']}** · `{s['path']}`"
    )
