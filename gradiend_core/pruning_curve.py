"""A checkpoint's pruning curves: its parts' importance, its encoder and evaluation gradients together.

:func:`checkpoint_curves` is what the CLI's ``curve`` command and the dashboard's "Pruning curve"
view call; the math is in :mod:`gradiend_core.analysis.curve`, the gradients come from
:mod:`gradiend_core.eval_gradients`.

CLI::

    gradiend-core curve PATH [--part P ...] [--data FILE] [--base-model DIR] [--points N]
                             [--topk T] [--split S] [--classes A,B] [--out FILE]

prints the curves as CSV (:func:`gradiend_core.analysis.curve.curve_csv`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .analysis.curve import DEFAULT_POINTS, Curve, Encoder, curve_csv, cut_quality, pruning_curves
from .checkpoint import CheckpointData, read_checkpoint
from .errors import CheckpointError, SelectionError
from .eval_gradients import EvalGradients, eval_gradients
from .importance import GRADIENT_MEAN, PARTS, source_importance

__all__ = ["add_curve_parser", "available_parts", "checkpoint_curves", "importance_of", "selection_quality"]


def available_parts(data: CheckpointData) -> tuple:
    """The importance sources a curve can rank by: the four parts, and ``gradient-mean`` when the
    checkpoint has a pre-prune record."""
    from .records import PRE_PRUNE_FILE

    return PARTS + ((GRADIENT_MEAN,) if (data.path / PRE_PRUNE_FILE).is_file() else ())


def importance_of(data: CheckpointData, part: str) -> np.ndarray:
    """float32 ``(input_dim,)`` importance of ``part`` (a weight part or ``gradient-mean``).

    Raises:
        CheckpointError: for ``gradient-mean`` without a pre-prune record.
        SelectionError: for an unknown part.
    """
    if part not in PARTS + (GRADIENT_MEAN,):
        raise SelectionError(f"part must be one of {', '.join(PARTS + (GRADIENT_MEAN,))}; got {part!r}.")
    return source_importance(data, part)


def checkpoint_curves(
    data: CheckpointData,
    gradients: EvalGradients,
    parts: Optional[Sequence[str]] = None,
    *,
    points: int = DEFAULT_POINTS,
    selection_k: Optional[int] = None,
    importances: Optional[Dict[str, np.ndarray]] = None,
) -> List[Curve]:
    """The pruning curve of each part of a checkpoint on the given gradients.

    Args:
        data: the checkpoint.
        gradients: from :func:`gradiend_core.eval_gradients.eval_gradients`.
        parts: importance sources (default: :func:`available_parts`).
        points: log-grid size.
        selection_k: a ``k`` computed exactly on every curve (the current selection).
        importances: precomputed importance by part (e.g. a dashboard's cached ones).

    Raises:
        SelectionError, CheckpointError: for unknown parts, shapes or k out of range.
    """
    parts = list(parts or available_parts(data))
    imps = {p: (importances or {}).get(p) for p in parts}
    imps = {p: v if v is not None else importance_of(data, p) for p, v in imps.items()}
    curves = pruning_curves(
        Encoder.of(data), gradients.gradients, gradients.labels, imps, points=points, selection_k=selection_k
    )
    return [curves[p] for p in parts]


def selection_quality(data: CheckpointData, keep: np.ndarray, gradients: EvalGradients) -> Dict[str, object]:
    """What a cut keeps of the encoder's quality, ready for ``pruning.json`` (``cut_quality``).

    Pass it to :func:`gradiend_core.export.export_pruned` as ``cut_quality=``. Adds where the
    gradients came from (``gradients``, ``source``, ``split``, ``classes``) to the measures of
    :func:`gradiend_core.analysis.curve.cut_quality`.
    """
    out = cut_quality(Encoder.of(data), gradients.gradients, gradients.labels, keep)
    out.update(
        {
            "gradients": gradients.origin,
            "source": gradients.source,
            "split": gradients.split,
            "classes": list(gradients.classes),
        }
    )
    return out


# ------------------------------------------------------------------------------------- CLI
def _classes(text: str):
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise argparse.ArgumentTypeError(
            f"--classes takes two different class names, first class first: A,B (got {text!r})."
        )
    return tuple(parts)


def _write_atomic(path: Path, text: str) -> None:
    path = path.expanduser()
    if path.is_dir():
        raise CheckpointError(f"--out {path} is a directory; give a file name such as curve.csv.")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise CheckpointError(f"--out {path}: directory {parent} does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_curve(args: argparse.Namespace) -> int:
    from .selection import parse_topk, resolve_k

    data = read_checkpoint(args.path)
    parts = args.part or list(available_parts(data))
    for p in parts:
        if p not in PARTS + (GRADIENT_MEAN,):
            raise SelectionError(
                f"--part {p!r} is not an importance source; use one of {', '.join(PARTS + (GRADIENT_MEAN,))}."
            )
    if args.points < 2:
        raise SelectionError(f"--points must be >= 2 (1 dim and all dims); got {args.points}.")
    if args.data is None and (args.base_model or args.split or args.classes):
        raise SelectionError(
            "--base-model, --split and --classes apply to gradients computed from --data FILE; give it."
        )
    k = resolve_k(parse_topk(args.topk), data.architecture.input_dim) if args.topk else None
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if done / total >= state["next"] or done == total:
            print(f"... gradients {done:,} of {total:,} examples", file=sys.stderr, flush=True)
            state["next"] = done / total + 0.1

    split = [x.strip() for x in args.split.split(",")] if args.split and "," in args.split else args.split
    grads = (
        eval_gradients(
            data,
            data_file=args.data,
            base_model=args.base_model,
            split=split,
            classes=args.classes,
            progress=progress,
            use_cache=not args.no_cache,
        )
        if args.data
        else eval_gradients(data)
    )
    print(
        f"... {grads.n_samples} {grads.source} gradients from {grads.origin} (split {grads.split}, classes "
        f"{' / '.join(grads.classes)})",
        file=sys.stderr,
        flush=True,
    )
    curves = checkpoint_curves(data, grads, parts, points=args.points, selection_k=k)
    text = curve_csv(curves)
    if args.out:
        _write_atomic(Path(args.out), text)
        print(f"wrote {args.out} ({sum(c.ks.size for c in curves)} points of {len(curves)} part(s))", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_curve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gradiend-core curve`` on the CLI's sub-command parser."""
    cu = sub.add_parser(
        "curve",
        help="print the pruning curve (encoder quality vs kept dims) as CSV",
        description="The encoder's quality (the reference's label correlation, class separation, agreement with the "
        "unpruned encoder) against the number of kept dims, from 1 to all on a log grid, for each part.",
    )
    cu.add_argument("path", help="checkpoint directory (or experiment directory with model/)")
    cu.add_argument(
        "--part",
        action="append",
        metavar="P",
        help=f"importance to rank by, repeatable ({', '.join(PARTS + (GRADIENT_MEAN,))}; default: all available)",
    )
    cu.add_argument(
        "--data",
        metavar="FILE",
        help="labelled .csv/.parquet in the reference's text layout (masked, label, label_class, split) to compute "
        "gradients from the base model; default: the checkpoint's saved validation gradients",
    )
    cu.add_argument("--base-model", metavar="DIR", help="base model directory (default: metadata.base_model)")
    cu.add_argument(
        "--split", help="data split(s) to use, comma-separated, or 'all' (default: validation, else test, else all)"
    )
    cu.add_argument(
        "--classes",
        type=_classes,
        metavar="A,B",
        help="the trained pair, first class first (default: from gradiend_context.json)",
    )
    cu.add_argument("--points", type=int, default=DEFAULT_POINTS, help="points of the log grid (default: %(default)s)")
    cu.add_argument(
        "--topk", help="also compute this selection exactly (a count, fraction or percentage); marked in 'selection'"
    )
    cu.add_argument("--no-cache", action="store_true", help="neither read nor write the gradient cache")
    cu.add_argument("--out", metavar="FILE", help="write the CSV here (default: stdout)")
    cu.set_defaults(func=_cmd_curve)
    return cu
