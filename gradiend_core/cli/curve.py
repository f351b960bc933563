"""``gradiend-core curve``: a checkpoint's pruning curves as CSV.

::

    gradiend-core curve PATH [--part P ...] [--data FILE] [--base-model DIR] [--points N]
                             [--topk T] [--split S] [--classes A,B] [--out FILE]

prints the curves of :func:`gradiend_core.curve.checkpoint_curves.checkpoint_curves` as CSV
(:func:`gradiend_core.curve.measures.curve_csv`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..curve.checkpoint_curves import available_parts, checkpoint_curves
from ..curve.measures import curve_csv
from ..curve.sums import DEFAULT_POINTS
from ..errors import CheckpointError, SelectionError
from ..gradients.eval_gradients import eval_gradients
from ..ranking.importance import GRADIENT_MEAN, PARTS
from ..selection.rule import parse_topk, resolve_k

__all__ = ["add_parser", "run"]


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


def run(args: argparse.Namespace) -> int:
    """Run ``gradiend-core curve``; returns the exit status."""
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


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    cu.set_defaults(func=run)
    return cu
