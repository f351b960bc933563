"""Caches in front of ``gradiend_core.analysis`` for the analysis views.

Keys are the checkpoint's resolved directory and modification time (so a re-saved checkpoint is
recomputed) plus what the result depends on: part, topk, or a key of the whole selection. Only
small results are cached (matrices, profiles, patterns, tables of capped size), never index sets
of input_dim size.
"""

from __future__ import annotations

import streamlit as st

from dashboard.services.loading import load_checkpoint, load_ranking
from dashboard.state.context import ViewContext
from gradiend_core.analysis import correlation, locate, mass, models, overlap, topk_table
from gradiend_core.ranking.importance import PARTS
from gradiend_core.selection.rule import Selection

__all__ = [
    "breakdown",
    "mass_profile",
    "model_overlap",
    "part_comparison",
    "part_scatter",
    "part_spearman",
    "selection_key",
    "topk_rows",
]


def selection_key(ctx: ViewContext) -> tuple:
    """What determines ``ctx.selection``: source, topk, threshold and the mask's digest."""
    plan = ctx.plan
    return (plan.source, plan.topk, plan.threshold, plan.selection.k, plan.mask_spec.sha256)


@st.cache_data(max_entries=32, show_spinner="Summing importance mass...")
def mass_profile(path: str, mtime: float, part: str) -> mass.MassProfile:
    return mass.mass_profile(load_ranking(path, part))


@st.cache_data(max_entries=16, show_spinner="Taking every part's top-k and counting overlaps...")
def part_comparison(path: str, mtime: float, topk) -> tuple[overlap.OverlapMatrix, overlap.IntersectionPatterns]:
    """Overlap matrix and exact intersection patterns of the four parts' top-k sets (the sets
    themselves, up to 4 x input_dim indices, are not kept)."""
    sets = overlap.part_topk_sets({p: load_ranking(path, p) for p in PARTS}, topk)
    n = load_ranking(path, PARTS[0]).size
    return overlap.overlap_matrix(sets, n), overlap.intersection_patterns(sets, n)


@st.cache_data(max_entries=8, show_spinner="Ranking importance for Spearman's rho...")
def part_spearman(path: str, mtime: float) -> correlation.SpearmanMatrix:
    return correlation.spearman_matrix({p: load_ranking(path, p) for p in PARTS})


@st.cache_data(max_entries=16)
def part_scatter(path: str, mtime: float, part_x: str, part_y: str) -> correlation.PairedSample:
    return correlation.paired_sample(load_ranking(path, part_x), load_ranking(path, part_y))


@st.cache_data(max_entries=16)
def breakdown(path: str, mtime: float, key: tuple, _selection: Selection, part: str) -> locate.ParamBreakdown:
    return locate.selection_breakdown(load_checkpoint(path).param_map, load_ranking(path, part), _selection)


@st.cache_data(max_entries=8, show_spinner="Building the top-k table...")
def topk_rows(
    path: str, mtime: float, key: tuple, _selection: Selection, part: str, limit: int | None
) -> topk_table.TopkFeatureTable:
    return topk_table.topk_feature_table(
        load_checkpoint(path).param_map, load_ranking(path, part), _selection, part, limit
    )


@st.cache_data(max_entries=8, show_spinner="Comparing models in base-global space...")
def model_overlap(entries: tuple[tuple[str, str, float], ...], part: str, topk) -> models.ModelOverlap:
    """``entries``: ``(label, resolved path, mtime)`` per model."""
    maps = {label: (load_checkpoint(p).param_map, load_ranking(p, part)) for label, p, _ in entries}
    sigs = {
        label: models.base_signature(load_checkpoint(p).param_map, load_checkpoint(p).metadata)
        for label, p, _ in entries
    }
    return models.model_overlap(maps, topk, sigs)
