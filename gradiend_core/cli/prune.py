"""``gradiend-core prune``: preview and export a pruned checkpoint (mask -> threshold -> topk)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import PROVENANCE_FILE, check_target, open_checkpoint
from ..checkpoint.sizes import DiskSize
from ..errors import SelectionError
from ..pruning.export import export_plan
from ..pruning.plan import PruningPlan, plan_pruning
from ..pruning.reduction import ReductionReport, export_disk_size, preview_disk_sizes
from ..ranking.importance import DEFAULT_PART, GRADIENT_MEAN, PARTS, SOURCES
from ..ranking.store.registry import ranking_for
from ..selection.expr.syntax import parse as parse_mask_expr
from ..selection.rule import parse_topk
from ..util.units import format_bytes, format_change, format_count, format_percent

__all__ = ["add_parser", "format_report", "run"]


def _topk_arg(text: str) -> int | float:
    try:
        return parse_topk(text)
    except SelectionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_report(report: ReductionReport, disk: tuple[DiskSize, DiskSize] | None = None) -> str:
    """The preview as an aligned text table: before, after and the signed change of each size.

    Args:
        report: the reduction report.
        disk: ``(before, after)`` from :func:`gradiend_core.pruning.reduction.preview_disk_sizes` (the source's
            files as they are on disk); without it, both sides are the planned safetensors files.
    """
    before, after = disk or (DiskSize.from_sizes(report.disk_files_before), export_disk_size(report))
    rows = [
        ("input dims", report.input_dim_before, report.input_dim_after, format_count),
        ("GRADIEND parameters", report.total_params_before, report.total_params_after, format_count),
        ("memory", report.memory_bytes_before, report.memory_bytes_after, format_bytes),
        ("size on disk (model files)", before.model_bytes, after.model_bytes, format_bytes),
    ]
    cells = [(name, fmt(b), fmt(a), format_change(a, b) or "no change") for name, b, a, fmt in rows]
    w0 = max(len(c[0]) for c in cells)
    lines = [f"{'':{w0}}  {'before':>12}  {'after':>12}  {'change':>10}"]
    lines += [f"{a:{w0}}  {b:>12}  {c:>12}  {d:>10}" for a, b, c, d in cells]
    side = sorted(set(after.side_files) | {PROVENANCE_FILE})
    lines.append(f"(model files: config, weights and mapping files; side files written apart: {', '.join(side)})")
    lines.append(f"kept {format_percent(report.kept_fraction)} of input dims")
    if report.source is not None:
        lines.append(
            f"kept {format_percent(report.importance_kept)} of the total {report.source} importance "
            "(finite values; NaN and Inf count 0)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``gradiend-core prune``; returns the exit status."""
    if (
        args.topk is None
        and args.threshold is None
        and args.mask is None
        and not (args.include or args.exclude or args.mask_expr)
    ):
        raise SelectionError("give at least one of --topk, --threshold, --mask-expr, --mask and --include/--exclude.")
    if args.mask_expr is not None:
        parse_mask_expr(args.mask_expr)  # a typo fails here, before any weight is read
    if args.out is None and not args.dry_run:
        raise SelectionError("give --out DIR for the pruned checkpoint (or --dry-run to only preview).")
    if args.importance is not None and args.part is not None and args.importance != args.part:
        raise SelectionError(f"give either --part {args.part} or --importance {args.importance}, not both.")
    data = open_checkpoint(args.path)
    if not args.dry_run:
        check_target(Path(args.out), args.overwrite, data.path, how_to_replace="pass --overwrite")
    source = args.importance or args.part or DEFAULT_PART
    _progress(args, f"ranking {source} importance over {format_count(data.architecture.input_dim)} dims")
    plan = plan_pruning(
        data,
        source=source,
        topk=args.topk,
        threshold=args.threshold,
        mask_file=args.mask,
        name_include=args.include,
        name_exclude=args.exclude,
        mask_expr=args.mask_expr,
        ranking_for=lambda d, s: ranking_for(d, s, layout="never", progress=_pass_progress(args)),
    )
    for text in plan.warnings:
        print(f"gradiend-core: warning: {text}", file=sys.stderr)
    if args.dry_run:
        _print_report(args, plan, None)
        return 0
    _progress(args, f"writing {args.out}")
    result = export_plan(plan, args.out, overwrite=args.overwrite, use_safetensors=not args.bin)
    _print_report(args, plan, result)
    return 0


def _pass_progress(args: argparse.Namespace):
    """A callback printing the progress of passes over the weights to stderr in 10 % steps."""
    if getattr(args, "json", False):
        return None
    state = {"next": 0.1, "what": None}

    def report(fraction: float, what: str) -> None:
        if what != state["what"]:
            state.update(what=what, next=0.1)
        if fraction >= state["next"] or fraction >= 1.0:
            print(f"... {what} {100 * fraction:3.0f} %", file=sys.stderr, flush=True)
            state["next"] = (int(10 * fraction) + 1) / 10

    return report


def _progress(args: argparse.Namespace, msg: str) -> None:
    if not args.json:
        print(f"... {msg}", file=sys.stderr, flush=True)


def _print_report(args: argparse.Namespace, plan: PruningPlan, result) -> None:
    report = plan.report
    if args.json:
        out = {"report": report.to_dict()}
        if plan.expression is not None:
            out["mask_expr"] = plan.expression.to_dict()
        if result is not None:
            out["path"] = str(result.path)
            out["file_sha256"] = result.file_sha256
        print(json.dumps(_json_clean(out), indent=2, default=_json_default, allow_nan=False))
        return
    expr = plan.expression
    if expr is not None:
        print(f"mask expression: {expr.expression}")
        for term, n in expr.term_counts.items():
            print(f"  {n:>12,}  {term}")
        print(f"  {expr.kept:>12,}  kept by the expression (of {expr.input_dim:,} input dims)")
    print(format_report(report, preview_disk_sizes(plan.checkpoint, report)))
    if result is not None:
        print(f"wrote {result.path} (verified: reloads with input_dim {result.selection.k})")


def _json_clean(o):
    """Strict JSON: NaN and infinities become null (json.dumps never passes floats to ``default``)."""
    if isinstance(o, dict):
        return {k: _json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gradiend-core prune`` on the CLI's sub-command parser."""
    pr = sub.add_parser("prune", help="preview and export a pruned checkpoint (mask -> threshold -> topk)")
    pr.add_argument("path", help="source checkpoint directory (never modified)")
    pr.add_argument("--part", choices=PARTS, help=f"weight importance to rank by (default: {DEFAULT_PART})")
    pr.add_argument(
        "--importance",
        choices=SOURCES,
        help=f"the importance source to rank by: a weight part (as --part) or {GRADIENT_MEAN}, the pre-prune |mean "
        "source gradient| saved by training with pre-pruning (pre_prune.safetensors next to the checkpoint)",
    )
    pr.add_argument("--topk", type=_topk_arg, help="a count (5000), a fraction (0.05) or a percentage (5%%)")
    pr.add_argument("--threshold", type=float, help="keep dims with importance >= this")
    pr.add_argument(
        "--mask-expr",
        metavar="EXPR",
        help="mask expression, the mask step before --threshold and --topk, e.g. "
        '"top(decoder-weight, 5%%) & top(encoder-weight, 5%%)". Terms: top(PART, K), above(PART, T), '
        "name('REGEX'), file('PATH'), model('PATH', PART, K); combine with & | ~ and parentheses. "
        "ANDed with --mask/--include/--exclude",
    )
    pr.add_argument(
        "--mask",
        help="bool keep-mask file (.pt, .safetensors, .npy) over input_dim or unpruned length "
        "(the same as --mask-expr \"file('FILE')\")",
    )
    pr.add_argument(
        "--include",
        help="keep only dims of parameters whose name matches this regular expression "
        "(the same as --mask-expr \"name('REGEX')\")",
    )
    pr.add_argument(
        "--exclude",
        help="drop dims of parameters whose name matches this regular expression "
        "(the same as --mask-expr \"~name('REGEX')\")",
    )
    pr.add_argument("--out", help="target directory (new or empty)")
    pr.add_argument("--overwrite", action="store_true", help="replace a non-empty target directory")
    pr.add_argument("--bin", action="store_true", help="write pytorch_model.bin/.pth instead of safetensors")
    pr.add_argument("--dry-run", action="store_true", help="only print the preview")
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.set_defaults(func=run)
    return pr
