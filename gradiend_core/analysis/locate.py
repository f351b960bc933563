"""Where kept dims sit in the base model: per parameter, and per layer x component (names parsed
by :func:`gradiend_core.space.layers.parse_param_name`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ranking.ranking import Ranking
from ..selection.rule import Selection
from ..space.layers import COMPONENTS, layer_sort_key, parse_param_name
from ..space.param_map import ParamMap

__all__ = [
    "LayerComponentGrid",
    "ParamBreakdown",
    "layer_component_grid",
    "param_breakdown",
    "param_importance_totals",
    "selection_breakdown",
]


def _segment_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """float64 sums of ``values[bounds[i]:bounds[i+1]]`` for every ``i`` (empty segments -> 0),
    non-finite values counted as 0."""
    out = np.zeros(bounds.size - 1, dtype=np.float64)
    if values.size == 0:
        return out
    if not np.isfinite(values).all():
        values = np.where(np.isfinite(values), values, 0)
    nonempty = np.flatnonzero(np.diff(bounds) > 0)
    if nonempty.size:
        out[nonempty] = np.add.reduceat(values, bounds[nonempty], dtype=np.float64)
    return out


@dataclass(frozen=True)
class ParamBreakdown:
    """Per mapped base-model parameter: entries, kept dims and importance.

    Arrays are aligned with ``names`` (the param_map order).

    Attributes:
        names: parameter names.
        layers, components: parsed with :func:`parse_param_name`.
        shapes: full parameter shapes.
        numel: int64, entries of the full base-model parameter.
        in_input: int64, entries in the GRADIEND input space (after earlier pruning).
        kept: int64, entries the selection keeps.
        importance_total: float64, finite importance of the parameter's input dims.
        importance_kept: float64, finite importance of its kept dims.
    """

    names: list[str]
    layers: list[str]
    components: list[str]
    shapes: list[tuple[int, ...]]
    numel: np.ndarray
    in_input: np.ndarray
    kept: np.ndarray
    importance_total: np.ndarray
    importance_kept: np.ndarray

    @property
    def kept_importance_share(self) -> np.ndarray:
        """float64, share of all kept importance held by each parameter (sums to 1; ``nan`` if
        the kept importance is 0)."""
        total = float(self.importance_kept.sum())
        return self.importance_kept / total if total > 0 else np.full(self.kept.shape, np.nan)

    @property
    def importance_share(self) -> np.ndarray:
        """float64, share of the part's whole importance held by each parameter's input dims."""
        total = float(self.importance_total.sum())
        return self.importance_total / total if total > 0 else np.full(self.kept.shape, np.nan)

    def columns(self) -> dict[str, object]:
        """Table columns (for a DataFrame): counts in dims, shares in [0, 1]."""
        with np.errstate(invalid="ignore", divide="ignore"):
            kept_of_input = np.where(self.in_input > 0, self.kept / np.maximum(self.in_input, 1), np.nan)
        return {
            "parameter": self.names,
            "layer": self.layers,
            "component": self.components,
            "shape": ["x".join(map(str, s)) or "scalar" for s in self.shapes],
            "entries": self.numel,
            "in input space": self.in_input,
            "kept": self.kept,
            "kept / in input": kept_of_input,
            "importance kept": self.importance_kept,
            "share of kept importance": self.kept_importance_share,
            "share of part importance": self.importance_share,
        }


def param_importance_totals(param_map: ParamMap, importance: np.ndarray) -> np.ndarray:
    """float64 ``(len(param_map),)``: finite importance summed over each parameter's input dims
    (O(input_dim); cache it per part, it does not depend on the selection).

    Raises:
        ValueError: if ``importance`` does not have length ``input_dim``.
    """
    importance = np.asarray(importance)
    if importance.shape != (param_map.input_dim,):
        raise ValueError(f"importance must have shape ({param_map.input_dim},), got {importance.shape}.")
    return _segment_sums(importance, param_map.local_offsets)


def param_breakdown(
    param_map: ParamMap, importance: np.ndarray, keep: np.ndarray, importance_total: np.ndarray | None = None
) -> ParamBreakdown:
    """Break a selection down by base-model parameter, O(k) plus O(input_dim) for the totals.

    Args:
        param_map: the model's map (defines the local input space).
        importance: float ``(input_dim,)`` of the part the selection ranked by.
        keep: sorted local indices kept, int64 ``(k,)`` (:attr:`Selection.keep`).
        importance_total: :func:`param_importance_totals` of ``importance`` if already known.

    Raises:
        ValueError: if ``importance`` does not have length ``input_dim``.
    """
    importance = np.asarray(importance)
    if importance.shape != (param_map.input_dim,):
        raise ValueError(f"importance must have shape ({param_map.input_dim},), got {importance.shape}.")
    if importance_total is None:
        importance_total = param_importance_totals(param_map, importance)
    keep = np.asarray(keep, dtype=np.int64)
    kept_bounds = np.searchsorted(keep, param_map.local_offsets, side="left")
    return _breakdown(param_map, np.diff(kept_bounds), _segment_sums(importance[keep], kept_bounds), importance_total)


def selection_breakdown(param_map: ParamMap, ranking: Ranking, selection: Selection) -> ParamBreakdown:
    """:func:`param_breakdown` of a selection from the ranking's per-parameter tables.

    O(parameters x buckets + one bucket) when ``selection`` ranked by ``ranking`` and the ranking
    has :class:`~gradiend_core.ranking.tables.ParamTables` with importance (a laid-out ranking has them);
    otherwise from the kept index set, O(k), plus one pass over the importance for the totals when
    the tables are missing. Memory never grows with ``input_dim``.

    Args:
        param_map: the model's map.
        ranking: the ranking of the part whose importance is reported.
        selection: the selection on the same input space.
    """
    params = ranking.params
    if params is not None and params.mass is not None and params.counts.shape[0] == len(param_map):
        totals = params.mass.sum(axis=1)
        dims = selection.dims
        if dims is not None and dims.ranking is ranking:
            kept, kept_mass = dims.param_counts_top(selection.k)
            return _breakdown(param_map, kept, kept_mass, totals)
    else:  # one pass over the importance, block by block (never an input_dim-sized array)
        totals = np.zeros(len(param_map), dtype=np.float64)
        for start, v in ranking.scan():
            bounds = np.clip(param_map.local_offsets - start, 0, v.size)
            totals += _segment_sums(v, bounds)
    keep = selection.keep
    bounds = np.searchsorted(keep, param_map.local_offsets, side="left")
    return _breakdown(param_map, np.diff(bounds), _segment_sums(ranking.values_at(keep), bounds), totals)


def _breakdown(
    param_map: ParamMap, kept: np.ndarray, importance_kept: np.ndarray, importance_total: np.ndarray
) -> ParamBreakdown:
    parsed = [parse_param_name(e.name) for e in param_map]
    return ParamBreakdown(
        names=param_map.names,
        layers=[p[0] for p in parsed],
        components=[p[1] for p in parsed],
        shapes=[tuple(e.shape) for e in param_map],
        numel=np.array([e.numel for e in param_map], dtype=np.int64),
        in_input=param_map.per_param_counts(),
        kept=np.asarray(kept, dtype=np.int64),
        importance_total=np.asarray(importance_total, dtype=np.float64),
        importance_kept=np.asarray(importance_kept, dtype=np.float64),
    )


@dataclass(frozen=True)
class LayerComponentGrid:
    """Totals of a :class:`ParamBreakdown` per (layer, component).

    Attributes:
        layers: row labels, sorted by :func:`layer_sort_key`.
        components: column labels present, in :data:`COMPONENTS` order.
        kept: int64 ``(L, C)``, kept dims.
        in_input: int64 ``(L, C)``, dims in the input space.
        importance_kept: float64 ``(L, C)``.
        n_params: int64 ``(L, C)``, parameters in the cell (0 = no such parameter).
    """

    layers: list[str]
    components: list[str]
    kept: np.ndarray
    in_input: np.ndarray
    importance_kept: np.ndarray
    n_params: np.ndarray

    @property
    def kept_importance_share(self) -> np.ndarray:
        """float64 ``(L, C)``, share of all kept importance per cell; ``nan`` where no parameter."""
        total = float(self.importance_kept.sum())
        share = self.importance_kept / total if total > 0 else np.zeros_like(self.importance_kept)
        return np.where(self.n_params > 0, share, np.nan)

    @property
    def kept_fraction(self) -> np.ndarray:
        """float64 ``(L, C)``, kept / in-input dims per cell; ``nan`` where there are none."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.in_input > 0, self.kept / np.maximum(self.in_input, 1), np.nan)


def layer_component_grid(breakdown: ParamBreakdown) -> LayerComponentGrid:
    """Sum a breakdown into a layer x component grid."""
    layers = sorted(set(breakdown.layers), key=layer_sort_key)
    present = set(breakdown.components)
    components = [c for c in COMPONENTS if c in present]
    li = {layer: i for i, layer in enumerate(layers)}
    ci = {c: j for j, c in enumerate(components)}
    shape = (len(layers), len(components))
    kept = np.zeros(shape, dtype=np.int64)
    in_input = np.zeros(shape, dtype=np.int64)
    imp = np.zeros(shape, dtype=np.float64)
    n_params = np.zeros(shape, dtype=np.int64)
    for p, (layer, comp) in enumerate(zip(breakdown.layers, breakdown.components)):
        cell = (li[layer], ci[comp])
        kept[cell] += breakdown.kept[p]
        in_input[cell] += breakdown.in_input[p]
        imp[cell] += breakdown.importance_kept[p]
        n_params[cell] += 1
    return LayerComponentGrid(layers, components, kept, in_input, imp, n_params)
