"""View "Compare models": top-k overlap of checkpoints of one base model, in base-global space."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.figures.compare_models import model_overlap_heatmap
from dashboard.figures.mask_panel import add_pick_targets, picked_cells
from dashboard.server.sessions import check_allowed
from dashboard.services import analysis_cache as cache
from dashboard.services.loading import checkpoint_key, load_checkpoint, sample_models
from dashboard.state.context import ViewContext
from dashboard.views.sidebar import mask_panel
from dashboard.views.tabs.distributions import follow
from dashboard.views.widgets.messages import about
from gradiend_core.errors import CheckpointError
from gradiend_core.ranking.importance import PARTS
from gradiend_core.selection.expr.build import combine, model_term, top_term
from gradiend_core.space.signature import base_signature, compatibility_problems

__all__ = ["render"]

#: The first is the default: counts in dims read right whatever the set sizes; a percentage of the
#: smaller set reads 100 % for 23 dims inside 4,461.
VALUES = {"intersection (dims)": "intersection", "Jaccard": "jaccard", "overlap (% of the smaller set)": "overlap"}


def _label(path: Path, taken: set) -> str:
    p = Path(path)
    base = p.parent.name if p.name == "model" else p.name
    label, i = base, 2
    while label in taken:
        label, i = f"{base} ({i})", i + 1
    return label


def _shares_space(path: str, params) -> bool:
    try:
        return base_signature(load_checkpoint(path).param_map, {}).params == params
    except (CheckpointError, OSError):
        return False


def _others(ctx: ViewContext) -> list[str]:
    here = checkpoint_key(ctx.path)[0]
    samples = {name: str(p) for name, p in sample_models() if checkpoint_key(str(p))[0] != here}
    params = base_signature(ctx.data.param_map, {}).params
    if "models_samples" not in st.session_state:  # seeded once; kept across tab switches (app.PERSISTENT_KEYS)
        st.session_state["models_samples"] = [name for name, p in samples.items() if _shares_space(p, params)]
    st.session_state["models_samples"] = [c for c in st.session_state["models_samples"] if c in samples]
    chosen = st.multiselect(
        "Bundled samples",
        list(samples),
        key="models_samples",
        help="Preselected: the samples whose param_map (names and shapes) matches the open model's.",
    )
    typed = st.text_area(
        "Other checkpoint directories (one per line)",
        key="models_paths",
        height=80,
        placeholder="/path/to/another/checkpoint",
    )
    return [samples[c] for c in chosen] + [line.strip() for line in (typed or "").splitlines() if line.strip()]


def _path_text(path: str) -> str:
    """A checkpoint path as an expression names it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _offer_cells(ctx: ViewContext, entries, result, cells, part: str, topk) -> None:
    """Offer the term of picked matrix cells: the open model's ``top()`` or another's ``model()``,
    two of them intersected off the diagonal, several cells joined by ``|``."""
    if not cells:
        return
    terms = [top_term(part, topk)] + [model_term(_path_text(e[1]), part, topk) for e in entries[1:]]
    names = list(result.overlap.names)
    expr, shown = None, []
    for i, j in cells:
        cell = terms[i] if i == j else combine(terms[i], terms[j], "intersect")
        expr = combine(expr, cell, "include")
        shown.append(names[i] if i == j else f"{names[i]} & {names[j]}")
    common = int(sum(result.overlap.intersection[i, j] for i, j in cells))
    note = f" ({common:,} common base-global entries; the open model keeps those it maps)" if len(cells) == 1 else ""
    mask_panel.offer(expr, ", ".join(shown), None, "models_pick", note)


def render(ctx: ViewContext) -> None:
    """Draw the model picker, the compatibility check and the overlap heatmap."""
    topk = ctx.inputs.topk
    paths = _others(ctx)
    follow(ctx.source, "models_part", PARTS)
    part = st.selectbox(
        "Part every model ranks by",
        PARTS,
        key="models_part",
        help="A weight part, which every checkpoint has; follows the sidebar part when that is one.",
    )
    entries: list[tuple[str, str, float]] = []
    sigs: dict[str, object] = {}
    rows = []
    taken: set = set()
    for path in [ctx.path] + paths:
        try:
            check_allowed(Path(path), "checkpoint")
            data = load_checkpoint(path)
            dir_, mtime = checkpoint_key(path)
        except (CheckpointError, PermissionError, OSError) as e:
            st.error(about(path, e))
            continue
        if any(e[1] == dir_ for e in entries):
            continue
        label = _label(data.path, taken)
        taken.add(label)
        entries.append((label, dir_, mtime))
        sigs[label] = base_signature(data.param_map, data.metadata)
        rows.append(
            {
                "model": label + (" (open)" if len(entries) == 1 else ""),
                "base model": sigs[label].base_model or "not recorded",
                "input_dim": data.architecture.input_dim,
                "unpruned length": data.param_map.unpruned_length,
                "path": str(data.path),
            }
        )
    if rows:
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            key="models_table",
            column_config={
                c: st.column_config.NumberColumn(c, format="localized") for c in ("input_dim", "unpruned length")
            },
        )
    if len(entries) < 2:
        st.info("Pick at least one other checkpoint (a bundled sample or a typed path) to compare with the open model.")
        return
    problems = compatibility_problems(sigs)
    first = entries[0][0]
    bad = {p.model for p in problems if p.kind == "params"}
    for p in problems:
        if p.kind == "params":
            st.error(p.message + " It is left out: its base-global indices mean other entries.")
        else:
            st.warning(
                p.message + " Their param_maps match, so indices line up, but they index another model's weights."
            )
    entries = [e for e in entries if e[0] not in bad]
    if len(entries) < 2:
        st.info(f"No other checkpoint shares {first!r}'s base-global index space.")
        return
    if topk is None:
        st.info("Set a topk in the sidebar: each model takes its own top-k by the sidebar part.")
        return
    result = cache.model_overlap(tuple(entries), part, topk)
    value = st.radio("Value", list(VALUES), horizontal=True, key="models_value")
    fig = add_pick_targets(model_overlap_heatmap(result, part, VALUES[value]))
    cells = picked_cells(mask_panel.pick_chart(fig, "models_heatmap", "model_topk_overlap"))
    st.caption(
        f"As gradiend's plot_topk_overlap_heatmap: every model takes its own top-k of {part} "
        "(a fraction is of its own input_dim), kept dims are mapped to base-global indices "
        "(positions in the full mapped parameters, which pruning does not change), and cells count common indices; "
        "the percentage divides by the smaller set, whose size the "
        "labels give. Click a cell to pick the dims both models keep for the mask (the diagonal: one model's top-k)."
    )
    _offer_cells(ctx, entries, result, cells, part, topk)
