"""Evaluate a mask expression against a checkpoint: the keep-mask, per-term counts, digest.

Semantics. An expression denotes a set of base-global indices (entries of the mapped base-model
parameters, ``0 <= g < unpruned_length``); the mask handed to
:func:`gradiend_core.selection.rule.select` is that set restricted to the model's current input
dims. Restricting to the current dims commutes with ``&``, ``|`` and ``~``
(``R(a & b) = R(a) & R(b)``, ``R(~a) = ~R(a)`` for ``R(x) = x[base_global_index]``), so the
expression is evaluated directly in the local input space after each term has been restricted:

* ``top(PART, K)`` - ``select(importance of PART, topk=K)``: the model's own top-k, taken over its
  input_dim dims (a fraction is a fraction of input_dim), ties by lower index, NaN last;
* ``above(PART, T)`` - ``select(importance of PART, threshold=T)``: ``importance >= T`` compared
  in float32, NaN never passes (an empty set is allowed inside an expression);
* ``name(REGEX)`` - dims of parameters whose base-model name ``re.search``-matches;
* ``file(PATH)`` - a mask file (:func:`gradiend_core.selection.masks.read_mask_file`) of length input_dim
  (local) or unpruned_length (base-global, restricted to the model's dims);
* ``model(PATH, PART, K)`` - another checkpoint of the same base model: its own top-k, mapped to
  base-global indices and restricted to this model's dims.

Memory: one bool per input dim for each pending operand (at most the depth of the tree), plus
one :class:`~gradiend_core.ranking.ranking.Ranking` (6 bytes per input dim) per part the expression
ranks by, kept for the evaluation (pass ``importance=`` to reuse rankings a caller already holds);
a ``model()`` term holds the other checkpoint while it is evaluated. No ``unpruned_length``-sized
array is built unless a ``file()`` holds one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import CheckpointData, read_checkpoint
from ...errors import CheckpointError, SelectionError
from ...ranking.importance import GRADIENT_MEAN, source_importance
from ...ranking.ranking import Ranking
from ...space.coords import base_global_of, global_indices_to_local, global_mask_to_local, local_mask_to_global
from ...space.param_map import ParamMap
from ...space.signature import base_signature, compatibility_problems
from ..masks import read_mask_file, search_names, sha256_mask
from ..rule import select
from .syntax import Above, And, File, MaskExprError, Model, Name, Node, Not, Or, Term, Top, parse, to_text

__all__ = ["MaskResult", "apply_mask_expr", "evaluate_mask_expr"]

ImportanceLike = Ranking | np.ndarray | torch.Tensor
#: ``ranking_for(checkpoint, part) -> Ranking`` (see :data:`gradiend_core.pruning.plan.RankingFor`).
RankingFor = Callable[[CheckpointData, str], Ranking]


@dataclass(frozen=True)
class MaskResult:
    """An evaluated mask expression.

    Attributes:
        mask: bool ``(input_dim,)``, the keep-mask in the model's current input space.
        expression: canonical text (:func:`~gradiend_core.selection.expr.syntax.normalise`); equal
            expressions have equal text.
        term_counts: canonical text of each distinct term -> input dims it keeps on its own, in
            order of first appearance.
        sha256: hex sha256 of ``mask``'s packed bits (:func:`gradiend_core.selection.masks.sha256_mask`).
        param_map: the map of the model it was evaluated on (defines both index spaces).
    """

    mask: np.ndarray
    expression: str
    term_counts: dict[str, int]
    sha256: str
    param_map: ParamMap = field(repr=False, compare=False)

    @property
    def kept(self) -> int:
        """Input dims the mask keeps."""
        return int(np.count_nonzero(self.mask))

    @property
    def input_dim(self) -> int:
        return int(self.mask.size)

    def global_mask(self) -> np.ndarray:
        """The mask over base-global indices, bool ``(unpruned_length,)`` (False where the model
        maps no input dim)."""
        return local_mask_to_global(self.param_map, self.mask)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary: expression, kept, input_dim, unpruned_length, term_counts, sha256."""
        return {
            "expression": self.expression,
            "kept": self.kept,
            "input_dim": self.input_dim,
            "unpruned_length": self.param_map.unpruned_length,
            "term_counts": dict(self.term_counts),
            "sha256": self.sha256,
        }


def evaluate_mask_expr(
    expression: str | Node,
    data: CheckpointData,
    *,
    importance: Mapping[str, ImportanceLike] | None = None,
    load_checkpoint: Callable[[str], CheckpointData] | None = None,
    resolve_path: Callable[[str], Path] | None = None,
    allow_empty: bool = False,
    ranking_for: RankingFor | None = None,
) -> MaskResult:
    """Evaluate a mask expression on a checkpoint (see the module docstring for the terms).

    Args:
        expression: expression text, or a syntax tree (then evaluated from its canonical text,
            so error columns refer to that text).
        data: the checkpoint the mask is for.
        importance: optional precomputed importance per part (``{part: Ranking or float32
            (input_dim,)}``), e.g. a UI's cached rankings; other parts are computed from ``data``
            (``gradient-mean`` from its ``pre_prune.safetensors``).
        load_checkpoint: reads a ``model()`` checkpoint from its resolved path (as ``str``;
            default :func:`gradiend_core.checkpoint.read_checkpoint`); a UI passes its cached loader.
        resolve_path: turns a ``file()``/``model()`` path into a :class:`~pathlib.Path` (default:
            ``Path(path).expanduser()``, relative to the working directory); a UI that serves a
            network passes one that refuses paths outside its allowed directories (any exception
            it raises is reported at the path's column).
        allow_empty: return a mask that keeps nothing instead of raising.
        ranking_for: ``ranking_for(checkpoint, part) -> Ranking`` for parts not in ``importance``,
            for this model and for ``model()`` checkpoints (e.g. a shared cache or the rank store;
            default: rank the importance in memory).

    Returns:
        A :class:`MaskResult`.

    Raises:
        MaskExprError: (a :class:`~gradiend_core.errors.SelectionError`) for a syntax error, a
            term that cannot be evaluated (no pre-prune record for ``gradient-mean``, an
            unreadable file, a mask of the wrong length, another model of a different base), or
            an expression that keeps nothing; the message points at the column.
    """
    if isinstance(expression, Node):
        expression = to_text(expression)
    tree = parse(expression)
    ev = _Evaluator(expression, data, importance, load_checkpoint or read_checkpoint, resolve_path, ranking_for)
    mask = ev.eval(tree)
    if not allow_empty and not mask.any():
        counts = ", ".join(f"{t} keeps {c:,}" for t, c in list(ev.counts.items())[:12])
        raise MaskExprError(
            expression,
            0,
            f"the expression keeps none of this model's {mask.size:,} input dims.",
            f"Per term: {counts}. Loosen a term, or join terms with | instead of &.",
            len(expression),
        )
    return MaskResult(mask, to_text(tree), dict(ev.counts), sha256_mask(mask), data.param_map)


def apply_mask_expr(
    mask_expr: str | Node | MaskResult | None,
    data: CheckpointData,
    mask: np.ndarray | None = None,
    importance: Mapping[str, ImportanceLike] | None = None,
    **evaluate_kwargs,
) -> tuple[np.ndarray | None, MaskResult | None]:
    """AND a mask expression into an optional mask: the mask step of mask -> threshold -> topk.

    Args:
        mask_expr: expression text or tree (evaluated on ``data``), a :class:`MaskResult`
            already evaluated on ``data``'s input space, or ``None``.
        data: the checkpoint.
        mask: optional bool ``(input_dim,)`` mask, numpy or torch (e.g. from ``--mask``/``--include``).
        importance, evaluate_kwargs: as for :func:`evaluate_mask_expr`.

    Returns:
        ``(combined mask or None, the MaskResult or None)``.

    Raises:
        MaskExprError: as :func:`evaluate_mask_expr`.
        SelectionError: for a :class:`MaskResult` of another input space, or a ``mask`` of the
            wrong shape.
    """
    if mask_expr is None:
        return mask, None
    if isinstance(mask_expr, MaskResult):
        result = mask_expr
        if not result.param_map.same_selection(data.param_map):
            raise SelectionError(
                f"the mask expression {result.expression!r} was evaluated on a model with input_dim "
                f"{result.input_dim:,}, not on this one (input_dim {data.param_map.input_dim:,}); evaluate it again."
            )
    else:
        result = evaluate_mask_expr(mask_expr, data, importance=importance, **evaluate_kwargs)
    if mask is None:
        return result.mask, result
    m = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != result.mask.shape:
        raise SelectionError(
            f"mask must be bool of shape {result.mask.shape} to combine with the expression, got {m.dtype} {m.shape}."
        )
    return m & result.mask, result


class _Evaluator:
    def __init__(self, src, data, importance, load_checkpoint, resolve_path, ranking_for=None):
        self.src = src
        self.data = data
        self.pmap: ParamMap = data.param_map
        self.given = dict(importance or {})
        self.load = load_checkpoint
        self.resolve = resolve_path or (lambda p: Path(p).expanduser())
        self.ranking_for = ranking_for
        self.rankings: dict[str, Ranking] = {}
        self.others: dict[str, CheckpointData] = {}
        self.counts: dict[str, int] = {}

    # -------------------------------------------------------------------- errors
    def fail(self, term: Term, problem: str, hint: str = "", arg: int | None = None) -> MaskExprError:
        if arg is not None and arg < len(term.arg_pos):
            return MaskExprError(self.src, term.arg_pos[arg], problem, hint)
        return MaskExprError(self.src, term.pos, problem, hint, term.end - term.pos)

    # -------------------------------------------------------------------- tree
    def eval(self, node: Node) -> np.ndarray:
        """A fresh bool ``(input_dim,)`` array the caller may modify in place."""
        if isinstance(node, Term):
            m = self.term(node)
            self.counts.setdefault(to_text(node), int(np.count_nonzero(m)))
            return m
        if isinstance(node, Not):
            m = self.eval(node.operand)
            return np.logical_not(m, out=m)
        if isinstance(node, (And, Or)):
            acc = self.eval(node.operands[0])
            op = np.logical_and if isinstance(node, And) else np.logical_or
            for o in node.operands[1:]:
                op(acc, self.eval(o), out=acc)
            return acc
        raise TypeError(f"not a mask expression node: {node!r}")

    def term(self, t: Term) -> np.ndarray:
        n = self.pmap.input_dim
        if isinstance(t, Top):
            return select(self.ranking(t, 0), topk=t.topk).mask()
        if isinstance(t, Above):
            ranking = self.ranking(t, 0)
            try:
                return select(ranking, threshold=t.threshold).mask()
            except SelectionError:
                return np.zeros(n, dtype=bool)  # nothing passes: an empty term, legal inside an expression
        if isinstance(t, Name):
            hit = search_names(t.pattern, [e.name for e in self.pmap])
            return np.repeat(hit, self.pmap.per_param_counts())
        if isinstance(t, File):
            return self.file(t)
        if isinstance(t, Model):
            return self.model(t)
        raise TypeError(f"unknown term {t!r}")

    # -------------------------------------------------------------------- terms
    def ranking(self, t: Term, arg: int) -> Ranking:
        part = t.part
        if part not in self.rankings:
            given = self.given.get(part)
            if given is not None:
                r = given if isinstance(given, Ranking) else Ranking(given)
                if r.size != self.pmap.input_dim:
                    raise SelectionError(
                        f"the {part} importance given has length {r.size}, but input_dim is {self.pmap.input_dim}."
                    )
            else:
                r = self.ranking_of(self.data, t, arg)
            self.rankings[part] = r
        return self.rankings[part]

    def ranking_of(self, data: CheckpointData, t: Term, arg: int) -> Ranking:
        try:
            if self.ranking_for is not None:
                return self.ranking_for(data, t.part)
            return Ranking(source_importance(data, t.part))
        except CheckpointError as e:
            if t.part != GRADIENT_MEAN:
                raise
            raise self.fail(
                t,
                f"no {GRADIENT_MEAN} importance: {e}",
                "In an expression, rank by encoder-weight, decoder-weight, decoder-bias or decoder-sum instead.",
                arg,
            ) from None

    def path(self, t: Term, what: str) -> Path:
        try:
            return Path(self.resolve(t.path))
        except Exception as e:  # the caller's policy (e.g. a permission check) speaks for itself
            raise self.fail(t, f"{what} {t.path!r} cannot be used: {e}", "", 0) from None

    def file(self, t: File) -> np.ndarray:
        from .bundle import bundle_problem

        p = self.path(t, "mask file")
        try:
            arr = read_mask_file(p)
        except SelectionError as e:
            raise self.fail(
                t, f"cannot read the mask file: {e}", "file() takes a bool mask (.pt, .pth, .safetensors, .npy).", 0
            ) from None
        problem = bundle_problem(p, self.pmap, self.data.metadata)
        if problem:
            raise self.fail(
                t,
                f"{p} is a saved mask of another base model: {problem}",
                "Use a mask saved from a model of this base model.",
                0,
            )
        n, full = self.pmap.input_dim, self.pmap.unpruned_length
        if arr.shape == (n,):
            return arr.copy()
        if arr.shape == (full,):
            return global_mask_to_local(self.pmap, arr)
        raise self.fail(
            t,
            f"{p} holds a mask of length {arr.size:,}, "
            f"but this model has input_dim {n:,} and unpruned length {full:,}.",
            "A mask file has one entry per input dim (current input space) "
            "or per base-model entry (base-global space).",
            0,
        )

    def model(self, t: Model) -> np.ndarray:
        p = self.path(t, "checkpoint")
        key = str(p)
        if key not in self.others:
            try:
                self.others[key] = self.load(key)
            except (CheckpointError, OSError, ValueError) as e:
                raise self.fail(
                    t, f"cannot read the checkpoint: {e}", "model() takes a GRADIEND checkpoint directory.", 0
                ) from None
        other = self.others[key]
        sigs = {
            "this model": base_signature(self.pmap, self.data.metadata),
            t.path: base_signature(other.param_map, other.metadata),
        }
        problems = compatibility_problems(sigs)
        if problems:
            raise self.fail(
                t,
                "the other model has a different base: " + " ".join(p.message for p in problems),
                "model() compares models of one base model (same parameters, shapes and metadata.base_model).",
                0,
            )
        keep = select(self.ranking_of(other, t, 1), topk=t.topk).keep
        return global_indices_to_local(self.pmap, base_global_of(other.param_map, keep))
