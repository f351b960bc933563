"""The mask panel above the views: the mask expression as text, one-click include / exclude /
intersect / invert, the preview of what the mask keeps on its own, and saved masks.

Terms come from pointing: a view draws its chart with :func:`pick_chart`, turns the selection into
a term and calls :func:`offer`, which shows the term and the buttons that combine it with the
applied expression (:func:`gradiend_core.selection.expr.build.combine`). The panel sits above the tabs, not
in the sidebar, because expressions built by pointing are long (a cell is a regex of parameter
names), the per-term counts and the layer x component preview need the width, and it stays in
view whichever tab a term is picked in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.figures.common import chart_config
from dashboard.figures.mask_panel import mask_preview_heatmap, picked_cells
from dashboard.server.sessions import registry, session_files
from dashboard.state import masks
from dashboard.state.context import ViewContext
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.selection.expr.build import file_term, params_term
from gradiend_core.selection.expr.bundle import load_mask_bundle
from gradiend_core.selection.expr.evaluate import MaskResult

__all__ = ["OPS_UI", "offer", "offer_cells", "pick_chart", "render", "render_editor", "sidebar_note"]

#: (op, button label, help) of the buttons that combine a picked term with the expression.
OPS_UI = (
    ("include", "Include (|)", "Keep what the expression keeps, and also this (or)."),
    (
        "exclude",
        "Exclude (& ~)",
        "Keep what the expression keeps, except this (and not). Without an expression: everything except this.",
    ),
    ("intersect", "Intersect (&)", "Keep only what both the expression and this keep (and)."),
)


def pick_chart(fig: go.Figure, key: str, filename: str, modes: Sequence[str] = ("points", "box")) -> Any:
    """Draw a figure whose points can be picked; return its selection (``{"points": [...], ...}``).

    The key carries :func:`dashboard.state.masks.pick_generation`, so a used pick is cleared.
    """
    event = st.plotly_chart(
        fig,
        width="stretch",
        key=f"{key}_{masks.pick_generation()}",
        config=chart_config(filename),
        on_select="rerun",
        selection_mode=tuple(modes),
    )
    return event.get("selection") if event else None


def offer(term: str, what: str, n_dims: int | None, key: str, note: str = "") -> None:
    """Show a picked term and the one-click buttons that combine it with the applied expression."""
    with st.container(border=True):
        dims = f" - {n_dims:,} input dims" if n_dims is not None else ""
        st.markdown(f"**Picked:** {what}{dims}{note}")
        st.code(term, language=None, wrap_lines=True)
        for col, (op, label, help_) in zip(st.columns(len(OPS_UI)), OPS_UI):
            col.button(label, key=f"{key}_{op}", on_click=masks.take_pick, args=(term, op), help=help_, width="stretch")


def _error() -> None:
    err = masks.error()
    if err:
        origin, message = err
        applied = st.session_state.get(masks.APPLIED)
        kept = f"The last valid expression stays applied: `{applied}`." if applied else "No mask expression is applied."
        st.error(f"**{origin}** was not applied. {kept}\n\n```\n{message}\n```")


def _editor() -> None:
    st.text_area(
        "Mask expression",
        key=masks.TEXT,
        height=80,
        on_change=lambda: masks.propose(st.session_state.get(masks.TEXT)),
        placeholder="e.g. top(decoder-weight, 5%) & top(encoder-weight, 5%) & ~name('embeddings')",
        help="Terms: top(PART, K), above(PART, T), name(REGEX), file(PATH), model(PATH, PART, K); "
        "combine with & (and), | (or), ~ (not) and parentheses. Ctrl+Enter or Apply applies it.",
    )
    c1, c2, c3, _ = st.columns([1, 1, 1, 1])
    c1.button(
        "Apply",
        key="mask_apply",
        type="primary",
        width="stretch",
        on_click=lambda: masks.propose(st.session_state.get(masks.TEXT)),
    )
    applied = st.session_state.get(masks.APPLIED)
    c2.button(
        "Invert (~)",
        key="mask_invert",
        disabled=not applied,
        on_click=masks.take_pick,
        args=(None, "invert"),
        width="stretch",
        help="Keep exactly what the expression drops.",
    )
    c3.button(
        "Clear",
        key="mask_clear",
        disabled=not (applied or st.session_state.get(masks.TEXT)),
        on_click=masks.propose,
        args=(None,),
        width="stretch",
    )


def _term_table(result: MaskResult) -> None:
    rows = [{"term": t, "dims it keeps on its own": c} for t, c in result.term_counts.items()]
    rows.append({"term": "the whole expression", "dims it keeps on its own": result.kept})
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="mask_terms",
        width="stretch",
        column_config={
            "term": st.column_config.TextColumn("term", width="large"),
            "dims it keeps on its own": st.column_config.NumberColumn(format="localized", width="small"),
        },
    )


def _preview(ctx: ViewContext, result: MaskResult | None) -> None:
    grid = masks.mask_grid(ctx.path, ctx.data, result)
    kept = result.kept if result is not None else ctx.data.param_map.input_dim
    fig = mask_preview_heatmap(grid, kept, ctx.data.param_map.input_dim)
    cells = picked_cells(pick_chart(fig, "mask_preview", "mask_preview"))
    offer_cells(ctx, grid, cells, "mask_preview_pick")


def offer_cells(ctx: ViewContext, grid, cells, key: str) -> None:
    """Offer the ``name()`` term of the parameters in picked layer x component cells of ``grid``."""
    if not cells:
        return
    chosen = {(grid.layers[r], grid.components[c]) for r, c in cells}
    from gradiend_core.space.layers import parse_param_name

    pmap = ctx.data.param_map
    names = [e.name for e in pmap if parse_param_name(e.name) in chosen]
    if not names:
        return
    chosen_names = set(names)
    n_dims = sum(e.num_selected for e in pmap if e.name in chosen_names)
    shown = ", ".join(
        f"{'outside layers' if layer == '-' else 'layer ' + layer} x {c}" for layer, c in sorted(chosen)[:6]
    )
    more = f" and {len(chosen) - 6} more" if len(chosen) > 6 else ""
    what = f"{len(chosen)} cell(s) ({shown}{more}): {len(names)} parameter(s)"
    offer(params_term(names, pmap), what, n_dims, key)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "mask"


def _save() -> None:
    name = (st.session_state.get("mask_save_name") or "").strip()
    expr = st.session_state.get(masks.APPLIED)
    if name and expr:
        masks.saved()[name] = expr
        st.session_state["mask_save_name"] = ""


def _delete(name: str) -> None:
    masks.saved().pop(name, None)


def _upload(ctx: ViewContext) -> None:
    up = st.file_uploader(
        "Load a saved mask (.safetensors)",
        type=["safetensors"],
        key="mask_upload",
        help="A mask downloaded here: its expression and its mask over base-global indices.",
    )
    if up is None or st.session_state.get("_mask_upload_done") == up.file_id:
        return
    st.session_state["_mask_upload_done"] = up.file_id
    try:
        bundle = load_mask_bundle(up.getvalue())
        local = bundle.local_mask(ctx.data.param_map, ctx.data.metadata)
    except SelectionError as e:
        st.error(f"{up.name}: {e}")
        return
    name, expr = bundle.name or up.name, bundle.expression
    try:
        same = bool((masks.evaluate(ctx.path, ctx.data, expr).mask == local).all())
    except SelectionError:
        same = False
    if not same:  # the recipe does not reproduce the saved entries here: use the entries themselves
        try:  # within the session's disk budget, deleted with the session
            dest = registry().store(session_files(), f"masks/{_slug(name)}.safetensors", up.getvalue())
        except CheckpointError as e:
            st.error(f"{up.name}: {e}")
            return
        expr = file_term(str(dest))
        st.session_state["_mask_upload_note"] = (
            f"The expression saved in {up.name} gives another mask on this model (or cannot be evaluated here); "
            "its saved entries are used as a file() term."
        )
    masks.saved()[name] = expr
    masks.propose(expr, f"saved mask {name!r}")
    st.rerun()


def _saved_masks(ctx: ViewContext) -> None:
    st.markdown("**Saved masks** (this session)")
    applied = st.session_state.get(masks.APPLIED)
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input("Name", key="mask_save_name", placeholder="e.g. both ends, layers 6-11")
    c2.button("Save current", key="mask_save", on_click=_save, disabled=not applied, width="stretch")
    note = st.session_state.pop("_mask_upload_note", None)
    if note:
        st.info(note)
    for i, (name, expr) in enumerate(list(masks.saved().items())):
        a, b, c, d = st.columns([5, 1, 1, 1], vertical_alignment="center")
        a.markdown(f"**{name}**" + (" (applied)" if expr == applied else "") + f"  \n`{expr}`")
        b.button(
            "Apply",
            key=f"mask_saved_apply_{i}",
            on_click=masks.propose,
            args=(expr, f"saved mask {name!r}"),
            width="stretch",
        )
        c.button("Delete", key=f"mask_saved_delete_{i}", on_click=_delete, args=(name,), width="stretch")
        d.download_button(
            "Download",
            data=lambda n=name, e=expr: masks.bundle_bytes(ctx.path, ctx.data, n, e),
            file_name=f"{_slug(name)}.safetensors",
            mime="application/octet-stream",
            key=f"mask_saved_download_{i}",
            width="stretch",
            help="The expression and the resolved bool mask over base-global indices (safetensors).",
        )
    _upload(ctx)


def _label(result: MaskResult | None, others: bool = False) -> str:
    """The panel's title; ``others``: a mask file or the name filter also acts in the mask step."""
    if result is None:
        if others:
            return "Mask expression: none (the mask file or name filter in the sidebar is the mask step)"
        return "Mask expression: none (every input dim passes the mask step)"
    text = result.expression if len(result.expression) <= 90 else result.expression[:87] + "..."
    # inline code: a label is Markdown, which would eat the regexes' backslashes
    return f"Mask expression: keeps {result.kept:,} of {result.input_dim:,} input dims - `{text.replace('`', chr(39))}`"


def render(ctx: ViewContext) -> None:
    """Draw the mask panel: an expander above the views whose label shows the applied expression
    and what it keeps."""
    result = ctx.plan.expression
    _error()  # outside the expander, so a rejected expression is seen even when it is closed
    # A stable key: the label follows the expression, but the panel stays open or closed as the user
    # left it, so a pick made in a view below does not push that view down the page.
    spec = ctx.plan.mask_spec
    others = bool(spec.file or spec.name_include or spec.name_exclude)
    with st.expander(_label(result, others), key="mask_panel"):
        _editor()
        if result is not None:
            st.caption(
                f"Keeps **{result.kept:,}** of {result.input_dim:,} input dims on its own, before threshold and topk "
                "(ANDed with a mask file and the name filter). The link of this page carries it."
            )
            _term_table(result)
        _preview(ctx, result)
        _saved_masks(ctx)


def render_editor() -> None:
    """Only the expression field and its buttons (when the plan failed and the views are not drawn)."""
    _error()
    _editor()


def sidebar_note(result: MaskResult | None) -> None:
    """One line in the sidebar's Selection section naming the applied expression."""
    if result is not None:
        st.sidebar.caption(
            f"Mask expression (panel above the views) keeps {result.kept:,} of {result.input_dim:,} dims."
        )
