"""Export the current plan as a pruned checkpoint, and offer it as a .zip download.

What the page says about an export is tied to what was exported: the export's settings are kept
with it, and once the model or the selection changes it is shown as an *earlier* export with
those settings. The download is this session's export exactly as verified (packed once, from
files checked against the checksums taken during verification); when the export directory has
changed since (another session replaced it, say), the page says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard.server.sessions import check_allowed, registry, session_files
from dashboard.state.context import ViewContext
from dashboard.state.inputs import SelectionInputs
from gradiend_core.checkpoint import check_target
from gradiend_core.checkpoint.archive import zip_verified
from gradiend_core.checkpoint.files import EXPORT_MASK_FILE
from gradiend_core.checkpoint.sizes import DiskSize
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.pruning.export import ExportResult, export_plan
from gradiend_core.pruning.plan import PruningPlan
from gradiend_core.pruning.reproduce import export_folder_name, python_snippet, reproduce_command
from gradiend_core.util.units import format_bytes

__all__ = ["default_export_dir", "export_settings", "render"]

#: The session's download archive, inside its directory (one at a time).
DOWNLOAD_NAME = "exports/download.zip"

EXPORT_ROOT = Path.cwd() / "exports"
REPLACE_LABEL = "Replace a non-empty directory"


def default_export_dir(plan: PruningPlan, inputs: SelectionInputs) -> str:
    """``./exports/<model>-<source>-top<topk>[-thr<threshold>][-mask][-names][-expr]`` (see
    :func:`~gradiend_core.pruning.reproduce.export_folder_name`; topk as the user typed it)."""
    return str(EXPORT_ROOT / export_folder_name(plan, inputs.topk_text))


def export_settings(plan: PruningPlan, inputs: SelectionInputs) -> dict[str, Any]:
    """What an export was made of: model, importance source, topk, threshold and mask (with its
    digest), for comparing with the current selection and for telling the user."""
    spec = plan.mask_spec
    return {
        "model": str(plan.checkpoint.path),
        "source": plan.source,
        "topk": inputs.topk_text.strip() if plan.topk is not None else None,
        "threshold": plan.threshold,
        "mask": inputs.mask_name,
        "mask_sha256": spec.sha256,
        "names": (spec.name_include, spec.name_exclude),
        "expression": spec.expression,
    }


def _describe(settings: dict[str, Any]) -> str:
    bits = [f"model `{settings['model']}`", f"ranked by {settings['source']}"]
    if settings["topk"] is not None:
        bits.append(f"topk {settings['topk']}")
    if settings["threshold"] is not None:
        bits.append(f"threshold {settings['threshold']:g}")
    if settings["mask"] or settings["mask_sha256"]:
        digest = (settings["mask_sha256"] or "")[:12]
        bits.append(f"mask {settings['mask'] or '(names/expression)'} (sha256 {digest}...)")
    include, exclude = settings["names"]
    if include or exclude:
        bits.append(f"names include `{include or '-'}` exclude `{exclude or '-'}`")
    return ", ".join(bits)


def _signature(path: Path) -> dict[str, tuple[int, int, int]]:
    """Identity of a directory's files: inode, size, modification time (cheap to compare on reruns)."""
    out = {}
    try:
        for f in os.scandir(path):
            if f.is_file(follow_symlinks=False):
                st_ = f.stat(follow_symlinks=False)
                out[f.name] = (st_.st_ino, st_.st_size, st_.st_mtime_ns)
    except OSError:
        pass
    return out


def _pack(result: ExportResult) -> tuple[str | None, str | None, dict[str, tuple[int, int, int]]]:
    """Pack the export once, from its files checked against the verified checksums.

    Returns:
        ``(archive path or None, why there is no archive or None, the directory's signature)``.
    """
    files, reg = session_files(), registry()
    before = _signature(result.path)
    estimate = sum(size for _, size, _ in before.values()) + 1024 * (len(before) + 1)
    try:
        out = reg.reserve(files, DOWNLOAD_NAME, estimate)
        zip_verified(result.path, result.file_sha256, out, arcname=result.path.name)
    except CheckpointError as e:
        reg.discard(files, DOWNLOAD_NAME)
        return None, str(e), before
    if _signature(result.path) != before:
        reg.discard(files, DOWNLOAD_NAME)
        return None, f"{result.path} changed while it was packed; it is not offered for download.", before
    return str(out), None, before


def _export(ctx: ViewContext, out: str, overwrite: bool) -> None:
    plan, inputs = ctx.plan, ctx.inputs
    registry().discard(session_files(), DOWNLOAD_NAME)
    st.session_state.pop("last_export", None)
    try:
        check_allowed(Path(out), "export directory")
        check_target(Path(out), overwrite, plan.checkpoint.path, how_to_replace=f"tick '{REPLACE_LABEL}'")
        with st.spinner("Pruning, writing and verifying..."):
            result = export_plan(plan, out, overwrite=overwrite, transient=[registry().folder])
    except (CheckpointError, SelectionError, PermissionError, OSError) as e:
        st.sidebar.error(str(e))
        return
    with st.spinner("Packing the verified export for download..."):
        archive, note, signature = _pack(result)
    mask = str(result.path / EXPORT_MASK_FILE) if EXPORT_MASK_FILE in result.file_sha256 else None
    st.session_state["last_export"] = {
        "path": str(result.path),
        "kept": result.selection.k,
        # sizes of the verified files (the signature was checked against their checksums)
        "disk": DiskSize.from_sizes({name: size for name, (_, size, _) in signature.items()}),
        "settings": export_settings(plan, inputs),
        "signature": signature,
        "archive": archive,
        "archive_note": note,
        # The reproductions write beside the export and read the mask saved in it.
        "command": reproduce_command(plan, f"{result.path}-cli", mask, [registry().folder]),
        "python": python_snippet(plan, f"{result.path}-py", mask, [registry().folder]),
    }


def _typed() -> None:
    """The user edited the export directory: keep theirs, unless they cleared it or typed the
    automatic name."""
    value = (st.session_state.get("export_dir") or "").strip()
    st.session_state["_export_dir_typed"] = bool(value) and value != st.session_state.get("_auto_export_dir")


def render(ctx: ViewContext) -> None:
    """Draw the export form; on click, export, verify and offer the download."""
    plan, inputs = ctx.plan, ctx.inputs
    st.sidebar.header("Export")
    auto = default_export_dir(plan, inputs)
    st.session_state["_auto_export_dir"] = auto
    if not st.session_state.get("_export_dir_typed") or not (st.session_state.get("export_dir") or "").strip():
        st.session_state["export_dir"] = auto  # follows the model and the selection until the user types one
    out = st.sidebar.text_input(
        "Export directory",
        key="export_dir",
        on_change=_typed,
        help="A new or empty directory. Named after the model and the selection until you type another.",
    )
    overwrite = st.sidebar.checkbox(REPLACE_LABEL, key="export_overwrite")
    if st.sidebar.button("Export pruned model", key="export", type="primary", disabled=inputs.error is not None):
        _export(ctx, out, overwrite)
    last = st.session_state.get("last_export")
    if last:
        _show_last(last, export_settings(plan, inputs))


def _show_last(last: dict[str, Any], current: dict[str, Any]) -> None:
    path = Path(last["path"])
    is_current = last["settings"] == current
    changed = _signature(path) != last["signature"]
    disk = last["disk"]
    what = (
        f"{last['kept']:,} input dims to `{path}` ({format_bytes(disk.model_bytes)} on disk in the model files, "
        f"side files {format_bytes(disk.side_bytes)} apart)"
    )
    if not is_current:
        st.info(
            f"Earlier export in this session, not the current selection: {what}, verified; made with "
            f"{_describe(last['settings'])}."
        )
    elif not changed:
        st.success(
            f"Exported {what}; reloaded and verified. It loads with `gradiend`'s "
            "`ParamMappedGradiendModel.from_pretrained`."
        )
    if changed:
        st.warning(
            f"This session exported {last['kept']:,} input dims to `{path}` and verified them, but the directory has "
            "changed since (another export replaced it, or its files were edited or deleted): it no longer holds that "
            "export. The download below is this session's export as it was verified."
        )
    label = (
        "Download .zip"
        if is_current and not changed
        else ("Download the earlier export (.zip)" if not is_current else "Download this session's export (.zip)")
    )
    archive = last.get("archive")
    if archive and Path(archive).is_file():
        st.download_button(
            label,
            data=lambda: Path(archive).read_bytes(),
            file_name=f"{path.name}.zip",
            mime="application/zip",
            key="download_export",
        )
    else:
        st.caption(f"No download: {last.get('archive_note') or 'the packed export is gone; export again.'}")
    with st.expander("Reproduce this export" if is_current else "Reproduce the earlier export"):
        st.caption("Command line (writes byte-identical weight and mapping files):")
        st.code(last["command"], language="bash")
        st.caption("Python:")
        st.code(last["python"], language="python")
