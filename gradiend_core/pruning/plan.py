"""A pruning plan: from the user's inputs to the kept dims and their savings, built in one place.

The dashboard, the CLI and the export all take the same path - importance source -> ranking ->
mask -> threshold -> topk -> reduction report - through :func:`plan_pruning`, so what the page
previews, what ``gradiend-core prune --dry-run`` prints and what an export writes cannot differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..checkpoint import CheckpointData
from ..errors import SelectionError
from ..ranking.importance import DEFAULT_PART, nonfinite_warning, validate_source
from ..ranking.ranking import Ranking
from ..selection.masks import compose_masks, load_mask, name_mask, sha256_mask
from ..selection.rule import Selection, select, validate_threshold, validate_topk
from .reduction import ReductionReport, reduction_report

__all__ = ["MaskSpec", "PruningPlan", "RankingFor", "plan_pruning", "sha256_mask"]

#: ``ranking_for(checkpoint, source) -> Ranking``: where a plan gets the ranking of a source
#: (the dashboard passes its shared cache; the default ranks the importance in memory).
RankingFor = Callable[[CheckpointData, str], Ranking]


@dataclass(frozen=True)
class MaskSpec:
    """Where the mask step's mask came from, for the provenance record and the reproduce command.

    Attributes:
        file: the mask file as the user named it (``None`` without one).
        name_include, name_exclude: parameter-name patterns folded into the mask.
        sha256: digest of the composed mask (:func:`~gradiend_core.selection.masks.sha256_mask`), ``None``
            without a mask.
        expression: the mask expression's canonical text (``None`` without one).
        expression_sha256: the digest of the expression's own mask.
    """

    file: str | None = None
    name_include: str | None = None
    name_exclude: str | None = None
    sha256: str | None = None
    expression: str | None = None
    expression_sha256: str | None = None


def default_ranking_for(data: CheckpointData, source: str) -> Ranking:
    """The ranking of ``source`` from the rank store: in memory for a loaded checkpoint, from
    per-bucket summaries (cached on disk) for one opened without its weights."""
    from ..ranking.store.registry import ranking_for

    return ranking_for(data, source, layout="never")


@dataclass(frozen=True)
class PruningPlan:
    """Everything a pruning decision consists of, before anything is written.

    Attributes:
        checkpoint: the source checkpoint.
        source: the importance source (a part or ``gradient-mean``).
        ranking: the source's ranking (always built: the preview reports the share of this
            source's importance that the kept dims hold, also for a mask alone).
        mask: the composed keep-mask (numpy bool ``(input_dim,)``) or ``None``.
        mask_spec: where the mask came from.
        threshold, topk: validated selection arguments.
        selection: the kept dims.
        report: sizes before and after, and the share of importance kept.
        warnings: what the user should know (non-finite importance, a clipped topk).
        expression: the evaluated mask expression (its own mask, term counts), or ``None``.
    """

    checkpoint: CheckpointData
    source: str
    ranking: Ranking
    mask: np.ndarray | None
    mask_spec: MaskSpec
    threshold: float | None
    topk: int | float | None
    selection: Selection
    report: ReductionReport
    warnings: tuple[str, ...] = field(default_factory=tuple)
    expression: object | None = None

    @property
    def ranks(self) -> bool:
        """True when importance chooses dims (a threshold or a topk), not only a mask."""
        return self.threshold is not None or self.topk is not None


def _compose_mask(
    data: CheckpointData,
    mask: np.ndarray | None,
    mask_file: str | None,
    include: str | None,
    exclude: str | None,
) -> np.ndarray | None:
    if mask is None and mask_file:
        mask = load_mask(mask_file, data.param_map)
    names = name_mask(data.param_map, include, exclude) if (include or exclude) else None
    return compose_masks(mask, names)


def _evaluate_expression(data: CheckpointData, mask_expr, ranking_for: RankingFor, resolve_path):
    """The expression's :class:`~gradiend_core.selection.expr.evaluate.MaskResult` (``None`` without one)."""
    if mask_expr is None:
        return None
    from ..selection.expr.evaluate import MaskResult, evaluate_mask_expr

    if isinstance(mask_expr, MaskResult):
        if not mask_expr.param_map.same_selection(data.param_map):
            raise SelectionError(
                f"the mask expression {mask_expr.expression!r} was evaluated on another input space "
                f"(input_dim {mask_expr.input_dim:,}, here {data.architecture.input_dim:,}); evaluate it again."
            )
        return mask_expr
    return evaluate_mask_expr(mask_expr, data, ranking_for=ranking_for, resolve_path=resolve_path)


def _label(source: object) -> str:
    if not isinstance(source, str) or not source.strip():
        raise SelectionError(f"the importance source must be named by a non-empty string, got {source!r}.")
    try:
        return validate_source(source)
    except ValueError:
        return source.strip()  # a custom importance passed with its own label


def _warnings(source: str, ranking: Ranking, selection: Selection) -> tuple[str, ...]:
    out = []
    text = nonfinite_warning(source, ranking.n_nan, ranking.n_inf, ranking.size)
    if text:
        out.append(text)
    if selection.topk_clipped:
        out.append(
            f"topk asks for {selection.topk:,} dims, but the mask and threshold leave {selection.n_after_threshold:,}; "
            f"all {selection.n_after_threshold:,} are kept."
        )
    return tuple(out)


def plan_pruning(
    checkpoint: CheckpointData,
    *,
    source: str = DEFAULT_PART,
    topk: object = None,
    threshold: object = None,
    mask: np.ndarray | None = None,
    mask_file: str | None = None,
    name_include: str | None = None,
    name_exclude: str | None = None,
    mask_expr=None,
    ranking: Ranking | None = None,
    ranking_for: RankingFor | None = None,
    resolve_path=None,
) -> PruningPlan:
    """Plan a pruning: rank ``source``, apply mask -> threshold -> topk, report the savings.

    Args:
        checkpoint: the checkpoint to prune.
        source: importance source, one of :data:`gradiend_core.ranking.importance.SOURCES`.
        topk, threshold: see :func:`gradiend_core.selection.rule.select`.
        mask: a keep-mask already in the current input space (numpy bool ``(input_dim,)``).
        mask_file: a mask file (read when ``mask`` is not given; recorded either way).
        name_include, name_exclude: parameter-name patterns, ANDed into the mask.
        mask_expr: a mask expression (text, or a :class:`~gradiend_core.selection.expr.evaluate.MaskResult`
            evaluated on this checkpoint), ANDed into the mask; see :mod:`gradiend_core.selection.expr`.
        ranking: the ranking of ``source`` if already built; with it, ``source`` may also be a
            free label such as ``"custom"`` for an importance that is not one of the sources.
        ranking_for: how to get the ranking of ``source`` otherwise, and of the parts a mask
            expression ranks by (default: rank in memory).
        resolve_path: how a mask expression's ``file()``/``model()`` paths become paths (a server
            passes one that refuses paths outside its allowed directories).

    Returns:
        A :class:`PruningPlan`.

    Raises:
        SelectionError: for invalid selection arguments, no selection at all, or a selection that
            keeps nothing.
        CheckpointError: for an unreadable mask file or importance source.
        ValueError: for an unknown source.
    """
    source = validate_source(source) if ranking is None else _label(source)
    topk = validate_topk(topk)
    threshold = validate_threshold(threshold)
    composed = _compose_mask(checkpoint, mask, mask_file, name_include, name_exclude)
    if composed is None and mask_expr is None and threshold is None and topk is None:
        raise SelectionError("give at least one of a mask, a mask expression, a threshold and a topk.")
    ranking_for = ranking_for or default_ranking_for
    if ranking is None:
        ranking = ranking_for(checkpoint, source)
    given = {source: ranking}
    expr = _evaluate_expression(
        checkpoint,
        mask_expr,
        lambda d, p: given[p] if d is checkpoint and p in given else ranking_for(d, p),
        resolve_path,
    )
    if expr is not None:
        composed = expr.mask if composed is None else composed & expr.mask
    ranks = threshold is not None or topk is not None
    selection = select(
        ranking if ranks else None,
        input_dim=checkpoint.architecture.input_dim,
        mask=composed,
        threshold=threshold,
        topk=topk,
    )
    report = reduction_report(checkpoint, selection, ranking, source)
    spec = MaskSpec(
        mask_file,
        name_include,
        name_exclude,
        sha256_mask(composed),
        expr.expression if expr is not None else None,
        expr.sha256 if expr is not None else None,
    )
    return PruningPlan(
        checkpoint,
        source,
        ranking,
        composed,
        spec,
        threshold,
        topk,
        selection,
        report,
        _warnings(source, ranking, selection),
        expr,
    )
