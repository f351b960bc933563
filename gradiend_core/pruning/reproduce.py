"""How to make an export again: the ``gradiend-core prune`` command line, the Python API calls and
the export folder name, all derived from a :class:`~gradiend_core.pruning.plan.PruningPlan`."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SelectionError
from ..ranking.importance import GRADIENT_MEAN, SOURCES
from .plan import PruningPlan

__all__ = [
    "cli_command",
    "export_folder_name",
    "expression_reads_under",
    "mask_inputs",
    "python_snippet",
    "reproduce_command",
]


def cli_command(
    source: str | os.PathLike,
    out: str | os.PathLike,
    importance: str,
    topk: Any,
    threshold: Any,
    mask_path: str | None,
    name_include: str | None = None,
    name_exclude: str | None = None,
    mask_expr: str | None = None,
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


def expression_reads_under(expression: str | None, roots: Sequence[str | os.PathLike]) -> bool:
    """Whether a mask expression reads a file (``file()``, ``model()``) at or below one of ``roots``."""
    if not expression or not roots:
        return False
    from ..selection.expr.syntax import File, Model, iter_terms, parse

    try:
        terms = [t for t in iter_terms(parse(expression)) if isinstance(t, (File, Model))]
    except SelectionError:
        return False
    resolved = [Path(r).expanduser().resolve() for r in roots]
    paths = [Path(t.path).expanduser().resolve() for t in terms]
    return any(p == r or r in p.parents for p in paths for r in resolved)


def _under(path: str | None, roots: Sequence[str | os.PathLike]) -> bool:
    if not path or not roots:
        return False
    p = Path(path).expanduser().resolve()
    return any(p == r or r in p.parents for r in (Path(x).expanduser().resolve() for x in roots))


def mask_inputs(
    plan: PruningPlan, mask_path: str | None = None, transient: Sequence[str | os.PathLike] = ()
) -> tuple[str | None, str | None, str | None, str | None]:
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
    out: str | os.PathLike,
    mask_path: str | None = None,
    transient: Sequence[str | os.PathLike] = (),
) -> str | None:
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


def python_snippet(
    plan: PruningPlan,
    out: str | os.PathLike,
    mask_path: str | None = None,
    transient: Sequence[str | os.PathLike] = (),
) -> str:
    """The Python API calls that produce the same export (``mask_path``, ``transient``: as for
    :func:`reproduce_command`)."""
    source = str(plan.checkpoint.path)
    mask_path, include, exclude, expression = mask_inputs(plan, mask_path, transient)
    gradient_mean = plan.source == GRADIENT_MEAN
    args = ["importance=importance"] if gradient_mean else [f"part={plan.source!r}"]
    if plan.topk is not None:
        args.append(f"topk={plan.topk!r}")
    if plan.threshold is not None:
        args.append(f"threshold={float(plan.threshold)!r}")
    lines = ["from gradiend_core import ParamMappedGradiendModel"]
    if gradient_mean:
        lines.append("from gradiend_core.checkpoint.records import load_pre_prune_record")
    if mask_path:
        lines.append("from gradiend_core.selection.masks import load_mask")
    if include or exclude:
        lines.append("from gradiend_core.selection.masks import name_mask")
    lines.append(f"model = ParamMappedGradiendModel.from_pretrained({source!r})")
    if gradient_mean:
        lines.append("# gradient-mean: the pre-prune |mean source gradient| of each of the model's dims")
        lines.append(
            f"importance = load_pre_prune_record({source!r}).importance_for(model.base_global_index().numpy())"
        )
    masks = []
    if mask_path:
        lines.append(f"mask = load_mask({mask_path!r}, model.mapping)")
        masks.append("mask")
    if include or exclude:
        lines.append(f"names = name_mask(model.mapping, {include!r}, {exclude!r})")
        masks.append("names")
    if masks:
        args.append(f"mask={' & '.join(masks)}")
    if expression:
        args.append(f"mask_expr={expression!r}")
    lines.append(f"pruned = model.prune({', '.join(args)})")
    lines.append(f"pruned.save_pretrained({out!r})")
    return "\n".join(lines)


def export_folder_name(plan: PruningPlan, topk_text: str | None = None) -> str:
    """``<model>-<source>-top<topk>[-thr<threshold>][-mask][-names][-expr]``: a folder name that says
    what the export keeps (``topk_text``: the topk as the user wrote it; default: ``plan.topk``)."""
    path = plan.checkpoint.path
    name = path.parent.name if path.name == "model" else path.name
    bits = [name, plan.source]
    if plan.topk is not None:
        topk = str(plan.topk) if topk_text is None else topk_text
        bits.append(f"top{topk.strip().replace('%', 'pct').replace(' ', '')}")
    if plan.threshold is not None:
        bits.append(f"thr{plan.threshold:g}")
    if plan.mask_spec.file:
        bits.append("mask")
    if plan.mask_spec.name_include or plan.mask_spec.name_exclude:
        bits.append("names")
    if plan.mask_spec.expression:
        bits.append("expr")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(bits))
