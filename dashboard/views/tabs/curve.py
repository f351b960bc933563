"""View "Pruning curve": what every cut costs - the encoder's quality against the kept dims, per part.

The gradients come from the checkpoint's saved validation record, or are computed from its base
model and a labelled data file (:mod:`gradiend_core.gradients.eval_gradients`) in a background job with
progress and a Cancel button. The curves are :func:`gradiend_core.curve.checkpoint_curves.checkpoint_curves`;
the button under them sets the sidebar's topk to the smallest measured topk that keeps a chosen
share of the full model's correlation.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.figures.curve import MEASURE_LABELS, curve_figure
from dashboard.services.gradient_jobs import JOBS, Job
from dashboard.services.loading import SAMPLES_DIR, checkpoint_key, load_validation
from dashboard.state.context import ViewContext
from dashboard.views.widgets.charts import show_figure
from gradiend_core.checkpoint.files import VALIDATION_FILE
from gradiend_core.curve.checkpoint_curves import available_parts, checkpoint_curves, selection_quality
from gradiend_core.curve.measures import MEASURES, Curve, curve_csv, smallest_topk_for
from gradiend_core.curve.sums import DEFAULT_POINTS
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.gradients.eval_gradients import (
    EvalGradients,
    GradientsCancelled,
    compute_eval_gradients,
    describe_data,
    from_validation_record,
    resolve_base_model,
    trained_pair_and_source,
)
from gradiend_core.util.units import format_percent

__all__ = ["render"]

SAVED, COMPUTED = "Saved with the checkpoint", "Computed from a data file"
SPLITS = {
    "default (validation, else test)": None,
    "validation": "validation",
    "test": "test",
    "train": "train",
    "all rows": "all",
}
TARGET_KEY = "curve_target_pct"
BUNDLED_DATA = SAMPLES_DIR / "data"


def bundled_data_for(path: str) -> Path | None:
    """A bundled data file (``sample_models/data/*.csv``) holding the checkpoint's trained pair."""
    from dashboard.services.loading import load_checkpoint
    from gradiend_core.gradients.reference_text import read_text_data

    pair, _ = trained_pair_and_source(load_checkpoint(path))
    if pair is None or not BUNDLED_DATA.is_dir():
        return None
    for f in sorted(BUNDLED_DATA.glob("*.csv")):
        try:
            if set(pair) <= set(read_text_data(f)["label_class"].astype(str)):
                return f
        except CheckpointError:
            continue
    return None


def _shown(path: Path) -> str:
    """A path as typed into the page: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _gradients_key(ctx: ViewContext, source: str, data_file: str = "", base_model: str = "", split=None) -> tuple:
    return (checkpoint_key(ctx.path), source, data_file, base_model, split)


def _saved_gradients(ctx: ViewContext) -> EvalGradients | None:
    key = _gradients_key(ctx, SAVED)
    job = JOBS.get(key)
    if job is not None and job.status == "done":
        return job.result
    try:
        record = load_validation(ctx.path)
        grads = from_validation_record(ctx.data, record) if record is not None else None
    except CheckpointError as e:
        st.error(f"{VALIDATION_FILE}: {e}")
        return None
    if grads is not None:
        JOBS.put_result(key, grads)
    return grads


@st.fragment(run_every=1.0)
def _job_progress(key: tuple) -> None:
    """Progress of a running job, refreshed every second; a full rerun when it ends."""
    job = JOBS.get(key)
    if job is None or job.status != "running":
        st.rerun()
    share = job.done / job.total if job.total else 0.0
    st.progress(share, text=f"Computing gradients: {job.done:,} of {job.total or '?'} examples")
    st.button(
        "Cancel",
        key="curve_cancel",
        on_click=job.cancel.set,
        help="Stops after the current example; nothing is cached.",
    )


def _computed_gradients(ctx: ViewContext) -> EvalGradients | None:
    """Gradients computed from a labelled data file; ``None`` while there are none (the inputs, a
    problem, the job's progress or the offer to compute are shown instead)."""
    data = ctx.data
    _default_gradient_inputs(ctx)
    data_file, base_model, split = _gradient_inputs(ctx)
    if not data_file:
        st.info("Give a labelled data file to compute the gradients from the base model.")
        return None
    try:
        info = describe_data(data, data_file, split=split)
        base = resolve_base_model(data, base_model or None)
    except CheckpointError as e:
        st.error(str(e))
        return None
    key = _gradients_key(ctx, COMPUTED, str(Path(data_file).expanduser().resolve()), str(base), split)
    try:
        job = _job_or_cached(key, ctx, data_file, base, split)
    except CheckpointError as e:
        st.error(str(e))
        return None
    if job is not None and job.status == "done":
        return job.result
    if job is not None and job.status == "running":
        _job_progress(key)
        return None
    if job is not None and job.status in ("cancelled", "failed"):
        (st.info if job.status == "cancelled" else st.error)(job.error)
    _offer_computation(key, ctx, info, data_file, base, split)
    return None


def _default_gradient_inputs(ctx: ViewContext) -> None:
    """On first use, fill in the bundled data file of the checkpoint's pair and its base model, when found."""
    if "curve_data" not in st.session_state:
        found = bundled_data_for(ctx.path)
        st.session_state["curve_data"] = _shown(found) if found else ""
    if "curve_base_model" not in st.session_state:
        try:
            st.session_state["curve_base_model"] = _shown(resolve_base_model(ctx.data))
        except CheckpointError:
            st.session_state["curve_base_model"] = ""


def _gradient_inputs(ctx: ViewContext) -> tuple[str, str, str | None]:
    """The inputs of a computation: ``(data file, base model directory, split)`` as typed (stripped)."""
    cols = st.columns([3, 3, 2])
    data_file = (
        cols[0]
        .text_input(
            "Labelled data file (.csv / .parquet)",
            key="curve_data",
            help="The reference's text-trainer layout: masked (with [MASK]), label, label_class, split; optionally "
            "alternative, alternative_class. sample_models/data/ holds the bundled samples' data.",
        )
        .strip()
    )
    base_model = (
        cols[1]
        .text_input(
            "Base model directory",
            key="curve_base_model",
            help=(
                f"A local directory; the checkpoint names {ctx.data.metadata.get('base_model', 'none')!r} "
                "(metadata.base_model)."
            ),
        )
        .strip()
    )
    split = SPLITS[cols[2].selectbox("Split", list(SPLITS), key="curve_split")]
    return data_file, base_model, split


def _job_or_cached(key: tuple, ctx: ViewContext, data_file: str, base: Path, split: str | None) -> Job | None:
    """The job of ``key``; without one, a finished job made from the gradients the user cache holds,
    or ``None``. Raises CheckpointError for data the computation cannot use."""
    job = JOBS.get(key)
    if job is None:
        hit = compute_eval_gradients(ctx.data, data_file, base_model=base, split=split, cache_only=True)
        if hit is not None:
            job = JOBS.put_result(key, hit)
    return job


def _offer_computation(
    key: tuple, ctx: ViewContext, info: dict[str, Any], data_file: str, base: Path, split: str | None
) -> None:
    """What a computation would do, and the button that starts it as a background job."""
    st.caption(
        f"{info['examples']:,} examples of the {info['split']} split "
        f"({' / '.join(info['classes'])}, {info['source']} gradients), one base-model backward pass each, "
        "as the reference's trainer evaluates its encoder. The result is cached in the user cache directory."
    )
    if st.button("Compute gradients", key="curve_compute", type="primary"):
        JOBS.forget(key)
        data = ctx.data

        def work(progress, cancel):
            return compute_eval_gradients(
                data, data_file, base_model=base, split=split, progress=progress, cancel=cancel
            )

        JOBS.start(key, work, cancelled=lambda e: isinstance(e, GradientsCancelled))
        _job_progress(key)


@st.cache_data(max_entries=16, show_spinner="Summing every cut's encoder pre-activations...")
def _curves(
    path: str,
    mtime: float,
    grads_key: tuple,
    parts: tuple[str, ...],
    points: int,
    k: int | None,
    _grads: EvalGradients,
) -> tuple[Curve, ...]:
    from dashboard.services.loading import load_checkpoint

    return tuple(checkpoint_curves(load_checkpoint(path), _grads, parts, points=points, selection_k=k))


@st.cache_data(max_entries=16, show_spinner="Running the encoder on the selection's dims...")
def _masked_quality(path: str, mtime: float, grads_key: tuple, digest: str, _keep: np.ndarray, _grads: EvalGradients):
    from dashboard.services.loading import load_checkpoint

    return selection_quality(load_checkpoint(path), _keep, _grads)


def _set_topk(curve: Curve, measure: str) -> None:
    """Button callback (runs before the sidebar is drawn): sidebar part and topk for the target share."""
    share = float(st.session_state[TARGET_KEY]) / 100.0
    try:
        k = smallest_topk_for(curve, share, measure)
    except SelectionError as e:
        st.session_state["_curve_target_error"] = str(e)
        return
    st.session_state.pop("_curve_target_error", None)
    st.session_state["part"] = curve.part
    st.session_state["topk"] = str(k)
    st.session_state["_curve_target_done"] = (curve.part, share, k, measure)


def _number(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def render(ctx: ViewContext) -> None:
    """Draw the gradient source, the curves, the selection's point and the target-share control."""
    has_record = (ctx.data.path / VALIDATION_FILE).is_file()
    options = [SAVED, COMPUTED] if has_record else [COMPUTED]
    source = st.radio(
        "Gradients to evaluate the encoder on",
        options,
        key="curve_source",
        horizontal=True,
        help=f"Saved: {VALIDATION_FILE}, written by gradiend_core's trainer. Computed: from the base model and a "
        "labelled data file, exactly as the reference's trainer computes them; works for any checkpoint.",
    )
    grads = _saved_gradients(ctx) if source == SAVED else _computed_gradients(ctx)
    if grads is None:
        return
    gkey = (source, str(grads.cache_file or grads.origin), grads.split, grads.n_samples)  # what the rows are
    avail = available_parts(ctx.data)
    if "curve_parts" not in st.session_state or not set(st.session_state["curve_parts"]) <= set(avail):
        st.session_state["curve_parts"] = list(avail)
    c1, c2, c3 = st.columns([4, 3, 1])
    parts = c1.multiselect(
        "Parts (one curve each)",
        avail,
        key="curve_parts",
        help="Rank the dims by each of these and compare what the same k keeps.",
    )
    measure = c2.selectbox("Measure", MEASURES, key="curve_measure", format_func=lambda m: MEASURE_LABELS[m])
    points = int(
        c3.number_input("Points", min_value=4, max_value=200, value=DEFAULT_POINTS, step=4, key="curve_points")
    )
    if not parts:
        st.info("Pick at least one part.")
        return
    sel = ctx.selection
    masked = sel.n_after_mask < sel.input_dim
    dir_, mtime = checkpoint_key(ctx.path)
    try:
        curves = _curves(dir_, mtime, gkey, tuple(parts), points, None if masked else sel.k, grads)
    except (CheckpointError, SelectionError) as e:
        st.error(str(e))
        return
    by_part = {c.part: c for c in curves}
    masked_point = None
    if masked:
        digest = hashlib.blake2b(np.ascontiguousarray(sel.keep).tobytes(), digest_size=16).hexdigest()
        q = _masked_quality(dir_, mtime, gkey, digest, sel.keep, grads)
        masked_point = (sel.k, q[measure] if q[measure] is not None else float("nan"))

    main = by_part.get(ctx.source, curves[0])
    full = main.full[measure]
    now = masked_point[1] if masked else main.at(sel.k)[measure]
    cols = st.columns(2)
    cols[0].metric(
        f"All {main.input_dim:,} dims", _number(full), help=f"The unpruned encoder's {MEASURE_LABELS[measure]}."
    )
    cols[1].metric(
        f"Selection ({sel.k:,} dims)",
        _number(now),
        delta=f"{format_percent(now / full)} of the full correlation"
        if full and math.isfinite(full) and math.isfinite(now)
        else None,
        delta_color="off",
        delta_arrow="off",
        help=(
            "The kept dims of the sidebar's selection (with its mask)."
            if masked
            else f"The top {sel.k:,} dims by {main.part}, what the sidebar's selection keeps."
        ),
    )
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    left.number_input(
        "Keep at least (% of the full value)",
        min_value=1.0,
        max_value=100.0,
        value=99.0,
        step=1.0,
        format="%g",
        key=TARGET_KEY,
        help="Share of the full model's measure the cut must keep.",
    )
    right.button(
        f"Set topk: smallest k by {main.part} that keeps it",
        key="curve_target_apply",
        on_click=_set_topk,
        args=(main, measure),
        help="Sets the sidebar's part and topk to the smallest measured k of this curve whose measure keeps the "
        "share of the full model's.",
    )
    if err := st.session_state.get("_curve_target_error"):
        st.error(err)
    done = st.session_state.get("_curve_target_done")
    if done and done[0] == main.part and done[3] == measure:
        st.success(
            f"topk set to {done[2]:,}: the smallest measured k whose top {main.part} dims keep at least "
            f"{100 * done[1]:g} % of the full model's {done[3].replace('_', ' ')}."
        )
    target = float(st.session_state.get(TARGET_KEY, 99.0)) / 100.0 * full if math.isfinite(full) else None
    subtitle = f"{grads.n_samples:,} {grads.source} gradients ({Path(grads.origin).name}, {grads.split}), latent unit 0"
    show_figure(
        curve_figure(
            curves,
            measure,
            selection_k=None if masked else sel.k,
            selection_part=ctx.source,
            masked_point=masked_point,
            target=target,
            subtitle=subtitle,
        ),
        "curve_figure",
        f"pruning_curve_{measure}",
    )
    if main.label_correlation[-1, 0] < 0:
        st.caption(
            "The full model's label correlation is negative: the reference labels each encoded gradient with its "
            "class (+1 for the first class), negated for the alternative source, and this encoder maps them the other "
            "way round (gradiend_core's own trainer labels by the example's class). The share a cut keeps is "
            "unaffected."
        )
    st.caption(
        "Every point is exact: the encoder restricted to the top k dims of the part (ties by lower index, as the "
        "selection rule keeps them), run on the same gradients; a hollow marker is a grid k moved to the nearest "
        "value-bucket boundary (exact for its own k). **label correlation**: the reference's evaluation "
        "measure (Pearson of the encoded value with the ±1 labels, 0 when either is constant). **class separation**: "
        "Cohen's d of the pre-activations between the classes. **agreement**: Pearson of the pruned encoder's encoded "
        "values with the unpruned encoder's. Values above the full model's are possible: a cut can drop dims that "
        "only added noise on these examples."
    )
    table = pd.DataFrame(
        {
            "part": [c.part for c in curves],
            "all dims": [c.full[measure] for c in curves],
            f"at k = {sel.k:,}": [c.at(sel.k)[measure] if sel.k in c.ks else float("nan") for c in curves],
        }
    )
    for share in (0.9, 0.99):
        table[f"topk for {share:.0%}"] = [_smallest(c, share, measure) for c in curves]
    st.dataframe(
        table,
        hide_index=True,
        key="curve_table",
        column_config={
            "all dims": st.column_config.NumberColumn(format="%.4f"),
            f"at k = {sel.k:,}": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    st.download_button(
        "Download the curves (CSV)",
        curve_csv(list(curves)),
        file_name="pruning_curve.csv",
        mime="text/csv",
        key="curve_download",
    )


def _smallest(curve: Curve, share: float, measure: str) -> int | None:
    try:
        return smallest_topk_for(curve, share, measure)
    except SelectionError:
        return None
