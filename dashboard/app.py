"""GRADIEND pruning dashboard.

Run: ``streamlit run dashboard/app.py -- PATH`` (or ``gradiend-core dashboard PATH``), or open
with ``?model=PATH``. The page reads top to bottom: pick a model, choose mask/threshold/topk,
see the savings, explore, export.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts dashboard/ (not the repo) on sys.path; make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.services.loading import load_checkpoint, load_ranking
from dashboard.state import last_valid, masks
from dashboard.state.context import ViewContext
from dashboard.state.inputs import SelectionInputs
from dashboard.state.widgets import keep_widget_state
from dashboard.views.sidebar import (
    controls,
    export,
    header,
    mask_panel,
    model_picker,
    preview,
)
from dashboard.views.tabs import (
    compare_models,
    compare_parts,
    curve,
    distributions,
    selection,
    stages,
    topk_table,
    training,
    where_in_model,
)
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.pruning.plan import plan_pruning

__all__ = []  # the page script: run by Streamlit, imported by nothing

PERSISTENT_KEYS = (
    "model_source",
    "sample",
    "model_path",
    "part",
    "topk",
    "threshold",
    "export_dir",
    "export_overwrite",
)
#: Choices inside the views, kept across tab visits like the sidebar inputs.
VIEW_KEYS = (
    distributions.STATE_KEYS
    + compare_parts.STATE_KEYS
    + where_in_model.STATE_KEYS
    + topk_table.STATE_KEYS
    + stages.STATE_KEYS
    + ("models_samples", "models_paths", "models_value")
)

st.set_page_config(page_title="GRADIEND pruning", page_icon=":scissors:", layout="wide")
st.title("GRADIEND pruning")

# Streamlit drops the state of a widget that a run does not draw (e.g. the sample picker while
# "Upload .zip" is chosen, the selection inputs while no model is open, a view's choices while
# another tab is open). Re-assigning the values keeps them, so switching back shows what is applied.
keep_widget_state(PERSISTENT_KEYS + VIEW_KEYS)

try:
    path = model_picker.render()
except (CheckpointError, ValueError, PermissionError) as e:
    st.error(str(e))
    st.stop()
if path is None:
    st.info("Choose a bundled sample, type a checkpoint directory, or upload a zipped checkpoint in the sidebar.")
    st.stop()

try:
    data = load_checkpoint(path)
except (CheckpointError, PermissionError) as e:
    st.error(str(e))
    st.stop()

header.render(data)
inputs = controls.render(data)
mask_expr = masks.applied(path, data)  # only an expression that evaluated here; errors are shown by the panel
mask_panel.sidebar_note(mask_expr)


def _plan(inputs: SelectionInputs):
    return plan_pruning(
        data,
        source=inputs.source,
        topk=inputs.topk,
        threshold=inputs.threshold,
        mask=inputs.mask,
        mask_file=inputs.mask_path,
        name_include=inputs.name_include,
        name_exclude=inputs.name_exclude,
        ranking=load_ranking(path, inputs.source),
        mask_expr=mask_expr,
        ranking_for=masks.ranking_for,
        resolve_path=masks.resolve_path,
    )


# While an input is being retyped (empty or invalid), the last valid selection stays on the page.
problem = inputs.error
if problem is None:
    try:
        plan = _plan(inputs)
        last_valid.remember(path, inputs)
    except (SelectionError, CheckpointError) as e:
        problem = str(e)
if problem is not None:
    inputs = last_valid.recall(path, problem)
    if inputs is None:
        st.error(problem)
        if mask_expr is not None:
            mask_panel.render_editor()  # the expression may be why nothing is left: let it be changed here
        st.stop()
    last_valid.show_stale(problem, inputs)
    try:
        plan = _plan(inputs)
    except (SelectionError, CheckpointError) as e:  # e.g. a mask file that was removed meanwhile
        st.error(str(e))
        if mask_expr is not None:
            mask_panel.render_editor()
        st.stop()
ctx = ViewContext(path=path, data=data, inputs=inputs, plan=plan)

st.subheader("Preview")
preview.render(plan)
export.render(ctx)
mask_panel.render(ctx)

# One tab per question a user brings; each view module draws from ctx only.
TABS = [
    ("Selection", selection.render),
    ("Distributions", distributions.render),
    ("Compare parts", compare_parts.render),
    ("Where in the model", where_in_model.render),
    ("Top-k table", topk_table.render),
    ("Compare models", compare_models.render),
    ("Training", training.render),
    ("Pruning stages", stages.render),
    ("Pruning curve", curve.render),
]
# Only the open view runs (lazy tabs), so a slider move redraws one view, not all of them; the open
# view lives in the URL (?view=...), so a copied link reopens it.
tabs = st.tabs([name for name, _ in TABS], key="view", bind="query-params", default=TABS[0][0])
for tab, (_, render_view) in zip(tabs, TABS):
    if tab.open:
        with tab:
            render_view(ctx)
