"""What every view receives: the open checkpoint and the pruning plan, computed once per run."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.services.loading import load_ranking
from dashboard.state.inputs import SelectionInputs
from gradiend_core.checkpoint import CheckpointData
from gradiend_core.pruning.plan import PruningPlan
from gradiend_core.pruning.reduction import ReductionReport
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.rule import Selection

__all__ = ["ViewContext"]


@dataclass
class ViewContext:
    """The page state shared by the views.

    Attributes:
        path: the checkpoint path as opened (cache key for :func:`ranking`).
        data: the checkpoint (shared, read-only).
        inputs: the user's selection inputs.
        plan: the pruning plan of those inputs (selection, report, warnings).
    """

    path: str
    data: CheckpointData
    inputs: SelectionInputs
    plan: PruningPlan

    @property
    def selection(self) -> Selection:
        """The kept dims."""
        return self.plan.selection

    @property
    def report(self) -> ReductionReport:
        """The savings of the selection."""
        return self.plan.report

    @property
    def source(self) -> str:
        """The importance source the selection ranks by."""
        return self.plan.source

    def ranking(self, source: str | None = None) -> Ranking:
        """Cached ranking of ``source`` (default: the selected source)."""
        if source is None or source == self.plan.source:
            return self.plan.ranking
        return load_ranking(self.path, source)
