"""View "Pruning stages": pre-pruning against post-pruning, both stages' combined reduction, and
what the current cut costs on the saved validation gradients.

Reads the training records next to the checkpoint (``pre_prune.safetensors``,
``validation_gradients.safetensors``); each section says what it needs when a record is absent.
The numbers come from :mod:`gradiend_core.analysis.stages` and
:func:`gradiend_core.analysis.cut_cost.cut_cost`.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.figures.stages import recall_figure, reduction_figure, stage_label
from dashboard.services.loading import checkpoint_key, load_checkpoint, load_pre_prune, load_ranking, load_validation
from dashboard.state.context import ViewContext
from dashboard.views.widgets.charts import show_figure
from dashboard.views.widgets.messages import about
from dashboard.views.widgets.metrics import metric_row, note_metric
from dashboard.views.widgets.tables import show_table
from gradiend_core.analysis.cut_cost import CutCost, cut_cost
from gradiend_core.analysis.stages import StageRecall, combined_reduction, stage_recall
from gradiend_core.checkpoint.files import PRE_PRUNE_FILE, VALIDATION_FILE
from gradiend_core.checkpoint.records import PrePruneRecord
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.ranking.importance import DEFAULT_PART, GRADIENT_MEAN, PARTS
from gradiend_core.util.units import format_bytes, format_count, format_percent

__all__ = ["STATE_KEYS", "render"]

#: Widget keys whose values outlive a visit to another tab (see dashboard.state.widgets).
STATE_KEYS = ("stages_post_part",)


def keep_digest(keep: np.ndarray) -> str:
    """Cache key of a selection: a digest of its kept local indices."""
    return hashlib.blake2b(np.ascontiguousarray(keep, dtype=np.int64).tobytes(), digest_size=16).hexdigest()


@st.cache_data(max_entries=16, show_spinner="Comparing the pre-prune ranking with the post-prune top-k...")
def _recall(path: str, mtime: float, post_part: str, k: int) -> StageRecall:
    data = load_checkpoint(path)
    record = load_pre_prune(path)
    return stage_recall(
        data.param_map.base_global_index(),
        load_ranking(path, post_part),
        load_ranking(path, GRADIENT_MEAN),
        record.kept_base_global(),
        k,
        post_part=post_part,
        n_pre_measured=int(record.importance.size),
    )


@st.cache_data(max_entries=16, show_spinner="Running the encoder with and without the cut...")
def _cut_cost(path: str, mtime: float, digest: str, _keep: np.ndarray) -> CutCost:
    return cut_cost(load_checkpoint(path), _keep, load_validation(path))


def _number(x: float, fmt: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞ (both classes constant)"
    return format(x, fmt)


def _load(what: str, loader, path: str):
    try:
        return loader(path)
    except CheckpointError as e:
        st.error(about(what, e))
        return None


def _recall_section(ctx: ViewContext, record: PrePruneRecord | None) -> StageRecall | None:
    st.markdown("#### Did pre-pruning keep what the trained model needs?")
    if record is None:
        if (ctx.data.path / PRE_PRUNE_FILE).is_file():
            return None  # unreadable: the error is shown above
        st.info(
            f"This checkpoint has no pre-prune record ({PRE_PRUNE_FILE}), so there is no pre-prune selection to "
            "compare. gradiend_core's trainer writes it next to the checkpoint when training runs with a "
            "pre_prune_config (PrePruneConfig); it holds the |mean source gradient| of every dim it measured and the "
            "dims it kept."
        )
        return None
    st.session_state.setdefault("stages_post_part", DEFAULT_PART)
    post_part = st.selectbox(
        "Post-prune importance (the trained model's T_k)",
        PARTS,
        key="stages_post_part",
        help="Post-pruning ranks by a weight part of the trained model; PostPruneConfig's default is decoder-weight.",
    )
    dir_, mtime = checkpoint_key(ctx.path)
    r = _recall(dir_, mtime, post_part, ctx.selection.k)
    n = r.n_dims
    with metric_row("stages_recall_metrics"):
        note_metric(
            "Ranking recall at k",
            format_percent(r.ranking_recall),
            f"random ranking: {format_percent(r.random_recall)}",
            help=f"|P_k ∩ T_k| / k = {r.n_both:,} / {r.k:,}: of the trained model's top {r.k:,} {post_part} dims "
            "(T_k), "
            f"the share that are also among the top {r.k:,} by pre-prune importance (P_k), both over this checkpoint's "
            f"{n:,} dims.",
        )
        note_metric(
            "Kept-set recall at k",
            format_percent(r.kept_recall),
            help=f"|R ∩ T_k| / k = {r.n_kept_in_post:,} / {r.k:,}: the share of T_k that pre-pruning kept (R)."
            + (
                " 100 % by construction here: every dim of this checkpoint was kept by pre-pruning."
                if r.pre_pruned
                else ""
            ),
        )
        note_metric(
            "k (current selection)",
            f"{r.k:,}",
            f"{format_percent(r.k / n)} of {n:,} dims",
            help="Both top-k sets have as many dims as the current selection keeps (set by the sidebar).",
        )
        note_metric(
            "Pre-pruning kept",
            f"{r.n_pre_kept:,}",
            f"of {r.n_pre_measured:,} dims measured",
            help=f"|R| over the {r.n_pre_measured:,} dims pre-pruning measured ({record.n_samples:,} examples, "
            f"|mean {record.source} gradient|); {r.n_pre_kept_in_model:,} of this checkpoint's {n:,} dims are among "
            "them.",
        )
    st.caption(
        f"Compared in base-global index space, over this checkpoint's {n:,} dims D. **T_k**: the top k of D by the "
        f"trained model's {post_part} importance, the dims post-pruning with topk={r.k:,} keeps. **P_k**: the top k of "
        "D by the pre-prune importance (the record's |mean source gradient|, gradient-mean in the sidebar). **R**: the "
        "dims pre-pruning kept. Ranking recall |P_k ∩ T_k| / k says how many of the dims post-pruning keeps would have "
        "survived a pre-prune straight to k dims; a random ranking scores k / n."
        + (
            " This checkpoint was trained on pre-pruned dims (D ⊆ R), so its trained importance exists only for "
            "them: the comparison is within what pre-pruning kept, and the kept-set recall is 1 throughout."
            if r.pre_pruned
            else " Pre-pruning's selection was not applied to this checkpoint "
            f"({r.n_pre_kept_in_model:,} of its {n:,} dims "
            "are in R), so the kept-set recall compares the record's kept set with the trained model's top-k."
        )
        + (
            f" {r.n_unmeasured:,} dims have no pre-prune importance (not measured) and rank last in P_k."
            if r.n_unmeasured
            else ""
        )
    )
    show_figure(recall_figure(r), "stages_recall", "pre_post_recall")
    return r


def _reduction_section(ctx: ViewContext, record: PrePruneRecord | None, recall: StageRecall | None) -> None:
    st.markdown("#### Combined reduction of both stages")
    data = ctx.data
    # Pre-pruning is a stage of this checkpoint's chain only when it was trained on the kept dims.
    pre_kept = int(record.kept.size) if record is not None and recall is not None and recall.pre_pruned else None
    stages = combined_reduction(
        data.architecture,
        data.param_map.unpruned_length,
        ctx.selection.k,
        pre_kept=pre_kept,
        dtypes=data.weight_dtypes(),
    )
    show_figure(reduction_figure(stages), "stages_reduction", "combined_reduction")
    first = stages[0]
    df = pd.DataFrame(
        {
            "stage": [stage_label(s) for s in stages],
            "input dims": [s.input_dim for s in stages],
            "GRADIEND parameters": [s.params for s in stages],
            "memory (bytes)": [s.memory_bytes for s in stages],
            "memory": [format_bytes(s.memory_bytes) for s in stages],
            "share of unpruned dims": [s.input_dim / first.input_dim for s in stages],
        }
    )
    show_table(
        df,
        "stages_table",
        percent=("share of unpruned dims",),
        column_config={
            "GRADIEND parameters": st.column_config.NumberColumn(
                "GRADIEND parameters", help="Encoder and decoder weights and biases (and a LayerNorm's two, if any)"
            ),
            "memory (bytes)": st.column_config.NumberColumn(
                "memory (bytes)", help=f"Parameter bytes in memory at {data.architecture.torch_dtype}"
            ),
        },
    )
    last = stages[-1]
    note = (
        f"Unpruned length {first.input_dim:,} -> {last.input_dim:,} dims after the current selection: "
        f"{format_count(first.params)} -> {format_count(last.params)} parameters, "
        f"{format_bytes(first.memory_bytes)} -> {format_bytes(last.memory_bytes)}."
    )
    if record is None:
        note += f" Without a pre-prune record ({PRE_PRUNE_FILE}) the chain shows no pre-pruning stage."
    elif pre_kept is None:
        note += (
            f" Pre-pruning's selection ({record.kept.size:,} dims) was not applied to this checkpoint, so it is not a "
            "stage of this chain."
        )
    st.caption(note)


def _ratio(after: float, before: float) -> float:
    """after / before of a class separation; ``nan`` when before is 0, infinite or missing."""
    ok = before is not None and math.isfinite(before) and before > 0 and after is not None and not math.isnan(after)
    return after / before if ok else float("nan")


def _cut_cost_metrics(c: CutCost) -> None:
    """The headline: the same two comparisons as the table's rows, encoder output and pre-activation."""
    with metric_row("stages_cut_cost_metrics"):
        note_metric(
            "Encoder output correlation",
            _number(c.encoder_correlation),
            help="Pearson correlation between the encoder outputs of this checkpoint as saved and after the cut, on "
            f"the same validation gradients ({c.n:,} examples).",
        )
        note_metric(
            "Pre-activation correlation",
            _number(c.preactivation_correlation),
            help="The same on W x + b, before the activation (tanh saturation cannot hide a change there).",
        )
        for where, before, after in (
            ("encoder output", c.separation_before, c.separation_after),
            ("pre-activation", c.preactivation_separation_before, c.preactivation_separation_after),
        ):
            note_metric(
                f"Separation kept, {where}",
                format_percent(_ratio(after, before)),
                f"Cohen's d {_number(before, '.4g')} -> {_number(after, '.4g')}",
                help=f"Class separation (Cohen's d, |mean(class A) - mean(class B)| / pooled std) of the {where} after "
                f"the cut over that of this checkpoint as saved: the '{where}' row of the table below. Above 100 %: "
                "the kept dims separate the classes better than all dims did.",
            )


def _cut_cost_section(ctx: ViewContext) -> None:
    st.markdown("#### What the cut costs")
    dir_, mtime = checkpoint_key(ctx.path)
    validation = _load(VALIDATION_FILE, load_validation, ctx.path)
    if validation is None:
        if not (ctx.data.path / VALIDATION_FILE).is_file():
            st.info(
                f"This checkpoint has no saved validation gradients ({VALIDATION_FILE}), so the cut's effect on the "
                "encoder cannot be measured here. gradiend_core's trainer saves a few with every checkpoint it writes."
            )
        return
    try:
        c = _cut_cost(dir_, mtime, keep_digest(ctx.selection.keep), ctx.selection.keep)
    except (CheckpointError, SelectionError) as e:
        st.error(about(VALIDATION_FILE, e))
        return
    _cut_cost_metrics(c)
    rows = [
        ("label correlation, encoder output", c.label_correlation_before, c.label_correlation_after, None),
        (
            "separation, encoder output",
            c.separation_before,
            c.separation_after,
            _ratio(c.separation_after, c.separation_before),
        ),
        (
            "separation, pre-activation",
            c.preactivation_separation_before,
            c.preactivation_separation_after,
            _ratio(c.preactivation_separation_after, c.preactivation_separation_before),
        ),
    ]
    table = pd.DataFrame(
        {
            "measure": [r[0] for r in rows],
            f"as saved ({c.input_dim:,} dims)": [_number(r[1]) for r in rows],
            f"after the cut ({c.k:,} dims)": [_number(r[2]) for r in rows],
            "kept": [format_percent(r[3]) if r[3] is not None else "-" for r in rows],
        }
    )
    show_table(
        table,
        "stages_cut_cost_table",
        column_config={
            "measure": st.column_config.TextColumn(
                "measure",
                help="Label correlation: Pearson correlation of the encoder output with the ±1 class labels. "
                "Separation: Cohen's d between the two classes.",
            ),
            f"as saved ({c.input_dim:,} dims)": st.column_config.TextColumn(
                help="This checkpoint as saved (not necessarily unpruned: a pre-pruned checkpoint is compared as "
                "it is)."
            ),
            "kept": st.column_config.TextColumn(help="After the cut over as saved: the headline's 'Separation kept'."),
        },
    )
    st.caption(
        f"On the {c.n:,} validation gradients saved with the checkpoint ({validation.source} gradients, classes "
        f"{' / '.join(validation.classes)}), the encoder of this checkpoint as saved runs on all its {c.input_dim:,} "
        f"dims and, after the cut, on the {c.k:,} the current selection keeps (the encoder restricted to those "
        "columns, as pruning makes it). A saturating tanh can make the encoder output's separation very large; the "
        f"pre-activation W x + b shows the change without saturation. Largest change of an output: "
        f"{_number(c.max_abs_change, '.3g')}."
    )


def render(ctx: ViewContext) -> None:
    """Draw the pre/post recall, the combined reduction and the cut cost of the current selection."""
    record = _load(PRE_PRUNE_FILE, load_pre_prune, ctx.path)
    recall = _recall_section(ctx, record)
    _reduction_section(ctx, record, recall)
    _cut_cost_section(ctx)
