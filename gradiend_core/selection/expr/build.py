"""Building mask expressions by pointing: term constructors and combination with minimal parentheses.

Every function returns canonical expression text (:func:`~gradiend_core.selection.expr.syntax.normalise`),
the form a UI keeps in its session and its URL, and validates what it builds by parsing it.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Sequence

from ...errors import SelectionError
from ...space.layers import parse_param_name
from ...space.param_map import ParamMap
from ..rule import validate_topk
from .syntax import And, Node, Or, _flat, _negate, _num, normalise, parse, quote, to_text

__all__ = [
    "OPS",
    "above_term",
    "cell_term",
    "combine",
    "file_term",
    "model_term",
    "name_term",
    "params_term",
    "top_term",
    "upset_term",
]

#: Pointing operations: ``include`` (|), ``exclude`` (& ~), ``intersect`` (&), ``invert`` (~).
OPS = ("include", "exclude", "intersect", "invert")

Expr = str | Node | None


def _tree(expr: Expr) -> Node | None:
    if expr is None or (isinstance(expr, str) and not expr.strip()):
        return None
    return parse(expr)


def combine(expr: Expr, term: Expr, op: str) -> str:
    """Combine the current expression with a term, as a UI's buttons do.

    Args:
        expr: the current expression (text or tree); ``None`` or ``""`` for none yet.
        term: the term (or any expression) to combine with; ignored for ``invert``.
        op: ``include`` -> ``expr | term``; ``exclude`` -> ``expr & ~term``; ``intersect`` ->
            ``expr & term``; ``invert`` -> ``~expr``. Without a current expression, ``include``
            and ``intersect`` give ``term`` and ``exclude`` gives ``~term`` (everything except it).

    Returns:
        Canonical text: parentheses only where precedence needs them, chains flattened,
        double negation removed (inverting twice gives the expression back).

    Raises:
        SelectionError: for an unknown ``op``, a missing term, or nothing to invert;
            :class:`~gradiend_core.selection.expr.syntax.MaskExprError` for an unparsable input.
    """
    if op not in OPS:
        raise SelectionError(f"op must be one of {', '.join(OPS)}; got {op!r}.")
    a = _tree(expr)
    if op == "invert":
        if a is None:
            raise SelectionError("there is no expression to invert yet; add a term first.")
        return to_text(_negate(a))
    b = _tree(term)
    if b is None:
        raise SelectionError(f"{op} needs a term to combine with.")
    if a is None:
        return to_text(_negate(b) if op == "exclude" else b)
    if op == "include":
        return to_text(_flat(Or, [a, b]))
    return to_text(_flat(And, [a, _negate(b) if op == "exclude" else b]))


def _topk_text(topk: object) -> str:
    t = validate_topk(topk)
    if t is None:
        raise SelectionError("topk is required: a count (int >= 1) or a fraction (float in (0, 1]).")
    return _num(t)


def top_term(part: str, topk: object) -> str:
    """``top(part, topk)``; ``topk`` an int count or a float fraction in (0, 1].

    Raises:
        SelectionError: for an unknown part or an invalid topk.
    """
    return normalise(f"top({part}, {_topk_text(topk)})")


def above_term(part: str, threshold: float) -> str:
    """``above(part, threshold)``, ``threshold`` a finite number >= 0.

    Raises:
        SelectionError: for an unknown part or a negative, NaN or infinite threshold.
    """
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not (0 <= float(threshold) < float("inf"))
    ):
        raise SelectionError(f"threshold must be a finite number >= 0, got {threshold!r}.")
    return normalise(f"above({part}, {float(threshold)!r})")


def name_term(pattern: str) -> str:
    """``name(pattern)`` for a Python regular expression.

    Raises:
        SelectionError: for a pattern that does not compile.
    """
    return normalise(f"name({quote(pattern)})")


def file_term(path: str) -> str:
    """``file(path)``."""
    return normalise(f"file({quote(str(path))})")


def model_term(path: str, part: str, topk: object) -> str:
    """``model(path, part, topk)``: another checkpoint's top-k.

    Raises:
        SelectionError: for an unknown part or an invalid topk.
    """
    return normalise(f"model({quote(str(path))}, {part}, {_topk_text(topk)})")


def _exact_regex(names: Sequence[str]) -> str:
    """A regular expression that ``re.search``-matches exactly the given strings.

    Anchored (``^...$``); the longest common prefix up to a ``.`` and the longest common suffix
    from a ``.`` are factored out of the alternation, so a cell reads like
    ``^bert\\.encoder\\.layer\\.0\\.attention\\.self\\.query\\.(?:weight|bias)$``.
    """
    if len(names) == 1:
        return "^" + re.escape(names[0]) + "$"
    first, shortest = names[0], min(len(n) for n in names)
    common = 0
    while common < shortest and len({n[common] for n in names}) == 1:
        common += 1
    pre = first.rfind(".", 0, common) + 1  # the shared prefix, cut after its last dot (0: none)
    common = 0
    while common < shortest - pre and len({n[-1 - common] for n in names}) == 1:
        common += 1
    tail = first[len(first) - common :]
    suf = len(tail) - tail.find(".") if "." in tail else 0  # the shared suffix, from its first dot
    mids = "|".join(re.escape(n[pre : len(n) - suf]) for n in names)
    return "^" + re.escape(first[:pre]) + "(?:" + mids + ")" + re.escape(first[len(first) - suf :]) + "$"


def params_term(names: Iterable[str], param_map: ParamMap | None = None) -> str:
    """``name(...)`` selecting exactly these parameters (e.g. selected table rows or heatmap cells).

    Args:
        names: base-model parameter names (repeats ignored).
        param_map: when given, every name must be mapped by it, and the names are listed in map
            order (so one set of parameters always gives one text).

    Raises:
        SelectionError: for no names, or (with ``param_map``) a name the model does not map.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        raise SelectionError("select at least one parameter.")
    if param_map is not None:
        known = param_map.names
        missing = [n for n in wanted if n not in set(known)]
        if missing:
            raise SelectionError(
                f"parameter {missing[0]!r} is not mapped by this model ({len(missing)} unknown name(s))."
            )
        chosen = set(wanted)
        wanted = [n for n in known if n in chosen]
    return name_term(_exact_regex(wanted))


def _as_set(v: str | Iterable[str] | None) -> set | None:
    if v is None:
        return None
    return {v} if isinstance(v, str) else {str(x) for x in v}


def cell_term(
    param_map: ParamMap,
    layers: str | Iterable[str] | None = None,
    components: str | Iterable[str] | None = None,
) -> str:
    """``name(...)`` selecting exactly the parameters of layer x component cells.

    Layers and components are those of :func:`gradiend_core.space.layers.parse_param_name`
    (layers ``"0"``, ``"1"``, ... and ``"-"`` outside the blocks). ``None`` means every layer
    (a heatmap column) or every component (a heatmap row); ``layers=[str(i) for i in
    range(6, 12)]`` is "layers 6-11".

    Raises:
        SelectionError: when no mapped parameter lies in the cells.
    """
    ls, cs = _as_set(layers), _as_set(components)
    names = []
    for e in param_map:
        layer, comp = parse_param_name(e.name)
        if (ls is None or layer in ls) and (cs is None or comp in cs):
            names.append(e.name)
    if not names:
        raise SelectionError(
            f"no mapped parameter lies in layer(s) {sorted(ls) if ls else 'any'} "
            f"x component(s) {sorted(cs) if cs else 'any'}."
        )
    return params_term(names)


def upset_term(terms: Sequence[Expr], membership: Sequence[bool]) -> str:
    """The dims of one UpSet intersection pattern: in every set marked True and in no other.

    Args:
        terms: one expression per set, e.g. ``[top_term(p, 0.05) for p in patterns.names]``.
        membership: one bool per set, e.g. a row of
            :attr:`gradiend_core.analysis.overlap.IntersectionPatterns.membership`.

    Returns:
        e.g. ``top(encoder-weight, 0.05) & top(decoder-weight, 0.05) & ~top(decoder-sum, 0.05)``.

    Raises:
        SelectionError: for lengths that differ, no sets, or a pattern in no set.
    """
    if len(terms) != len(membership) or not terms:
        raise SelectionError(f"give one membership flag per set: {len(terms)} set(s), {len(membership)} flag(s).")
    if not any(bool(m) for m in membership):
        raise SelectionError("an intersection pattern lies in at least one set.")
    trees = [parse(t) for t in terms]
    ins = [t for t, m in zip(trees, membership) if m]
    outs = [_negate(t) for t, m in zip(trees, membership) if not m]
    return to_text(_flat(And, ins + outs))
