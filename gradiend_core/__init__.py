"""gradiend_core: explore, select and prune GRADIEND models.

A GRADIEND (GRADIent ENcoder Decoder, Drechsel et al. 2025) maps a gradient vector over
selected base-model parameter entries (``input_dim`` of them, listed by the ``param_map``) to a
small latent (``latent_dim``) and back. This package reads and writes the checkpoints of the
reference package ``gradiend`` (format_version 0), computes per-part importance, selects input
dimensions by mask -> threshold -> topk, previews the savings and exports pruned models that
the reference package loads unchanged.

Quick start::

    from gradiend_core import ParamMappedGradiendModel
    model = ParamMappedGradiendModel.from_pretrained("sample_models/number-unpruned")
    pruned = model.prune(topk=0.05, part="decoder-weight")
    pruned.save_pretrained("out/number-top5pct")
"""

from .checkpoint import CheckpointData, read_checkpoint, write_checkpoint
from .errors import CheckpointError, SelectionError
from .model import ParamMappedGradiendModel
from .pruning.export import ExportResult, export_pruned
from .pruning.reduction import ReductionReport, reduction_report
from .ranking.importance import PARTS, weight_importance
from .ranking.ranking import Ranking
from .selection.rule import Selection, select
from .space.param_map import ParamEntry, ParamMap
from .version import __version__ as __version__

__all__ = [
    "CheckpointData",
    "CheckpointError",
    "ExportResult",
    "PARTS",
    "ParamEntry",
    "ParamMap",
    "ParamMappedGradiendModel",
    "Ranking",
    "ReductionReport",
    "Selection",
    "SelectionError",
    "export_pruned",
    "read_checkpoint",
    "reduction_report",
    "select",
    "weight_importance",
    "write_checkpoint",
]
