"""View "Distributions": ECDF and retained-mass curve of one part; topk from a target mass."""

from __future__ import annotations

import streamlit as st

from dashboard.figures.distributions import ecdf_figure, retained_mass_figure
from dashboard.services import analysis_cache as cache
from dashboard.services.loading import checkpoint_key, load_ranking
from dashboard.state.context import ViewContext
from dashboard.views.widgets.charts import show_figure
from dashboard.views.widgets.metrics import metric_row, note_metric
from gradiend_core.analysis.distribution import cut_value
from gradiend_core.analysis.mass import count_for_mass, selection_point
from gradiend_core.ranking.importance import DEFAULT_PART, PARTS
from gradiend_core.util.units import format_count, format_percent

__all__ = ["STATE_KEYS", "follow", "render"]

TARGET_KEY = "target_mass_pct"
#: Widget keys whose values outlive a visit to another tab (see dashboard.state.widgets).
STATE_KEYS = ("dist_part", TARGET_KEY)


def follow(sidebar_part: str, key: str, options, fallback: str = DEFAULT_PART) -> None:
    """Set the selectbox ``key`` to the sidebar part when that changed since the last run (or the
    current choice is no longer an option; ``fallback`` when the sidebar part is not an option);
    otherwise leave the user's choice alone. Runs before the selectbox is drawn."""
    seen = f"_{key}_sidebar_part"
    if st.session_state.get(seen) != sidebar_part or st.session_state.get(key) not in options:
        st.session_state[seen] = sidebar_part
        st.session_state[key] = sidebar_part if sidebar_part in options else fallback


def _set_topk_for_target(path: str, part: str) -> None:
    """Button callback (runs before the next script run, so before the sidebar's widgets exist):
    set the sidebar part and topk to the smallest count reaching the target mass."""
    profile = cache.mass_profile(*checkpoint_key(path), part)
    share = float(st.session_state[TARGET_KEY]) / 100.0
    try:
        k = count_for_mass(load_ranking(path, part), share, profile)
    except ValueError as e:
        st.session_state["_target_mass_error"] = str(e)
        return
    st.session_state.pop("_target_mass_error", None)
    st.session_state["part"] = part
    st.session_state["topk"] = str(k)
    st.session_state["_target_mass_done"] = (part, share, k)


def _target_control(path: str, part: str) -> None:
    st.session_state.setdefault(TARGET_KEY, 90.0)
    st.number_input(
        "Target retained mass (%)",
        min_value=0.01,
        max_value=100.0,
        step=1.0,
        format="%g",
        key=TARGET_KEY,
        help="Share of this part's total importance the kept dims should hold.",
    )
    st.button(
        "Set topk to reach it",
        key="target_mass_apply",
        on_click=_set_topk_for_target,
        args=(path, part),
        help="Sets the sidebar part to this part and topk to the smallest count whose top dims hold the target.",
    )


def render(ctx: ViewContext) -> None:
    """Draw the mass counts, the target-mass control, the ECDF and the retained-mass curve."""
    options = PARTS + (() if ctx.source in PARTS else (ctx.source,))  # e.g. gradient-mean
    follow(ctx.source, "dist_part", options)
    part = st.selectbox(
        "Part",
        options,
        key="dist_part",
        help="Follows the sidebar part when that changes; the current selection is marked whichever part is shown.",
    )
    dir_, mtime = checkpoint_key(ctx.path)
    profile = cache.mass_profile(dir_, mtime, part)
    ranking = ctx.ranking(part)
    if profile.total <= 0:
        st.warning(f"{part} has no positive finite importance (total 0), so there is no mass to retain.")
    else:
        with metric_row("dist_mass_counts"):
            for share, (k, kept) in sorted(profile.share_points.items()):
                note_metric(
                    f"topk for {share:.0%} of the mass",
                    f"{k:,}",
                    f"{format_percent(k / profile.n_total)} of dims",
                    help=f"The top {k:,} dims of {part} hold {format_percent(kept)} of its total importance "
                    f"({profile.total:.6g}); {k - 1:,} would hold less than {share:.0%}.",
                )
            with st.container(width=220, key="dist_target"):
                _target_control(ctx.path, part)
        if err := st.session_state.get("_target_mass_error"):
            st.error(err)
        done = st.session_state.get("_target_mass_done")
        if done and done[0] == part:
            st.success(
                f"topk set to {done[2]:,}: the smallest count whose top {part} dims hold at least "
                f"{100 * done[1]:g} % of the mass."
            )
        if ctx.plan.mask is not None or ctx.plan.threshold is not None:
            st.caption(
                "Counts are over the whole part. With a mask or threshold in the sidebar, topk then takes that many "
                "of the dims left after them, which can hold less mass."
            )
    point = selection_point(ranking, ctx.selection, profile) if profile.total > 0 else None
    sel_label = "current selection" + ("" if part == ctx.source else f" (ranked by {ctx.source})")
    if point is not None:
        sel_label += f": importance kept {format_percent(point[1])}"
    # One above the other at full width: side by side, titles and legends were cut on a 1,024 px page.
    show_figure(retained_mass_figure(profile, part, point, sel_label), "dist_retained_mass", f"retained_mass_{part}")
    show_figure(ecdf_figure(profile, part, cut_value(ranking, ctx.selection)), "dist_ecdf", f"ecdf_{part}")
    st.caption(
        f"Both curves are exact at the points drawn (lines join them): the retained-mass curve at every rank up to "
        f"{profile.exact_ranks:,}, then at {profile.positions.size - profile.exact_ranks:,} value-bucket boundaries; "
        f"the ECDF at {profile.ecdf_x.size:,} importance values (bucket edges, 1/128 apart in relative terms). "
        "At most a few thousand "
        "points are drawn whatever the size. Sums are float64 over every dim; the counts above are exact. "
        f"Total {part} importance: {profile.total:.6g} over {format_count(profile.n_total)} dims"
        + (
            f"; {profile.n_nan:,} NaN and {profile.n_inf:,} Inf dims carry no mass."
            if profile.n_nan or profile.n_inf
            else "."
        )
    )
