"""Export a pruned checkpoint: select, prune, write atomically, reload and verify.

This is the one export path: the CLI's ``prune`` and the dashboard's Export button build a
:class:`~gradiend_core.plan.PruningPlan` and call :func:`export_plan`; :func:`export_pruned` is
the same in one call.

Besides the model, an export holds ``pruning.json`` (provenance), the carried JSON side files,
the source's training records (``pre_prune.safetensors`` whole, ``validation_gradients.safetensors``
restricted to the kept dims) and, when the selection used a mask, that mask as
``mask.safetensors`` (a saved mask over base-global indices, readable by ``--mask``), so that
the recorded command reproduces the export from the export directory alone.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .checkpoint import PROVENANCE_FILE, CheckpointData, open_checkpoint, read_checkpoint, write_checkpoint
from .errors import CheckpointError, SelectionError
from .importance import DEFAULT_PART, GRADIENT_MEAN, SOURCES, gradient_mean_importance
from .mask_expr.bundle import MaskBundle, space_digest
from .mask_expr.space import local_mask_to_global
from .masks import sha256_mask
from .plan import PruningPlan, plan_pruning
from .pruning import prune_checkpoint
from .ranking import Ranking
from .records import PRE_PRUNE_FILE, VALIDATION_FILE, load_pre_prune_record, load_validation_record
from .reduction import ReductionReport
from .selection import Selection

__all__ = [
    "EXPORT_MASK_FILE",
    "ExportResult",
    "GRADIENT_MEAN",
    "cli_command",
    "export_plan",
    "expression_reads_under",
    "mask_inputs",
    "export_pruned",
    "gradient_mean_importance",
    "reproduce_command",
    "same_bits",
    "sha256_file",
    "sha256_mask",
]

HASH_CHUNK = 1 << 24
#: One worker for hashing a source weight file beside the pruning work.
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-sha256")
#: The mask an export's selection used, saved in the export directory (see the module docstring).
EXPORT_MASK_FILE = "mask.safetensors"


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


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
    provenance: Dict[str, Any]
    file_sha256: Dict[str, str] = field(default_factory=dict)


def cli_command(
    source: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    importance: str,
    topk: Any,
    threshold: Any,
    mask_path: Optional[str],
    name_include: Optional[str] = None,
    name_exclude: Optional[str] = None,
    mask_expr: Optional[str] = None,
) -> str:
    """The ``gradiend-core prune`` command line for these settings.

    ``importance`` is one of the four weight parts (``--part``) or :data:`GRADIENT_MEAN`
    (``--importance gradient-mean``).
    """
    args = ["gradiend-core", "prune", str(source)]
    args += ["--importance", GRADIENT_MEAN] if importance == GRADIENT_MEAN else ["--part", importance]
    if topk is not None:
        args += ["--topk", repr(topk) if isinstance(topk, float) else str(topk)]
    if threshold is not None:
        args += ["--threshold", repr(float(threshold))]
    if mask_path:
        args += ["--mask", str(mask_path)]
    if name_include:
        args += ["--include", name_include]
    if name_exclude:
        args += ["--exclude", name_exclude]
    if mask_expr:
        args += ["--mask-expr", mask_expr]
    args += ["--out", str(out)]
    return " ".join(shlex.quote(a) for a in args)


def expression_reads_under(expression: Optional[str], roots: Sequence[Union[str, os.PathLike]]) -> bool:
    """Whether a mask expression reads a file (``file()``, ``model()``) at or below one of ``roots``."""
    if not expression or not roots:
        return False
    from .mask_expr.syntax import File, Model, iter_terms, parse

    try:
        terms = [t for t in iter_terms(parse(expression)) if isinstance(t, (File, Model))]
    except SelectionError:
        return False
    resolved = [Path(r).expanduser().resolve() for r in roots]
    paths = [Path(t.path).expanduser().resolve() for t in terms]
    return any(p == r or r in p.parents for p in paths for r in resolved)


def _under(path: Optional[str], roots: Sequence[Union[str, os.PathLike]]) -> bool:
    if not path or not roots:
        return False
    p = Path(path).expanduser().resolve()
    return any(p == r or r in p.parents for r in (Path(x).expanduser().resolve() for x in roots))


def mask_inputs(
    plan: PruningPlan, mask_path: Optional[str] = None, transient: Sequence[Union[str, os.PathLike]] = ()
) -> Tuple[Optional[str], Optional[str], Optional[str], Optional[str]]:
    """``(mask file, include, exclude, expression)`` a reproduction should name for the mask step.

    The inputs the user gave, as long as they will still be there (not under ``transient``, e.g. a
    server session's uploads); otherwise the saved copy of the whole mask step (``mask_path``, an
    export's ``mask.safetensors``), which then stands for every mask input.
    """
    spec = plan.mask_spec
    unstable = _under(spec.file, transient) or expression_reads_under(spec.expression, transient)
    if mask_path and unstable:
        return mask_path, None, None, None
    return spec.file, spec.name_include, spec.name_exclude, spec.expression


def reproduce_command(
    plan: PruningPlan,
    out: Union[str, os.PathLike],
    mask_path: Optional[str] = None,
    transient: Sequence[Union[str, os.PathLike]] = (),
) -> Optional[str]:
    """The ``gradiend-core prune`` command that writes ``plan`` to ``out`` (``None`` when the
    importance is not one the command line can name, e.g. a custom vector).

    Args:
        plan: the plan.
        out: the target directory of the command.
        mask_path: a saved copy of the whole mask step (an export's ``mask.safetensors``), named
            instead of the mask inputs when one of them will be gone (see :func:`mask_inputs`).
        transient: directories whose files will be gone when the command runs (e.g. a server's
            session files).
    """
    if plan.source not in SOURCES:
        return None
    mask_file, include, exclude, expression = mask_inputs(plan, mask_path, transient)
    return cli_command(
        plan.checkpoint.path, out, plan.source, plan.topk, plan.threshold, mask_file, include, exclude, expression
    )


def _provenance(
    plan: PruningPlan,
    target: Union[str, os.PathLike],
    source_sha256: Optional[str],
    saved_mask: Optional[MaskBundle],
    records: Dict[str, str],
    transient: Sequence[Union[str, os.PathLike]] = (),
    cut_quality: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    from . import __version__

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


def _saved_mask(plan: PruningPlan) -> Optional[MaskBundle]:
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


def _carried_records(data: CheckpointData, pruned: CheckpointData) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The source's training records for the export, and what happened to each.

    ``pre_prune.safetensors`` describes the pre-pruning input space, so it is carried whole;
    ``validation_gradients.safetensors`` is restricted to the kept dims' columns (with their
    base-global indices). A record that cannot be read is not carried; the reason is returned.
    """
    files: Dict[str, Any] = {}
    notes: Dict[str, str] = {}
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
    target: Union[str, os.PathLike],
    *,
    overwrite: bool = False,
    use_safetensors: bool = True,
    source_sha256: Optional[str] = None,
    transient: Sequence[Union[str, os.PathLike]] = (),
    cut_quality: Optional[Dict[str, Any]] = None,
) -> ExportResult:
    """Write the pruned checkpoint a plan describes to ``target``, then reload and verify it.

    The source is never modified. The export is written into a staging directory beside
    ``target``, reloaded there and compared with what was meant to be written (input_dim, kept
    base-global indices, every weight tensor); only a verified export is moved into place, so a
    failed verification (or an interrupt) leaves ``target`` as it was, an old export included.

    Args:
        plan: from :func:`~gradiend_core.plan.plan_pruning`.
        target: new (or empty, or with ``overwrite``) directory.
        overwrite: replace a non-empty ``target`` (a checkpoint directory only).
        use_safetensors: write safetensors (default) or the ``.bin``/``.pth`` layout.
        source_sha256: the source weight file's sha256 if already known (skips re-hashing).
        transient: directories whose files will not outlive the export (a server's session
            files); the recorded command does not rely on them (see :func:`reproduce_command`).
        cut_quality: what the cut keeps of the encoder's quality, recorded in ``pruning.json``
            (:func:`gradiend_core.pruning_curve.selection_quality` measures it).

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
    sums: Dict[str, str] = {}

    def verify(staged: Path) -> None:
        _verify(staged, pruned)
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
    source: Union[CheckpointData, str, os.PathLike],
    target: Union[str, os.PathLike],
    *,
    part: str = DEFAULT_PART,
    topk: object = None,
    threshold: object = None,
    mask: Optional[np.ndarray] = None,
    importance: Union[Ranking, np.ndarray, None] = None,
    importance_label: Optional[str] = None,
    overwrite: bool = False,
    use_safetensors: bool = True,
    mask_path: Optional[str] = None,
    name_include: Optional[str] = None,
    name_exclude: Optional[str] = None,
    source_sha256: Optional[str] = None,
    mask_expr: Any = None,
    cut_quality: Optional[Dict[str, Any]] = None,
) -> ExportResult:
    """Prune ``source`` by mask -> threshold -> topk and write it to ``target``, in one call
    (:func:`~gradiend_core.plan.plan_pruning` then :func:`export_plan`).

    Args:
        source: checkpoint directory or :class:`CheckpointData`.
        target: new (or empty, or with ``overwrite``) directory.
        part: the importance source (a weight part, or ``gradient-mean`` for a checkpoint with a
            pre-prune record) when ``importance`` is omitted.
        topk, threshold, mask: the selection (see :func:`gradiend_core.selection.select`).
        importance: a precomputed :class:`Ranking` or importance ``(input_dim,)`` (e.g. the
            dashboard's cached one) to rank by instead; it is recorded as ``part`` when it is a
            :class:`Ranking` without ``importance_label``, as ``"custom"`` when it is a vector.
        importance_label: what ``importance`` is (e.g. :data:`GRADIENT_MEAN`); requires it.
        overwrite: replace a non-empty ``target``.
        use_safetensors: write safetensors (default) or the ``.bin``/``.pth`` layout.
        mask_path: the mask file's path, for the provenance record (``mask`` holds its content).
        name_include, name_exclude: parameter-name patterns ANDed into ``mask``.
        source_sha256: the source weight file's sha256 if already known (skips re-hashing).
        mask_expr: a mask expression (text, or a :class:`~gradiend_core.mask_expr.MaskResult`
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


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality of two tensors (NaN equals NaN with the same payload, unlike ``==``)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}.get(a.element_size())
    if a.is_floating_point() and as_int is not None:
        return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))
    return torch.equal(a, b)


def _verify(path: Path, expected: CheckpointData) -> None:
    back = read_checkpoint(path)
    problems = []
    if back.architecture.input_dim != expected.architecture.input_dim:
        problems.append(f"input_dim {back.architecture.input_dim} != {expected.architecture.input_dim}")
    if not back.param_map.same_selection(expected.param_map):
        problems.append("kept base-model entries differ")
    for key, t in expected.state_dict.items():
        if key not in back.state_dict or not same_bits(back.state_dict[key], t):
            problems.append(f"tensor {key} differs")
    if problems:
        raise CheckpointError(
            f"verification of the export failed: {'; '.join(problems)}. Nothing was moved into place (a previous "
            "export in the target directory is unchanged)."
        )
