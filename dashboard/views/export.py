"""Export the current plan as a pruned checkpoint, and offer it as a .zip download."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from gradiend_core.archive import zip_directory
from gradiend_core.checkpoint import check_target
from gradiend_core.disk import directory_disk_size
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.export import export_plan, reproduce_command
from gradiend_core.importance import GRADIENT_MEAN
from gradiend_core.plan import PruningPlan
from gradiend_core.units import format_bytes
from dashboard.context import ViewContext
from dashboard.loading import check_allowed
from dashboard.views.controls import SelectionInputs

__all__ = ["default_export_dir", "python_snippet", "render"]

EXPORT_ROOT = Path.cwd() / "exports"
REPLACE_LABEL = "Replace a non-empty directory"


def default_export_dir(plan: PruningPlan, inputs: SelectionInputs) -> str:
    """``./exports/<model>-<source>-top<topk>[-thr<threshold>][-mask][-names][-expr]``."""
    path = plan.checkpoint.path
    name = path.parent.name if path.name == "model" else path.name
    bits = [name, plan.source]
    if plan.topk is not None:
        bits.append(f"top{inputs.topk_text.strip().replace('%', 'pct').replace(' ', '')}")
    if plan.threshold is not None:
        bits.append(f"thr{plan.threshold:g}")
    if plan.mask_spec.file:
        bits.append("mask")
    if plan.mask_spec.name_include or plan.mask_spec.name_exclude:
        bits.append("names")
    if plan.mask_spec.expression:
        bits.append("expr")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(bits))
    return str(EXPORT_ROOT / slug)


def python_snippet(plan: PruningPlan, out: str, mask_path: str = None) -> str:
    """The Python API calls that produce the same export."""
    source = str(plan.checkpoint.path)
    spec = plan.mask_spec
    mask_path = mask_path or spec.file
    gradient_mean = plan.source == GRADIENT_MEAN
    args = ["importance=importance"] if gradient_mean else [f"part={plan.source!r}"]
    if plan.topk is not None:
        args.append(f"topk={plan.topk!r}")
    if plan.threshold is not None:
        args.append(f"threshold={float(plan.threshold)!r}")
    lines = ["from gradiend_core import ParamMappedGradiendModel"]
    if gradient_mean:
        lines.append("from gradiend_core.records import load_pre_prune_record")
    if mask_path:
        lines.append("from gradiend_core.masks import load_mask")
    if spec.name_include or spec.name_exclude:
        lines.append("from gradiend_core.analysis.names import name_mask")
    lines.append(f"model = ParamMappedGradiendModel.from_pretrained({source!r})")
    if gradient_mean:
        lines.append("# gradient-mean: the pre-prune |mean source gradient| of each of the model's dims")
        lines.append(f"importance = load_pre_prune_record({source!r}).importance_for(model.base_global_index().numpy())")
    masks = []
    if mask_path:
        lines.append(f"mask = load_mask({mask_path!r}, model.mapping)")
        masks.append("mask")
    if spec.name_include or spec.name_exclude:
        lines.append(f"names = name_mask(model.mapping, {spec.name_include!r}, {spec.name_exclude!r})")
        masks.append("names")
    if masks:
        args.append(f"mask={' & '.join(masks)}")
    if spec.expression:
        args.append(f"mask_expr={spec.expression!r}")
    lines.append(f"pruned = model.prune({', '.join(args)})")
    lines.append(f"pruned.save_pretrained({out!r})")
    return "\n".join(lines)


def render(ctx: ViewContext) -> None:
    """Draw the export form; on click, export, verify and offer the download."""
    plan, inputs = ctx.plan, ctx.inputs
    st.sidebar.header("Export")
    auto = default_export_dir(plan, inputs)
    if st.session_state.get("export_dir") in (None, st.session_state.get("_auto_export_dir")):
        st.session_state["export_dir"] = auto
    st.session_state["_auto_export_dir"] = auto
    out = st.sidebar.text_input("Export directory", key="export_dir", help="A new or empty directory.")
    overwrite = st.sidebar.checkbox(REPLACE_LABEL, key="export_overwrite")
    clicked = st.sidebar.button("Export pruned model", key="export", type="primary", disabled=inputs.error is not None)
    if clicked:
        try:
            check_allowed(Path(out), "export directory")
            check_target(Path(out), overwrite, plan.checkpoint.path, how_to_replace=f"tick '{REPLACE_LABEL}'")
            with st.spinner("Pruning, writing and verifying..."):
                result = export_plan(plan, out, overwrite=overwrite)
            st.session_state["last_export"] = {
                "path": str(result.path),
                "kept": result.selection.k,
                "disk": directory_disk_size(result.path),
                # The reproductions write beside the export, so running them as shown works and compares.
                "command": reproduce_command(plan, f"{result.path}-cli", inputs.mask_path),
                "python": python_snippet(plan, f"{result.path}-py", inputs.mask_path),
            }
        except (CheckpointError, SelectionError, PermissionError, OSError) as e:
            st.session_state.pop("last_export", None)
            st.sidebar.error(str(e))
    last = st.session_state.get("last_export")
    if last and Path(last["path"]).is_dir():
        st.success(
            f"Exported {last['kept']:,} input dims to `{last['path']}` "
            f"({format_bytes(last['disk'].model_bytes)} on disk "
            f"in the model files, side files {format_bytes(last['disk'].side_bytes)} apart); reloaded and verified. It "
            "loads with `gradiend`'s `ParamMappedGradiendModel.from_pretrained`."
        )
        st.download_button(
            "Download .zip", data=zip_directory(last["path"]), file_name=f"{Path(last['path']).name}.zip",
            mime="application/zip", key="download_export",
        )
        with st.expander("Reproduce this export"):
            st.caption("Command line (writes byte-identical weight and mapping files):")
            st.code(last["command"], language="bash")
            st.caption("Python:")
            st.code(last["python"], language="python")
