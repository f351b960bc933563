"""The live reduction preview."""

from __future__ import annotations

import streamlit as st

from gradiend_core.checkpoint import CARRIED_JSON_FILES
from gradiend_core.reduction import ReductionReport
from gradiend_core.units import format_bytes, format_count, format_percent


def _delta(after: float, before: float) -> str:
    """The saving as a percentage, never rounded to a misleading -100 % or -0 %."""
    if not before or after == before:
        return ""
    saved = 100 * (1 - after / before)
    digits = 1
    while digits < 6 and (round(saved, digits) >= 100 or round(saved, digits) == 0):
        digits += 1
    return f"-{saved:.{digits}f} %"


def render(report: ReductionReport) -> None:
    """Draw kept dims, parameters, memory, disk and kept importance, before -> after."""
    cols = st.columns(5)
    cols[0].metric(
        "Input dims kept", format_count(report.input_dim_after),
        delta=f"{format_percent(report.kept_fraction)} of {format_count(report.input_dim_before)}", delta_color="off",
        delta_arrow="off",
        help=f"{report.input_dim_after:,} of {report.input_dim_before:,} dims (one base-model parameter entry each)",
    )
    cols[1].metric(
        "GRADIEND parameters", format_count(report.total_params_after),
        delta=_delta(report.total_params_after, report.total_params_before), delta_color="inverse",
        help=f"{report.total_params_before:,} -> {report.total_params_after:,} "
        f"(encoder {report.params_after['encoder_weight'] + report.params_after['encoder_bias']:,}, decoder "
        f"{report.params_after['decoder_weight'] + report.params_after['decoder_bias']:,})",
    )
    cols[2].metric(
        "Memory", format_bytes(report.memory_bytes_after),
        delta=_delta(report.memory_bytes_after, report.memory_bytes_before), delta_color="inverse",
        help=f"{report.memory_bytes_before:,} B -> {report.memory_bytes_after:,} B at {report.dtype}",
    )
    side = {k: v for k, v in report.disk_files_after.items() if k in CARRIED_JSON_FILES}
    cols[3].metric(
        "On disk", format_bytes(report.model_disk_bytes_after),
        delta=_delta(report.model_disk_bytes_after, report.model_disk_bytes_before), delta_color="inverse",
        help="Model files as save_pretrained writes them with safetensors, mapping files included: "
        + ", ".join(f"{k} {v:,} B" for k, v in report.disk_files_after.items() if k not in side)
        + (f". Carried unchanged: {', '.join(f'{k} {v:,} B' for k, v in side.items())}." if side else "."),
    )
    cols[4].metric(
        "Importance kept", format_percent(report.importance_kept),
        help=f"Share of the total {report.source} importance held by the kept dims." if report.source else "No importance used.",
    )
