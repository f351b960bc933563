"""The checkpoint summary row."""

from __future__ import annotations

import streamlit as st

from dashboard.views.widgets.metrics import metric_row, note_metric
from gradiend_core.checkpoint import CheckpointData
from gradiend_core.checkpoint.overview import checkpoint_overview
from gradiend_core.checkpoint.sizes import directory_disk_size
from gradiend_core.util.units import format_bytes, format_count

__all__ = ["render"]


def render(data: CheckpointData) -> None:
    """Draw the model's key facts (base model, dims, dtype, activations, source/target, mapping)."""
    s = checkpoint_overview(data)
    disk = directory_disk_size(data.path)
    with metric_row("summary_metrics"):
        note_metric("input_dim (dims)", format_count(s["input_dim"]), help=f"{s['input_dim']:,} dims")
        note_metric(
            "Unpruned length (dims)",
            format_count(s["unpruned_length"]),
            help=f"{s['unpruned_length']:,} entries in the {s['mapped_parameters']} mapped base-model parameters",
        )
        note_metric("latent_dim", s["latent_dim"])
        note_metric(
            "Size on disk",
            format_bytes(disk.model_bytes),
            help=f"{disk.model_bytes:,} B in the model files; the preview's size on disk before the cut. "
            f"{disk.describe()}",
        )
    st.caption(
        f"base model **{s['base_model']}** · dtype **{s['torch_dtype']}** · encoder activation "
        f"**{s['activation_encoder']}** · decoder activation **{s['activation_decoder']}** · decoder bias "
        f"**{'yes' if s['bias_decoder'] else 'no'}** · source **{s['source']}** · target **{s['target']}** · mapping "
        f"**{s['mapping_mode']}** · `{s['path']}`"
    )
