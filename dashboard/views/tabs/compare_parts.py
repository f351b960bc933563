"""View "Compare parts": top-k overlap, Spearman's rho, UpSet and scatter of the four parts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.figures.compare_parts import importance_scatter, spearman_heatmap, upset_figure
from dashboard.figures.mask_panel import picked_indices
from dashboard.figures.overlap import overlap_heatmap
from dashboard.services import analysis_cache as cache
from dashboard.services.loading import checkpoint_key
from dashboard.state.context import ViewContext
from dashboard.views.sidebar import mask_panel
from dashboard.views.widgets.charts import show_figure
from gradiend_core.analysis.correlation import EXACT_LIMIT, SAMPLE_SIZE, SCATTER_SIZE, SEED
from gradiend_core.analysis.overlap import restrict_patterns
from gradiend_core.ranking.importance import PARTS
from gradiend_core.selection.expr.build import combine, top_term, upset_term

__all__ = ["STATE_KEYS", "render"]

#: Widget keys whose values outlive a visit to another tab (see dashboard.state.widgets).
STATE_KEYS = ("parts_overlap_value", "parts_scatter_x", "parts_scatter_y")
OVERLAP_VALUES = {
    "Jaccard": "jaccard",
    "intersection (dims)": "intersection",
    "overlap (% of the smaller set)": "overlap",
}


def _topk_label(topk) -> str:
    return f"{topk:g} (fraction)" if isinstance(topk, float) else f"{topk:,}"


def offer_patterns(patterns, rows, topk) -> None:
    """Offer the term of picked UpSet patterns: in every marked part's top-k and in no other
    (:func:`gradiend_core.selection.expr.build.upset_term`), several patterns joined by ``|``."""
    rows = [r for r in rows if 0 <= r < patterns.counts.size]
    if not rows:
        return
    terms = [top_term(p, topk) for p in patterns.names]
    expr = None
    for r in rows:
        expr = combine(expr, upset_term(terms, patterns.membership[r]), "include")
    what = ", ".join(f"'{patterns.label(r)}'" for r in rows)
    n_dims = int(sum(patterns.counts[r] for r in rows))
    mask_panel.offer(expr, f"pattern {what} of the top-{_topk_label(topk)} sets", n_dims, "parts_upset_pick")


def render(ctx: ViewContext) -> None:
    """Draw the overlap matrix and UpSet for the sidebar topk, then Spearman's rho and a scatter."""
    dir_, mtime = checkpoint_key(ctx.path)
    topk = ctx.inputs.topk
    if topk is None:
        st.info(
            "Set a topk in the sidebar to compare the parts' top-k sets; rank correlation and scatter follow below."
        )
    else:
        st.caption(
            f"Each part takes its own top {_topk_label(topk)} of all {ctx.data.architecture.input_dim:,} dims "
            "(topk only: the sidebar's mask and threshold are not applied here), by the same rule as the selection."
        )
        ov, patterns = cache.part_comparison(dir_, mtime, topk)
        value = st.radio("Overlap value", list(OVERLAP_VALUES), horizontal=True, key="parts_overlap_value")
        show_figure(
            overlap_heatmap(
                ov, OVERLAP_VALUES[value], title=f"Overlap of the parts' top-{_topk_label(topk)} sets: {value}"
            ),
            "parts_overlap",
            "part_topk_overlap",
        )
        chosen = st.multiselect(
            "Parts in the UpSet plot (2 to 4)",
            PARTS,
            default=list(PARTS),
            max_selections=4,
            key="parts_upset",
        )
        if len(chosen) >= 2:
            ordered = tuple(p for p in PARTS if p in chosen)
            shown = restrict_patterns(patterns, ordered)
            fig = upset_figure(shown, _topk_label(topk))
            picked = picked_indices(mask_panel.pick_chart(fig, "parts_upset_fig", "part_upset"))
            st.caption("Click a bar (shift-click for more) to pick the dims of that exact pattern for the mask.")
            offer_patterns(shown, picked, topk)
        else:
            st.caption("Choose at least two parts for the UpSet plot.")
    sp = cache.part_spearman(dir_, mtime)
    show_figure(spearman_heatmap(sp), "parts_spearman", "part_spearman")
    st.caption(
        "Spearman's ρ with average ranks for ties (as scipy.stats.spearmanr) "
        f"over every dim up to {EXACT_LIMIT:,} dims; "
        f"above, over a seeded (seed {SEED}) uniform sample of {SAMPLE_SIZE:,} dims, the same dims for every part."
        + (
            " A part that is constant (e.g. an all-zero decoder bias) has no rank correlation (n/a)."
            if pd.isna(sp.rho).any()
            else ""
        )
    )
    c1, c2 = st.columns(2)
    st.session_state.setdefault("parts_scatter_x", "encoder-weight")
    st.session_state.setdefault("parts_scatter_y", "decoder-weight")
    part_x = c1.selectbox("x axis", PARTS, key="parts_scatter_x")
    part_y = c2.selectbox("y axis", PARTS, key="parts_scatter_y")
    show_figure(
        importance_scatter(cache.part_scatter(dir_, mtime, part_x, part_y), part_x, part_y),
        "parts_scatter",
        f"scatter_{part_y}_vs_{part_x}",
    )
    st.caption(f"A seeded (seed {SEED}) uniform sample of at most {SCATTER_SIZE:,} dims, drawn on log-log axes.")
