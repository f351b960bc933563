"""The live reduction preview, with what the plan warns about next to it."""

from __future__ import annotations

import streamlit as st

from dashboard.views.widgets.metrics import change_metric, metric_row, note_metric
from gradiend_core.pruning.plan import PruningPlan
from gradiend_core.pruning.reduction import preview_disk_sizes
from gradiend_core.util.units import format_bytes, format_change, format_count, format_percent

__all__ = ["IMPORTANCE_KEPT_HELP", "render"]

#: The one definition of "Importance kept" (gradiend_core.pruning.reduction.importance_kept), as the page states it.
IMPORTANCE_KEPT_HELP = (
    "Share of the {source} importance held by the kept dims: the sum of their finite importance over the "
    "sum of the finite importance of all {n:,} dims (NaN and ±Inf count 0). The Distributions view and "
    "`gradiend-core prune` report the same number."
)


def render(plan: PruningPlan) -> None:
    """Draw the plan's warnings, then kept dims, parameters, memory, disk and kept importance, before -> after."""
    report = plan.report
    for text in plan.warnings:
        st.warning(text)
    before, after = preview_disk_sizes(plan.checkpoint, report)
    enc = report.params_after["encoder_weight"] + report.params_after["encoder_bias"]
    dec = report.params_after["decoder_weight"] + report.params_after["decoder_bias"]
    with metric_row("preview_metrics"):
        note_metric(
            "Input dims kept",
            format_count(report.input_dim_after),
            f"{format_percent(report.kept_fraction)} of {format_count(report.input_dim_before)}",
            help=f"{report.input_dim_after:,} of {report.input_dim_before:,} dims "
            "(one base-model parameter entry each)",
        )
        change_metric(
            "GRADIEND parameters",
            format_count(report.total_params_after),
            format_change(report.total_params_after, report.total_params_before),
            help=f"{report.total_params_before:,} -> {report.total_params_after:,} (encoder {enc:,}, decoder {dec:,})",
        )
        change_metric(
            "Memory",
            format_bytes(report.memory_bytes_after),
            format_change(report.memory_bytes_after, report.memory_bytes_before),
            help=f"{report.memory_bytes_before:,} B -> {report.memory_bytes_after:,} B of parameters at {report.dtype}",
        )
        change_metric(
            "Size on disk",
            format_bytes(after.model_bytes),
            format_change(after.model_bytes, before.model_bytes),
            help=f"{before.model_bytes:,} B -> {after.model_bytes:,} B: the model files (config, weights, mapping) "
            f"of this checkpoint as saved, and of the export as it will be written with safetensors. After: "
            f"{after.describe()} The export also writes pruning.json.",
        )
        note_metric(
            "Importance kept",
            format_percent(report.importance_kept),
            help=IMPORTANCE_KEPT_HELP.format(source=report.source, n=report.input_dim_before)
            if report.source
            else "No importance used.",
        )
