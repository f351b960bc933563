"""Export the current selection as a pruned checkpoint, and offer it as a .zip download."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import streamlit as st

from gradiend_core.archive import zip_directory
from gradiend_core.checkpoint import CheckpointData
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.export import GRADIENT_MEAN, cli_command, export_pruned
from gradiend_core.importance import DEFAULT_PART
from gradiend_core.selection import Ranking
from gradiend_core.units import format_bytes
from dashboard.loading import check_allowed
from dashboard.views.controls import SelectionInputs

EXPORT_ROOT = Path.cwd() / "exports"


def default_export_dir(data: CheckpointData, inputs: SelectionInputs) -> str:
    """``./exports/<model>-<part>-top<topk>[-thr<threshold>][-mask]``."""
    name = data.path.parent.name if data.path.name == "model" else data.path.name
    bits = [name, inputs.part]
    if inputs.topk is not None:
        bits.append(f"top{inputs.topk_text.strip().replace('%', 'pct').replace(' ', '')}")
    if inputs.threshold is not None:
        bits.append(f"thr{inputs.threshold:g}")
    if inputs.mask_path:
        bits.append("mask")
    if inputs.name_include or inputs.name_exclude:
        bits.append("names")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(bits))
    return str(EXPORT_ROOT / slug)


def python_snippet(source: str, out: str, inputs: SelectionInputs) -> str:
    """The Python API calls that produce the same export."""
    gradient_mean = inputs.part == GRADIENT_MEAN
    args = ["importance=importance"] if gradient_mean else [f"part={inputs.part!r}"]
    if inputs.topk is not None:
        args.append(f"topk={inputs.topk!r}")
    if inputs.threshold is not None:
        args.append(f"threshold={float(inputs.threshold)!r}")
    lines = ["from gradiend_core import ParamMappedGradiendModel"]
    if gradient_mean:
        lines.append("from gradiend_core.trainer import load_pre_prune_record")
    if inputs.mask_path:
        lines.append("from gradiend_core.masks import load_mask")
    if inputs.name_include or inputs.name_exclude:
        lines.append("from gradiend_core.analysis.names import name_mask")
    lines.append(f"model = ParamMappedGradiendModel.from_pretrained({source!r})")
    if gradient_mean:
        lines.append("# gradient-mean: the pre-prune |mean source gradient| of each of the model's dims")
        lines.append(f"importance = load_pre_prune_record({source!r}).importance_for(model.base_global_index().numpy())")
    masks = []
    if inputs.mask_path:
        lines.append(f"mask = load_mask({inputs.mask_path!r}, model.mapping)")
        masks.append("mask")
    if inputs.name_include or inputs.name_exclude:
        lines.append(f"names = name_mask(model.mapping, {inputs.name_include!r}, {inputs.name_exclude!r})")
        masks.append("names")
    if masks:
        args.append(f"mask={' & '.join(masks)}")
    lines.append(f"pruned = model.prune({', '.join(args)})")
    lines.append(f"pruned.save_pretrained({out!r})")
    return "\n".join(lines)


def render(data: CheckpointData, inputs: SelectionInputs, ranking: Optional[Ranking]) -> None:
    """Draw the export form; on click, export, verify and offer the download."""
    st.sidebar.header("Export")
    auto = default_export_dir(data, inputs)
    if st.session_state.get("export_dir") in (None, st.session_state.get("_auto_export_dir")):
        st.session_state["export_dir"] = auto
    st.session_state["_auto_export_dir"] = auto
    out = st.sidebar.text_input("Export directory", key="export_dir", help="A new or empty directory.")
    overwrite = st.sidebar.checkbox("Replace a non-empty directory", key="export_overwrite")
    clicked = st.sidebar.button("Export pruned model", key="export", type="primary", disabled=inputs.error is not None)
    if clicked:
        try:
            check_allowed(Path(out), "export directory")
            with st.spinner("Pruning, writing and verifying..."):
                # gradient-mean is not a weight part: pass its (cached) ranking with its label.
                labelled = inputs.part == GRADIENT_MEAN and ranking is not None
                result = export_pruned(
                    data, out, part=DEFAULT_PART if inputs.part == GRADIENT_MEAN else inputs.part, topk=inputs.topk,
                    threshold=inputs.threshold, mask=inputs.mask, importance=ranking,
                    importance_label=GRADIENT_MEAN if labelled else None, overwrite=overwrite, mask_path=inputs.mask_name,
                    name_include=inputs.name_include, name_exclude=inputs.name_exclude,
                )
            st.session_state["last_export"] = {
                "path": str(result.path),
                "kept": result.selection.k,
                "bytes": sum(f.stat().st_size for f in result.path.iterdir()),
                # The reproductions write beside the export, so running them as shown works and compares.
                "command": cli_command(
                    data.path, f"{result.path}-cli", inputs.part, inputs.topk, inputs.threshold, inputs.mask_path,
                    inputs.name_include, inputs.name_exclude,
                ),
                "python": python_snippet(str(data.path), f"{result.path}-py", inputs),
            }
        except (CheckpointError, SelectionError, PermissionError, OSError) as e:
            st.session_state.pop("last_export", None)
            st.sidebar.error(str(e))
    last = st.session_state.get("last_export")
    if last and Path(last["path"]).is_dir():
        st.success(
            f"Exported {last['kept']:,} input dims to `{last['path']}` ({format_bytes(last['bytes'])}); reloaded and "
            "verified. It loads with `gradiend`'s `ParamMappedGradiendModel.from_pretrained`."
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
