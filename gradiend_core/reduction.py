"""Reduction preview: what a selection saves, computed before anything is written.

The dashboard and the CLI both call :func:`reduction_report`; the export writes exactly what it
reports (a test compares the report with the files of an actual export).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from .checkpoint import CARRIED_JSON_FILES, Architecture, CheckpointData, expected_weight_shapes, planned_file_sizes
from .param_map import ParamMap
from .selection import Ranking, Selection


def gradiend_param_counts(arch: Architecture) -> Dict[str, int]:
    """Parameters of each GRADIEND tensor (encoder weight/bias, decoder weight/bias, activation)."""
    counts = {
        "encoder_weight": arch.latent_dim * arch.input_dim,
        "encoder_bias": arch.latent_dim,
        "decoder_weight": arch.input_dim * arch.latent_dim,
        "decoder_bias": arch.input_dim if arch.bias_decoder else 0,
    }
    counts["activation"] = 2 if arch.activation_encoder == "id" else 0
    return counts


def _weight_specs(arch: Architecture, state_dict: Optional[Dict[str, torch.Tensor]] = None):
    specs = {}
    for key, shape in expected_weight_shapes(arch).items():
        dtype = state_dict[key].dtype if state_dict is not None and key in state_dict else arch.dtype
        specs[key] = (dtype, shape)
    return specs


def memory_bytes(arch: Architecture, state_dict: Optional[Dict[str, torch.Tensor]] = None) -> int:
    """Bytes of the GRADIEND's parameters in memory at their dtype."""
    total = 0
    for dtype, shape in _weight_specs(arch, state_dict).values():
        total += int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
    return total


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
        part: importance source the selection used (``None`` for a mask only).
        importance_kept: sum of kept importance / sum of all importance, in [0, 1]
            (NaN values excluded; ``nan`` without importance or when the total is 0).
        dtype: the model's dtype name.
    """

    input_dim_before: int
    input_dim_after: int
    unpruned_length: int
    params_before: Dict[str, int]
    params_after: Dict[str, int]
    memory_bytes_before: int
    memory_bytes_after: int
    disk_files_before: Dict[str, int]
    disk_files_after: Dict[str, int]
    part: Optional[str]
    importance_kept: float
    dtype: str

    @property
    def base_entries_before(self) -> int:
        """Base-model parameter entries covered before (one per input dim)."""
        return self.input_dim_before

    @property
    def base_entries_after(self) -> int:
        """Base-model parameter entries covered after."""
        return self.input_dim_after

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

    def to_dict(self) -> Dict[str, Any]:
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


def reduction_report(
    data: CheckpointData,
    selection: Selection,
    importance: Union[Ranking, np.ndarray, None] = None,
    part: Optional[str] = None,
) -> ReductionReport:
    """Compute the savings of keeping ``selection.keep`` in checkpoint ``data``.

    Args:
        data: the checkpoint (only shapes, dtype, map and metadata are read, not weights).
        selection: the result of :func:`gradiend_core.selection.select` on this checkpoint.
        importance: the importance the selection ranked by, float ``(input_dim,)``, for the
            kept share of importance.
        part: name of the importance source, for the record.

    Returns:
        A :class:`ReductionReport`.
    """
    arch = data.architecture
    after_arch = dataclasses.replace(arch, input_dim=selection.k)
    after_map: ParamMap = data.param_map.restrict(selection.keep)
    side = data.carried_side_files()
    kept_share = float("nan")
    if importance is not None:
        ranking = importance if isinstance(importance, Ranking) else None
        imp = ranking.importance if ranking is not None else np.asarray(importance, dtype=np.float32)
        total = ranking.total if ranking is not None else float(np.nansum(imp, dtype=np.float64))
        if total > 0:
            kept_share = float(np.nansum(imp[selection.keep], dtype=np.float64)) / total
    return ReductionReport(
        input_dim_before=arch.input_dim,
        input_dim_after=selection.k,
        unpruned_length=data.param_map.unpruned_length,
        params_before=gradiend_param_counts(arch),
        params_after=gradiend_param_counts(after_arch),
        memory_bytes_before=memory_bytes(arch, data.state_dict),
        memory_bytes_after=memory_bytes(after_arch, data.state_dict),
        disk_files_before=planned_file_sizes(arch, data.param_map, _weight_specs(arch, data.state_dict), data.metadata, side),
        disk_files_after=planned_file_sizes(after_arch, after_map, _weight_specs(after_arch, data.state_dict), data.metadata, side),
        part=part,
        importance_kept=kept_share,
        dtype=arch.torch_dtype,
    )
