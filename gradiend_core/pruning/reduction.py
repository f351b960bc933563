"""Reduction preview: what a selection saves, computed before anything is written.

The dashboard and the CLI both call :func:`reduction_report`; the export writes exactly what it
reports (a test compares the report with the files of an actual export).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checkpoint import CARRIED_JSON_FILES, CheckpointData, planned_file_sizes
from ..checkpoint.sizes import DiskSize, directory_disk_size, gradiend_param_counts, memory_bytes, weight_specs
from ..ranking.bounds import Bounds
from ..ranking.keys import finite_or_zero
from ..ranking.ranking import Ranking
from ..selection.rule import Selection, SelectionBounds

__all__ = [
    "MAPPING_TEXT_SLACK",
    "model_disk_bytes_bounds",
    "ReductionReport",
    "export_disk_size",
    "importance_kept",
    "kept_per_param",
    "preview_disk_sizes",
    "reduction_report",
]


@dataclass(frozen=True)
class ReductionReport:
    """Sizes of a GRADIEND before and after a selection.

    Attributes:
        input_dim_before, input_dim_after: GRADIEND input dims (dims).
        unpruned_length: input dims of the unpruned model (base entries of all mapped parameters).
        params_before, params_after: GRADIEND parameters per tensor (counts).
        memory_bytes_before, memory_bytes_after: parameter bytes in memory at the model dtype.
        disk_files_before, disk_files_after: bytes per file as ``save_pretrained`` writes them
            with safetensors (weights, config.json, mapping files, carried JSON side files).
        source: the importance source the shares refer to (``None`` without one).
        importance_kept: finite importance of the kept dims / finite importance of all dims, in
            [0, 1] (NaN and infinities count as 0; ``nan`` without a source or when the total is 0).
        dtype: the model's dtype name.
    """

    input_dim_before: int
    input_dim_after: int
    unpruned_length: int
    params_before: dict[str, int]
    params_after: dict[str, int]
    memory_bytes_before: int
    memory_bytes_after: int
    disk_files_before: dict[str, int]
    disk_files_after: dict[str, int]
    source: str | None
    importance_kept: float
    dtype: str

    @property
    def total_params_before(self) -> int:
        return sum(self.params_before.values())

    @property
    def total_params_after(self) -> int:
        return sum(self.params_after.values())

    @property
    def disk_bytes_before(self) -> int:
        return sum(self.disk_files_before.values())

    @property
    def disk_bytes_after(self) -> int:
        return sum(self.disk_files_after.values())

    @property
    def model_disk_bytes_before(self) -> int:
        """Bytes of the model files only (config, weights, mapping), without carried JSON side files."""
        return sum(v for k, v in self.disk_files_before.items() if k not in CARRIED_JSON_FILES)

    @property
    def model_disk_bytes_after(self) -> int:
        """Bytes of the model files only after the selection (see :attr:`model_disk_bytes_before`)."""
        return sum(v for k, v in self.disk_files_after.items() if k not in CARRIED_JSON_FILES)

    @property
    def kept_fraction(self) -> float:
        """Kept input dims / input dims before."""
        return self.input_dim_after / self.input_dim_before

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for ``pruning.json``, the CLI's ``--json`` and tests)."""
        d = dataclasses.asdict(self)
        d.update(
            total_params_before=self.total_params_before,
            total_params_after=self.total_params_after,
            disk_bytes_before=self.disk_bytes_before,
            disk_bytes_after=self.disk_bytes_after,
            model_disk_bytes_before=self.model_disk_bytes_before,
            model_disk_bytes_after=self.model_disk_bytes_after,
            kept_fraction=self.kept_fraction,
        )
        return d


def kept_per_param(data: CheckpointData, selection: Selection) -> np.ndarray:
    """Kept dims per mapped parameter, int64 ``(P,)``: from the ranked dims' per-parameter tables
    (O(buckets)) or members (a selection that keeps all of them) when it has them, else from the
    kept index set (O(k))."""
    dims = selection.dims
    if dims is not None and dims.param_members is not None and dims.param_members.shape[0] == len(data.param_map):
        return dims.param_counts_top(selection.k, with_mass=False)[0]
    return data.param_map.per_param_counts(selection.keep)


def importance_kept(selection: Selection, ranking: Ranking | None) -> float:
    """Finite importance of the kept dims over the finite importance of all dims (``nan`` without a
    ranking or when its total is 0). O(buckets) when the selection ranked by ``ranking``."""
    if ranking is None or ranking.total <= 0:
        return float("nan")
    if selection.dims is not None and selection.dims.ranking is ranking:
        kept = float(selection.kept_mass)
    else:
        kept = float(finite_or_zero(ranking.values_at(selection.keep)).sum())
    return kept / ranking.total


def reduction_report(
    data: CheckpointData,
    selection: Selection,
    ranking: Ranking | np.ndarray | None = None,
    source: str | None = None,
) -> ReductionReport:
    """Compute the savings of a selection on checkpoint ``data``, before anything is written.

    Args:
        data: the checkpoint (only shapes, dtypes, map and metadata are read, not weights).
        selection: the result of :func:`gradiend_core.selection.rule.select` on this checkpoint.
        ranking: the ranking (or importance vector) of the source the share of kept importance
            refers to (the one the selection ranked by, or, for a mask alone, the part shown
            beside it).
        source: that source's name, for the record.

    Returns:
        A :class:`ReductionReport`.
    """
    if ranking is not None:
        ranking = Ranking.coerce(ranking)
    arch = data.architecture
    after_arch = dataclasses.replace(arch, input_dim=selection.k)
    after_map = data.param_map.planned(kept_per_param(data, selection))
    side = data.carried_side_files()
    weights = data.weight_dtypes()
    return ReductionReport(
        input_dim_before=arch.input_dim,
        input_dim_after=selection.k,
        unpruned_length=data.param_map.unpruned_length,
        params_before=gradiend_param_counts(arch),
        params_after=gradiend_param_counts(after_arch),
        memory_bytes_before=memory_bytes(arch, weights),
        memory_bytes_after=memory_bytes(after_arch, weights),
        disk_files_before=planned_file_sizes(arch, data.param_map, weight_specs(arch, weights), data.metadata, side),
        disk_files_after=planned_file_sizes(
            after_arch, after_map, weight_specs(after_arch, weights), data.metadata, side
        ),
        source=source if ranking is not None else None,
        importance_kept=importance_kept(selection, ranking),
        dtype=arch.torch_dtype,
    )


def export_disk_size(report: ReductionReport) -> DiskSize:
    """The files an export of ``report``'s selection writes, as planned (safetensors; the export's
    own ``pruning.json`` is written beside them and is a side file)."""
    return DiskSize.from_sizes(report.disk_files_after)


def preview_disk_sizes(data: CheckpointData, report: ReductionReport) -> tuple[DiskSize, DiskSize]:
    """``(before, after)`` of the preview: the source checkpoint's files on disk (the size the
    checkpoint header shows) and the files an export of the selection writes."""
    return directory_disk_size(data.path), export_disk_size(report)


#: Bytes of text (config.json entry, safetensors header entry, digits of data offsets) one
#: parameter's count can move by within a range of counts: a generous bound (see below).
MAPPING_TEXT_SLACK = 256


def model_disk_bytes_bounds(data: CheckpointData, bounds: SelectionBounds) -> Bounds:
    """Bounds of :attr:`ReductionReport.model_disk_bytes_after` (config, weights, mapping files) of
    a selection known by its bounds, without the kept dims per parameter.

    The weights' size depends on ``k`` alone. A parameter's mapping bytes grow with its kept count
    (indices: 4 or 8 bytes each; past 80 % of its entries a mask of one byte per entry, larger still)
    except at "every entry kept", where nothing is stored; so the sizes at the per-parameter lower
    counts (every-entry parameters at their full count) and upper counts (one below full) bound
    the data bytes. Text bytes (digits of counts and offsets, the repr's name, a header entry) move
    by at most :data:`MAPPING_TEXT_SLACK` per parameter whose count is not known, and by at most 64
    per other parameter (offsets' digits), which widens the bounds.

    Returns:
        :class:`~gradiend_core.ranking.bounds.Bounds` of int bytes; exact when ``k`` and every
        per-parameter count are exact.
    """
    if not bounds.k.exact:
        lo_k, hi_k = int(bounds.k.lo), int(bounds.k.hi)
    else:
        lo_k = hi_k = int(bounds.k.lo)
    counts = bounds.param_counts()
    lo_c, hi_c = np.asarray(counts.lo, dtype=np.int64), np.asarray(counts.hi, dtype=np.int64)
    full = np.array([e.num_selected for e in data.param_map], dtype=np.int64)
    low = np.where(hi_c == full, full, lo_c)  # "all" stores nothing: the least
    high = np.where((hi_c == full) & (lo_c < full), full - 1, hi_c)

    def size(k: int, per_param: np.ndarray) -> int:
        arch = dataclasses.replace(data.architecture, input_dim=k)
        weights = data.weight_dtypes()
        files = planned_file_sizes(
            arch,
            data.param_map.planned(per_param),
            weight_specs(arch, weights),
            data.metadata,
            data.carried_side_files(),
        )
        return sum(v for name, v in files.items() if name not in CARRIED_JSON_FILES)

    if lo_k == hi_k and np.array_equal(lo_c, hi_c):
        exact = size(lo_k, lo_c)
        return Bounds(exact, exact)
    unknown = int(np.count_nonzero(lo_c != hi_c))
    slack = MAPPING_TEXT_SLACK * unknown + 64 * full.size + (64 if lo_k != hi_k else 0)
    return Bounds(max(0, size(lo_k, low) - slack), size(hi_k, high) + slack)
