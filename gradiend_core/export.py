"""Export a pruned checkpoint: select, prune, write atomically, reload and verify.

This is the one export path; the CLI's ``prune`` and the dashboard's Export button both call
:func:`export_pruned`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from .checkpoint import (
    PROVENANCE_FILE,
    CheckpointData,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from .errors import SelectionError
from .importance import DEFAULT_PART, PARTS, validate_part, weight_importance
from .pruning import prune_checkpoint
from .reduction import ReductionReport, reduction_report
from .selection import Ranking, Selection, select

HASH_CHUNK = 1 << 24
#: Label of the pre-prune importance (|mean source gradient| from ``pre_prune.safetensors``).
GRADIENT_MEAN = "gradient-mean"
#: Every importance source by label: the four weight parts, then the pre-prune gradient mean.
IMPORTANCE_SOURCES = PARTS + (GRADIENT_MEAN,)


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_mask(mask: Optional[np.ndarray]) -> Optional[str]:
    """Hex sha256 of a bool mask's packed bits (``None`` for no mask)."""
    if mask is None:
        return None
    return hashlib.sha256(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).hexdigest()


@dataclass
class ExportResult:
    """What :func:`export_pruned` wrote.

    Attributes:
        path: the export directory.
        selection: the kept dims (in the source's input space).
        report: the reduction preview the export matches.
        provenance: the content of ``pruning.json``.
        file_sha256: sha256 of every written file, by name.
    """

    path: Path
    selection: Selection
    report: ReductionReport
    provenance: Dict[str, Any]
    file_sha256: Dict[str, str] = field(default_factory=dict)


def importance_for(data: CheckpointData, part: str = DEFAULT_PART) -> np.ndarray:
    """Weight importance of ``part`` for a checkpoint, float32 ``(input_dim,)``."""
    return weight_importance(data.state_dict, validate_part(part))


def gradient_mean_importance(data: CheckpointData, record: Any = None) -> np.ndarray:
    """The pre-prune importance (|mean source gradient|) of each of the checkpoint's input dims.

    It is read from ``pre_prune.safetensors`` next to the checkpoint (written by a training run
    with a ``pre_prune_config``) and matched to the checkpoint's dims by base-global index, so it
    applies to a pre-pruned or pre- and post-pruned checkpoint as well as to an unpruned one.

    Args:
        data: the checkpoint.
        record: its :class:`~gradiend_core.trainer.records.PrePruneRecord` if already loaded.

    Returns:
        float32 ``(input_dim,)``; NaN for dims pre-pruning did not measure (they rank last and
        never pass a threshold).

    Raises:
        CheckpointError: when the checkpoint has no pre-prune record, or it is malformed.
    """
    if record is None:
        from .trainer.records import PRE_PRUNE_FILE, load_pre_prune_record

        record = load_pre_prune_record(data.path)
        if record is None:
            raise CheckpointError(
                f"{data.path} has no {PRE_PRUNE_FILE}, so there is no {GRADIENT_MEAN} importance: it is written by a "
                "gradiend_core training run with a pre_prune_config. Rank by a weight part instead (--part)."
            )
    return record.importance_for(data.param_map.base_global_index())


def cli_command(
    source: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    part: str,
    topk: Any,
    threshold: Any,
    mask_path: Optional[str],
    name_include: Optional[str] = None,
    name_exclude: Optional[str] = None,
) -> str:
    """The ``gradiend-core prune`` command line that reproduces an export.

    ``part`` is one of the four weight parts (``--part``) or :data:`GRADIENT_MEAN`
    (``--importance gradient-mean``).
    """
    import shlex

    args = ["gradiend-core", "prune", str(source)]
    args += ["--importance", GRADIENT_MEAN] if part == GRADIENT_MEAN else ["--part", part]
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
    args += ["--out", str(out)]
    return " ".join(shlex.quote(a) for a in args)


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
    cut_quality: Optional[Dict[str, Any]] = None,
) -> ExportResult:
    """Prune ``source`` by mask -> threshold -> topk and write it to ``target``.

    The source is never modified. The export is written atomically, reloaded, and compared with
    what was meant to be written (input_dim, kept base-global indices, every weight tensor)
    before this returns; on a mismatch the export is removed and an error raised.

    Args:
        source: checkpoint directory or :class:`CheckpointData`.
        target: new (or empty, or with ``overwrite``) directory.
        part: weight part ranked by when ``importance`` is omitted (one of the four parts);
            otherwise only the label recorded for ``importance`` (unless ``importance_label``).
        topk, threshold, mask: the selection (see :func:`gradiend_core.selection.select`).
        importance: precomputed :class:`Ranking` or importance ``(input_dim,)`` (e.g. the
            dashboard's cached one); computed from ``part`` when omitted.
        importance_label: what ``importance`` is, when it is not a weight part (e.g.
            :data:`GRADIENT_MEAN` for :func:`gradient_mean_importance`); recorded in
            ``pruning.json`` (``"importance"`` and ``"part"``) and in its command line.
            Requires ``importance``.
        overwrite: replace a non-empty ``target``.
        use_safetensors: write safetensors (default) or the ``.bin``/``.pth`` layout.
        mask_path: the mask file's path, for the provenance record.
        name_include, name_exclude: the parameter-name patterns already folded into ``mask``
            (see :func:`gradiend_core.analysis.names.name_mask`), for the provenance record.
        source_sha256: the source weight file's sha256 if already known (skips re-hashing).
        cut_quality: what the cut keeps of the encoder's quality, recorded in ``pruning.json`` as
            ``cut_quality`` (:func:`gradiend_core.pruning_curve.selection_quality` measures it).

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: unreadable source, refused target, failed write or failed verification.
        SelectionError: invalid selection arguments or an empty selection.
    """
    data = source if isinstance(source, CheckpointData) else read_checkpoint(source)
    if importance_label is None:
        part = validate_part(part)
        label = "custom" if importance is not None and not isinstance(importance, Ranking) else part
    else:
        if importance is None:
            raise SelectionError(
                f"importance_label={importance_label!r} names the importance you pass; give it as importance= "
                f"(for {GRADIENT_MEAN!r}: gradient_mean_importance(data)), or rank by a weight part with part=."
            )
        if not isinstance(importance_label, str) or not importance_label.strip():
            raise SelectionError(f"importance_label must be a non-empty string, got {importance_label!r}.")
        part = label = importance_label
    ranking = None
    if threshold is not None or topk is not None:
        ranking = importance if isinstance(importance, Ranking) else Ranking(
            importance if importance is not None else importance_for(data, part)
        )
    selection = select(ranking, input_dim=data.architecture.input_dim, mask=mask, threshold=threshold, topk=topk)
    report = reduction_report(data, selection, ranking, part if ranking is not None else None)
    pruned = prune_checkpoint(data, selection.keep)

    if source_sha256 is None and data.weights_file is not None and data.weights_file.is_file():
        source_sha256 = sha256_file(data.weights_file)
    from . import __version__

    provenance = {
        "tool": "gradiend_core",
        "tool_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_path": str(data.path),
        "source_weights_file": data.weights_file.name if data.weights_file else None,
        "source_weights_sha256": source_sha256,
        "part": part if ranking is not None else None,
        "importance": label,
        "threshold": threshold,
        "topk": topk,
        "mask_sha256": sha256_mask(mask),
        "mask_file": mask_path,
        "name_include": name_include,
        "name_exclude": name_exclude,
        "input_dim_before": data.architecture.input_dim,
        "kept_dims": selection.k,
        "unpruned_length": data.param_map.unpruned_length,
        # A command line exists for the weight parts and the pre-prune record, not for other importance.
        "command": cli_command(data.path, target, part, topk, threshold, mask_path, name_include, name_exclude) if label in IMPORTANCE_SOURCES else None,
    }
    if cut_quality is not None:
        provenance["cut_quality"] = dict(cut_quality)
    side = data.carried_side_files()
    side[PROVENANCE_FILE] = provenance
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
    )
    try:
        _verify(path, pruned)
    except Exception:
        shutil.rmtree(path, ignore_errors=True)
        raise
    sums = {f.name: sha256_file(f) for f in sorted(path.iterdir()) if f.is_file()}
    return ExportResult(path=path, selection=selection, report=report, provenance=provenance, file_sha256=sums)


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
        raise CheckpointError(f"verification of the export {path} failed: {'; '.join(problems)}. It was removed.")
