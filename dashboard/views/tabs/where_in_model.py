"""View "Where in the model": kept dims per base-model parameter and per layer x component,
and the parameter-name filter.

The name filter's patterns live in ``st.session_state["name_include"]`` and
``["name_exclude"]`` (``None`` when unset). They are set by button callbacks, i.e. before the next
run's sidebar, which is where the selection should read them: build the mask with
:func:`gradiend_core.selection.masks.name_mask` and AND it with the mask file's
(:func:`gradiend_core.selection.masks.compose_masks`), so that preview and export use it. The view
says whether the current selection lies inside the filter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.figures.mask_panel import add_pick_targets, picked_cells
from dashboard.figures.where_in_model import METRICS, layer_component_heatmap
from dashboard.services import analysis_cache as cache
from dashboard.services.loading import checkpoint_key
from dashboard.state import masks
from dashboard.state.context import ViewContext
from dashboard.views.sidebar import mask_panel
from dashboard.views.widgets.tables import display_table
from gradiend_core.analysis.locate import layer_component_grid
from gradiend_core.errors import SelectionError
from gradiend_core.selection.expr.build import params_term
from gradiend_core.selection.masks import matching_parameters, name_mask

__all__ = ["STATE_KEYS", "render"]

INCLUDE, EXCLUDE = "name_include", "name_exclude"
#: Widget keys whose values outlive a visit to another tab (see dashboard.state.widgets).
STATE_KEYS = ("where_metric", "name_include_input", "name_exclude_input")


def _apply_filter() -> None:
    st.session_state[INCLUDE] = (st.session_state.get("name_include_input") or "").strip() or None
    st.session_state[EXCLUDE] = (st.session_state.get("name_exclude_input") or "").strip() or None


def _clear_filter() -> None:
    for key in (INCLUDE, EXCLUDE):
        st.session_state[key] = None
    st.session_state["name_include_input"] = ""
    st.session_state["name_exclude_input"] = ""


def _name_filter(ctx: ViewContext) -> None:
    st.markdown("**Parameter-name filter** (Python regular expressions, searched anywhere in the name)")
    c1, c2 = st.columns(2)
    inc = c1.text_input(
        "Include parameters matching", key="name_include_input", placeholder=r"e.g. encoder\.layer\.[0-5]\."
    )
    exc = c2.text_input("Exclude parameters matching", key="name_exclude_input", placeholder=r"e.g. LayerNorm|bias$")
    pmap = ctx.data.param_map
    try:
        mask = name_mask(pmap, inc, exc)
        names = matching_parameters(pmap, inc, exc)
        ok = True
    except SelectionError as e:
        st.error(str(e))
        mask, names, ok = None, [], False
    if ok and mask is not None:
        st.caption(
            f"Matches {len(names):,} of {len(pmap):,} parameters, "
            f"{int(np.count_nonzero(mask)):,} of {pmap.input_dim:,} input dims."
        )
    b1, b2, _ = st.columns([1, 1, 4])
    b1.button("Apply to selection", key="name_filter_apply", on_click=_apply_filter, disabled=not ok, type="primary")
    b2.button("Clear filter", key="name_filter_clear", on_click=_clear_filter)
    applied_inc, applied_exc = st.session_state.get(INCLUDE), st.session_state.get(EXCLUDE)
    if applied_inc or applied_exc:
        try:
            applied = name_mask(pmap, applied_inc, applied_exc)
        except SelectionError as e:
            st.error(str(e))
            return
        inside = bool(applied[ctx.selection.keep].all())
        st.info(
            f"Name filter set: include `{applied_inc or '(all)'}`, exclude `{applied_exc or '(none)'}` - it is a mask, "
            "applied before threshold and topk. "
            + (
                "Every kept dim lies inside it."
                if inside
                else "The current selection still has dims outside it: the sidebar selection has not taken it up."
            )
        )


def render(ctx: ViewContext) -> None:
    """Draw the name filter, the layer x component heatmap and the per-parameter table."""
    _name_filter(ctx)
    dir_, mtime = checkpoint_key(ctx.path)
    part = ctx.source
    bd = cache.breakdown(dir_, mtime, cache.selection_key(ctx), ctx.selection, part)
    metric = st.radio("Heatmap value", list(METRICS), horizontal=True, key="where_metric")
    grid = layer_component_grid(bd)
    fig = add_pick_targets(layer_component_heatmap(grid, metric, part))
    cells = picked_cells(mask_panel.pick_chart(fig, "where_heatmap", "layer_component_heatmap"))
    mask_panel.offer_cells(ctx, grid, cells, "where_heatmap_pick")
    st.caption(
        "Layer and component are parsed from the parameter names (BERT, RoBERTa, DistilBERT, GPT-2, LLaMA-style); "
        "'outside layers' holds embeddings, final norms, pooler and heads; unknown names count as 'other'."
    )
    df = pd.DataFrame(bd.columns())
    st.markdown(
        f"**Per base-model parameter** ({len(df):,} mapped parameters; click a column header to sort, "
        "tick rows to pick them for the mask)"
    )
    event = st.dataframe(
        display_table(
            df,
            percent=("kept / in input", "share of kept importance", "share of part importance"),
            formats={"importance kept": "{:.4g}"},
        ),
        hide_index=True,
        key=f"where_table_{masks.pick_generation()}",
        on_select="rerun",
        selection_mode="multi-row",
        column_config={
            "entries": st.column_config.NumberColumn(
                "entries", help="Entries of the full base-model parameter", format="localized"
            ),
            "in input space": st.column_config.NumberColumn(
                "in input space", help="Entries in the GRADIEND input space", format="localized"
            ),
            "kept": st.column_config.NumberColumn(
                "kept", help="Entries the current selection keeps", format="localized"
            ),
            "importance kept": st.column_config.NumberColumn(
                "importance kept", help=f"Sum of {part} importance of the kept dims"
            ),
            "share of part importance": st.column_config.NumberColumn(
                "share of part importance", help=f"Share of all {part} importance in this parameter's input dims"
            ),
        },
    )
    rows = sorted(event.selection.rows) if event else []
    if rows:
        names = [bd.names[r] for r in rows]
        n_dims = int(sum(bd.in_input[r] for r in rows))
        term = params_term(names, ctx.data.param_map)
        mask_panel.offer(term, f"{len(names)} parameter(s)", n_dims, "where_table_pick")
