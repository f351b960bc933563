"""What every view receives: the open checkpoint and the current selection, computed once per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from gradiend_core.checkpoint import CheckpointData
from gradiend_core.reduction import ReductionReport
from gradiend_core.selection import Ranking, Selection
from dashboard.loading import load_ranking
from dashboard.views.controls import SelectionInputs


@dataclass
class ViewContext:
    """The page state shared by the views.

    Attributes:
        path: the checkpoint path as opened (cache key for :func:`ranking`).
        data: the checkpoint (shared, read-only).
        inputs: the user's selection inputs.
        selection: the kept dims under those inputs.
        report: the reduction preview of ``selection``.
    """

    path: str
    data: CheckpointData
    inputs: SelectionInputs
    selection: Selection
    report: ReductionReport

    def ranking(self, part: Optional[str] = None) -> Ranking:
        """Cached sorted importance of ``part`` (default: the selected part)."""
        return load_ranking(self.path, part or self.inputs.part)
