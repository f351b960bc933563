"""Export a pruned checkpoint: select, prune, write atomically, reload and verify.

This is the one export path: the CLI's ``prune`` and the dashboard's Export button build a
:class:`~gradiend_core.pruning.plan.PruningPlan` and call :func:`export_plan`; :func:`export_pruned` is
the same in one call.

Besides the model, an export holds ``pruning.json`` (provenance), the carried JSON side files,
the source's training records (``pre_prune.safetensors`` whole, ``validation_gradients.safetensors``
restricted to the kept dims) and, when the selection used a mask, that mask as
``mask.safetensors`` (a saved mask over base-global indices, readable by ``--mask``), so that
the recorded command reproduces the export from the export directory alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import PROVENANCE_FILE, CheckpointData, open_checkpoint, write_checkpoint
from ..checkpoint.files import EXPORT_MASK_FILE, PRE_PRUNE_FILE, VALIDATION_FILE
from ..checkpoint.records import load_pre_prune_record, load_validation_record
from ..errors import CheckpointError, SelectionError
from ..ranking.importance import DEFAULT_PART, GRADIENT_MEAN
from ..ranking.ranking import Ranking
from ..selection.expr.bundle import MaskBundle, space_digest
from ..selection.rule import Selection
from ..space.coords import local_mask_to_global
from ..version import __version__
from .plan import PruningPlan, plan_pruning
from .prune import prune_checkpoint
from .reduction import ReductionReport
from .reproduce import reproduce_command
from .verify import sha256_file, verify_export

__all__ = [
    "ExportResult",
    "export_plan",
    "export_pruned",
]


#: One worker for hashing a source weight file beside the pruning work.
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-sha256")


@dataclass
class ExportResult:
    """What :func:`export_plan` wrote.

    Attributes:
        path: the export directory.
        selection: the kept dims (in the source's input space).
        report: the reduction preview the export matches.
        provenance: the content of ``pruning.json``.
        file_sha256: sha256 of every file as verified (hashed in the staging directory, before
            the export was moved into place), by name.
    """

    path: Path
    selection: Selection
    report: ReductionReport
    provenance: dict[str, Any]
    file_sha256: dict[str, str] = field(default_factory=dict)


def _provenance(
    plan: PruningPlan,
    target: str | os.PathLike,
    source_sha256: str | None,
    saved_mask: MaskBundle | None,
    records: dict[str, str],
    transient: Sequence[str | os.PathLike] = (),
    cut_quality: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data, spec = plan.checkpoint, plan.mask_spec
    mask_copy = str(Path(target) / EXPORT_MASK_FILE) if saved_mask is not None else None
    return {
        "tool": "gradiend_core",
        "tool_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_path": str(data.path),
        "source_weights_file": data.weights_file.name if data.weights_file else None,
        "source_weights_sha256": source_sha256,
        # the one record of what ranked the dims: a part, gradient-mean, a custom label; null for a mask alone
        "importance": plan.source if plan.ranks else None,
        "threshold": plan.threshold,
        "topk": plan.topk,
        "mask_sha256": spec.sha256,
        "mask_file": spec.file,
        "name_include": spec.name_include,
        "name_exclude": spec.name_exclude,
        "mask_expr": spec.expression,
        "mask_expr_sha256": spec.expression_sha256,
        "input_dim_before": data.architecture.input_dim,
        "kept_dims": plan.selection.k,
        "unpruned_length": data.param_map.unpruned_length,
        # the mask step's whole mask (file, names and expression composed), over base-global indices
        "mask_saved": EXPORT_MASK_FILE if saved_mask is not None else None,
        "mask_saved_sha256": saved_mask.sha256 if saved_mask is not None else None,
        "records": records,
        "command": reproduce_command(plan, target, mask_copy, transient),
        "cut_quality": cut_quality,
    }


def _saved_mask(plan: PruningPlan) -> MaskBundle | None:
    """The plan's composed mask as a saved mask over base-global indices (``None`` without one).

    Only the mask itself is recorded (not how it was specified), so two exports with the same
    mask hold the same file.
    """
    if plan.mask is None:
        return None
    pmap = plan.checkpoint.param_map
    meta = plan.checkpoint.metadata
    base = meta.get("base_model") or meta.get("base_model_id")
    bits = local_mask_to_global(pmap, plan.mask)
    return MaskBundle("export mask", "", bits, str(base) if base else None, space_digest(pmap))


def _carried_records(data: CheckpointData, pruned: CheckpointData) -> tuple[dict[str, Any], dict[str, str]]:
    """The source's training records for the export, and what happened to each.

    ``pre_prune.safetensors`` describes the pre-pruning input space, so it is carried whole;
    ``validation_gradients.safetensors`` is restricted to the kept dims' columns (with their
    base-global indices). A record that cannot be read is not carried; the reason is returned.
    """
    files: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for name, load in ((PRE_PRUNE_FILE, load_pre_prune_record), (VALIDATION_FILE, load_validation_record)):
        try:
            record = load(data.path)
            if record is not None and name == VALIDATION_FILE:
                record = record.restricted(pruned.param_map.base_global_index())
        except CheckpointError as e:
            notes[name] = f"not carried: {e}"
            continue
        if record is not None:
            files[name] = (record.tensors(), record.header())
            notes[name] = "carried whole" if name == PRE_PRUNE_FILE else "restricted to the kept dims"
    return files, notes


def export_plan(
    plan: PruningPlan,
    target: str | os.PathLike,
    *,
    overwrite: bool = False,
    use_safetensors: bool = True,
    source_sha256: str | None = None,
    transient: Sequence[str | os.PathLike] = (),
    cut_quality: dict[str, Any] | None = None,
) -> ExportResult:
    """Write the pruned checkpoint a plan describes to ``target``, then reload and verify it.

    The source is never modified. The export is written into a staging directory beside
    ``target``, reloaded there and compared with what was meant to be written (input_dim, kept
    base-global indices, every weight tensor); only a verified export is moved into place, so a
    failed verification (or an interrupt) leaves ``target`` as it was, an old export included.

    Args:
        plan: from :func:`~gradiend_core.pruning.plan.plan_pruning`.
        target: new (or empty, or with ``overwrite``) directory.
        overwrite: replace a non-empty ``target`` (a checkpoint directory only).
        use_safetensors: write safetensors (default) or the ``.bin``/``.pth`` layout.
        source_sha256: the source weight file's sha256 if already known (skips re-hashing).
        transient: directories whose files will not outlive the export (a server's session
            files); the recorded command does not rely on them (see :func:`reproduce_command`).
        cut_quality: what the cut keeps of the encoder's quality, recorded in ``pruning.json``
            (:func:`gradiend_core.curve.checkpoint_curves.selection_quality` measures it).

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: refused target, failed write or failed verification.
    """
    data = plan.checkpoint
    hashing = None
    if source_sha256 is None and data.weights is not None:
        # hashlib releases the GIL: the source's digest is computed on another core while the
        # kept dims are gathered (cached per weight file, so later exports of it skip this)
        hashing = _HASHER.submit(data.weights.sha256)
    pruned = prune_checkpoint(data, plan.selection.keep)
    if hashing is not None:
        source_sha256 = hashing.result()
    elif source_sha256 is None and data.weights_file is not None and data.weights_file.is_file():
        source_sha256 = sha256_file(data.weights_file)
    tensor_files, records = _carried_records(data, pruned)
    saved_mask = _saved_mask(plan)
    if saved_mask is not None:
        mask_tensor = torch.from_numpy(np.ascontiguousarray(saved_mask.mask, dtype=bool))
        tensor_files[EXPORT_MASK_FILE] = ({"mask": mask_tensor}, saved_mask.metadata())
    provenance = _provenance(plan, target, source_sha256, saved_mask, records, transient, cut_quality)
    side = data.carried_side_files()
    side[PROVENANCE_FILE] = provenance
    sums: dict[str, str] = {}

    def verify(staged: Path) -> None:
        verify_export(staged, pruned)
        sums.update({f.name: sha256_file(f) for f in sorted(staged.iterdir()) if f.is_file()})

    path = write_checkpoint(
        target,
        architecture=pruned.architecture,
        param_map=pruned.param_map,
        state_dict=pruned.state_dict,
        metadata=pruned.metadata,
        side_files=side,
        use_safetensors=use_safetensors,
        overwrite=overwrite,
        source=data.path,
        tensor_files=tensor_files,
        verify=verify,
    )
    return ExportResult(
        path=path, selection=plan.selection, report=plan.report, provenance=provenance, file_sha256=sums
    )


def export_pruned(
    source: CheckpointData | str | os.PathLike,
    target: str | os.PathLike,
    *,
    part: str = DEFAULT_PART,
    topk: object = None,
    threshold: object = None,
    mask: np.ndarray | None = None,
    importance: Ranking | np.ndarray | None = None,
    importance_label: str | None = None,
    overwrite: bool = False,
    use_safetensors: bool = True,
    mask_path: str | None = None,
    name_include: str | None = None,
    name_exclude: str | None = None,
    source_sha256: str | None = None,
    mask_expr: Any = None,
    cut_quality: dict[str, Any] | None = None,
) -> ExportResult:
    """Prune ``source`` by mask -> threshold -> topk and write it to ``target``, in one call
    (:func:`~gradiend_core.pruning.plan.plan_pruning` then :func:`export_plan`).

    Args:
        source: checkpoint directory or :class:`CheckpointData`.
        target: new (or empty, or with ``overwrite``) directory.
        part: the importance source (a weight part, or ``gradient-mean`` for a checkpoint with a
            pre-prune record) when ``importance`` is omitted.
        topk, threshold, mask: the selection (see :func:`gradiend_core.selection.rule.select`).
        importance: a precomputed :class:`Ranking` or importance ``(input_dim,)`` (e.g. the
            dashboard's cached one) to rank by instead; it is recorded as ``part`` when it is a
            :class:`Ranking` without ``importance_label``, as ``"custom"`` when it is a vector.
        importance_label: what ``importance`` is (e.g. :data:`GRADIENT_MEAN`); requires it.
        overwrite: replace a non-empty ``target``.
        use_safetensors: write safetensors (default) or the ``.bin``/``.pth`` layout.
        mask_path: the mask file's path, for the provenance record (``mask`` holds its content).
        name_include, name_exclude: parameter-name patterns ANDed into ``mask``.
        source_sha256: the source weight file's sha256 if already known (skips re-hashing).
        mask_expr: a mask expression (text, or a :class:`~gradiend_core.selection.expr.evaluate.MaskResult`
            evaluated on ``source``), ANDed into ``mask``; its canonical text and mask digest are
            recorded in ``pruning.json`` and its command line uses ``--mask-expr``.
        cut_quality: what the cut keeps of the encoder's quality, for ``pruning.json``.

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: unreadable source, refused target, failed write or failed verification.
        SelectionError: invalid selection arguments or an empty selection.
    """
    data = source if isinstance(source, CheckpointData) else open_checkpoint(source)
    ranking = None
    label = part
    if importance_label is not None:
        if importance is None:
            raise SelectionError(
                f"importance_label={importance_label!r} names the importance you pass; give it as importance= "
                f"(for {GRADIENT_MEAN!r}: gradient_mean_importance(data)), or rank by a weight part with part=."
            )
        label = importance_label
    elif importance is not None and not isinstance(importance, Ranking):
        label = "custom"
    if importance is not None:
        ranking = Ranking.coerce(importance)
    plan = plan_pruning(
        data,
        source=label,
        topk=topk,
        threshold=threshold,
        mask=mask,
        mask_file=mask_path,
        name_include=name_include,
        name_exclude=name_exclude,
        mask_expr=mask_expr,
        ranking=ranking,
    )
    return export_plan(
        plan,
        target,
        overwrite=overwrite,
        use_safetensors=use_safetensors,
        source_sha256=source_sha256,
        cut_quality=cut_quality,
    )
