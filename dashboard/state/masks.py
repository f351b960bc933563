"""The page's mask expression: its state, its evaluation (cached), the URL and the saved masks.

State (``st.session_state``):

* ``mask_expr`` - canonical text of the applied expression, ``None`` without one. Only an
  expression that evaluated on the open model is ever applied, so the page never stops on one.
* ``mask_expr_text`` - the text field; after a rejected proposal it keeps the rejected text.
* ``saved_masks`` - ``{name: canonical expression}``, in the order saved.

Every change goes through :func:`propose` (button callbacks, the text field, the URL, an upload):
the next :func:`applied` evaluates the proposal and applies it, or keeps the last valid
expression and reports the pointed :class:`~gradiend_core.selection.expr.syntax.MaskExprError`.

The URL carries the applied expression as ``?mask_expr=...``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from dashboard.server.sessions import check_allowed
from dashboard.services.loading import STORE, checkpoint_key, load_ranking
from gradiend_core.analysis.locate import LayerComponentGrid, ParamBreakdown, layer_component_grid
from gradiend_core.checkpoint import CheckpointData
from gradiend_core.errors import CheckpointError, SelectionError
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.expr.bundle import make_mask_bundle
from gradiend_core.selection.expr.evaluate import MaskResult, evaluate_mask_expr
from gradiend_core.selection.expr.syntax import File, Model, iter_terms, parse
from gradiend_core.space.layers import parse_param_name

__all__ = [
    "APPLIED",
    "QUERY_KEY",
    "SAVED",
    "TEXT",
    "applied",
    "bundle_bytes",
    "error",
    "evaluate",
    "mask_grid",
    "pick_generation",
    "propose",
    "ranking_for",
    "resolve_path",
    "saved",
    "take_pick",
]

APPLIED = "mask_expr"
TEXT = "mask_expr_text"
SAVED = "saved_masks"
QUERY_KEY = "mask_expr"
_PENDING = "_mask_expr_pending"
_ERROR = "_mask_expr_error"
_GEN = "_mask_pick_generation"


def ranking_for(data: CheckpointData, part: str) -> Ranking:
    """The cached ranking of ``part`` for a checkpoint (the plan's and the expression's
    ``ranking_for``): :func:`dashboard.services.loading.load_ranking` by the checkpoint's path."""
    return load_ranking(str(data.path), part)


def resolve_path(path: str) -> Path:
    """A ``file()``/``model()`` path as a :class:`~pathlib.Path`, relative to the working directory.

    Raises:
        PermissionError: for a path outside the dashboard's allowed directories
            (:func:`dashboard.server.sessions.check_allowed`).
    """
    p = Path(path).expanduser()
    check_allowed(p, "mask expression path")
    return p


def _load_other(path: str) -> CheckpointData:
    # the shared checkpoint cache, without the progress bar: this runs inside a cached function
    return STORE.get(checkpoint_key(path))


def _dependency(term) -> tuple[str, float]:
    """What a cached evaluation depends on besides the checkpoint: a file's or checkpoint's
    resolved path and modification time (``("", 0.0)`` when it cannot be read; evaluating then
    raises the pointed error, and errors are not cached)."""
    try:
        p = resolve_path(term.path)
        if isinstance(term, Model):
            return checkpoint_key(str(p))
        return str(p.resolve()), p.stat().st_mtime
    except (OSError, PermissionError, CheckpointError, ValueError):
        return "", 0.0


# Each entry holds one bool per input dim (the mask), so few are kept: the applied expression of a
# few sessions and the saved masks being downloaded.
@st.cache_resource(max_entries=6, show_spinner="Evaluating the mask expression...")
def _evaluate(path: str, mtime: float, expression: str, deps: tuple, _data: CheckpointData) -> MaskResult:
    return evaluate_mask_expr(
        expression,
        _data,
        load_checkpoint=_load_other,
        resolve_path=resolve_path,
        ranking_for=ranking_for,
    )


def evaluate(path: str, data: CheckpointData, expression: str) -> MaskResult:
    """Evaluate an expression on the open checkpoint, cached by checkpoint, text and the files
    and checkpoints it reads (so reruns cost nothing and a ``model()`` is read once).

    Raises:
        MaskExprError: the pointed error of :func:`gradiend_core.selection.expr.evaluate.evaluate_mask_expr`.
    """
    tree = parse(expression)
    deps = tuple(_dependency(t) for t in iter_terms(tree) if isinstance(t, (File, Model)))
    return _evaluate(*checkpoint_key(path), expression, deps, data)


def propose(text: str | None, origin: str = "mask expression") -> None:
    """Ask the next run to apply ``text`` (``None`` or blank: no mask expression).

    ``origin`` names where it came from in an error message (e.g. ``"URL parameter mask_expr"``).
    Safe in a widget callback.
    """
    st.session_state[_PENDING] = (text or "", origin)
    st.session_state[_GEN] = pick_generation() + 1  # picks made on charts are used up


def pick_generation() -> int:
    """A counter that changes whenever a proposal is made; picking charts put it in their key,
    so their selection is cleared once a pick has been used."""
    return int(st.session_state.get(_GEN, 0))


def error() -> tuple[str, str] | None:
    """``(origin, message)`` of the last rejected proposal, ``None`` when it was applied."""
    return st.session_state.get(_ERROR)


def _first_run() -> None:
    ss = st.session_state
    ss[APPLIED] = None
    ss.setdefault(SAVED, {})
    text = st.query_params.get(QUERY_KEY)
    if text:
        propose(text, f"URL parameter {QUERY_KEY}")


def _settle(path: str, data: CheckpointData) -> None:
    ss = st.session_state
    text, origin = ss.pop(_PENDING)
    if not text.strip():
        ss[APPLIED], ss[_ERROR], ss[TEXT] = None, None, ""
        return
    try:
        result = evaluate(path, data, text)
    except (SelectionError, CheckpointError) as e:  # MaskExprError is a SelectionError
        ss[_ERROR], ss[TEXT] = (origin, str(e)), text
        return
    ss[APPLIED], ss[_ERROR], ss[TEXT] = result.expression, None, result.expression


def applied(path: str, data: CheckpointData) -> MaskResult | None:
    """The applied expression evaluated on the open checkpoint (``None`` without one).

    Settles a pending :func:`propose` first, and mirrors the applied text into the URL. An
    applied expression that does not evaluate on this checkpoint (e.g. another model was opened)
    is dropped, with its error kept for the panel.
    """
    ss = st.session_state
    if APPLIED not in ss:
        _first_run()
    if _PENDING in ss:
        _settle(path, data)
    ss.setdefault(TEXT, ss[APPLIED] or "")
    result = None
    if ss[APPLIED]:
        try:
            result = evaluate(path, data, ss[APPLIED])
        except (SelectionError, CheckpointError) as e:
            ss[_ERROR], ss[TEXT], ss[APPLIED] = ("the applied expression, on this model", str(e)), ss[APPLIED], None
    if ss[APPLIED]:
        st.query_params[QUERY_KEY] = ss[APPLIED]
    elif QUERY_KEY in st.query_params and error() is None:
        del st.query_params[QUERY_KEY]
    return result


def take_pick(term: str, op: str) -> None:
    """Button callback: combine the applied expression with ``term`` by ``op`` and propose it."""
    from gradiend_core.selection.expr.build import combine

    try:
        propose(combine(st.session_state.get(APPLIED), term, op), f"{op} of a picked term")
    except SelectionError as e:
        st.session_state[_ERROR] = (f"{op} of a picked term", str(e))


def _grid_of(data: CheckpointData, mask: np.ndarray | None) -> LayerComponentGrid:
    """Layer x component totals of the dims ``mask`` keeps (``None``: every dim), counted per
    parameter on slices of the mask: no index set is built. Importance is not summed (zero): the
    preview shows counts."""
    pmap = data.param_map
    in_input = pmap.per_param_counts()
    if mask is None:
        kept = np.asarray(in_input, dtype=np.int64)
    else:
        offsets = pmap.local_offsets
        kept = np.array([np.count_nonzero(mask[offsets[i] : offsets[i + 1]]) for i in range(len(pmap))], dtype=np.int64)
    parsed = [parse_param_name(e.name) for e in pmap]
    zeros = np.zeros(len(pmap), dtype=np.float64)
    bd = ParamBreakdown(
        names=pmap.names,
        layers=[p[0] for p in parsed],
        components=[p[1] for p in parsed],
        shapes=[tuple(e.shape) for e in pmap],
        numel=np.array([e.numel for e in pmap], dtype=np.int64),
        in_input=np.asarray(in_input, dtype=np.int64),
        kept=kept,
        importance_total=zeros,
        importance_kept=zeros,
    )
    return layer_component_grid(bd)


@st.cache_data(max_entries=16, show_spinner=False)
def _grid(path: str, mtime: float, sha256: str | None, _data: CheckpointData, _mask) -> LayerComponentGrid:
    return _grid_of(_data, _mask)


def mask_grid(path: str, data: CheckpointData, result: MaskResult | None) -> LayerComponentGrid:
    """Layer x component counts of the dims the mask keeps on its own (every input dim without
    one), cached by the mask's digest; one pass over the mask per new mask."""
    if result is None:
        return _grid(*checkpoint_key(path), None, data, None)
    return _grid(*checkpoint_key(path), result.sha256, data, result.mask)


def bundle_bytes(path: str, data: CheckpointData, name: str, expression: str) -> bytes:
    """A saved mask's download: its expression and its bool mask over base-global indices, as a
    safetensors file (:func:`gradiend_core.selection.expr.bundle.make_mask_bundle`); built on click only.

    Raises:
        MaskExprError: when the expression no longer evaluates here.
    """
    result = evaluate(path, data, expression)
    return make_mask_bundle(name, result, data.metadata.get("base_model")).to_bytes()


def saved() -> dict[str, str]:
    """The session's saved masks, ``{name: canonical expression}``."""
    return st.session_state.setdefault(SAVED, {})
