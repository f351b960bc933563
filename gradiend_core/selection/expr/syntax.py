"""Mask expressions: grammar, tokenizer, parser, syntax tree and canonical text.

Grammar (``~`` binds tightest, then ``&``, then ``|``; whitespace is free)::

    expr  := and ('|' and)*
    and   := unary ('&' unary)*
    unary := '~' unary | '(' expr ')' | term
    term  := top(PART, K) | above(PART, T) | name(REGEX) | file(PATH) | model(PATH, PART, K)

``PART`` is a bare word (``encoder-weight``, ``decoder-weight``, ``decoder-bias``,
``decoder-sum``, ``gradient-mean``; case-insensitive); ``K`` a count (``5000``, ``5e3``), a
fraction (``0.05``) or a percentage (``5%``), read by :func:`gradiend_core.selection.rule.parse_topk`;
``T`` a number >= 0; ``REGEX`` and ``PATH`` quoted strings (``'...'`` or ``"..."``). In a string,
``\\\\``, ``\\'`` and ``\\"`` are escapes; any other backslash is kept as written, so regular
expressions read as in Python raw strings (``name('layer\\.\\d+\\.')``).

The tokenizer and recursive-descent parser are written by hand: Python's ``ast`` would read
``decoder-weight`` as a subtraction and cannot report positions in this grammar, and a parser
library would be a dependency for some eighty lines. Every error is a :class:`MaskExprError`
that points at the offending column and says what is allowed there.

Canonical text (:func:`to_text`): single spaces around ``&`` and ``|``, ``", "`` between
arguments, no space after ``~``, parentheses only where precedence needs them, chains of one
operator flattened (``a & (b & c)`` is ``a & b & c``), ``~~x`` is ``x``, numbers and parts
normalised (``5%`` -> ``0.05``, ``5e3`` -> ``5000``, ``Decoder-Weight`` -> ``decoder-weight``).
Nodes compare equal exactly when their canonical texts are equal.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...errors import SelectionError
from ..rule import TopK, parse_topk

__all__ = [
    "EXPR_PARTS",
    "FUNCTIONS",
    "Above",
    "And",
    "File",
    "MaskExprError",
    "Model",
    "Name",
    "Node",
    "Not",
    "Or",
    "Term",
    "Top",
    "iter_terms",
    "normalise",
    "parse",
    "quote",
    "to_text",
]

#: Importance sources a term may rank by: the four weight parts and the pre-prune gradient mean.
EXPR_PARTS = ("encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum", "gradient-mean")
#: Function name -> argument kinds (``part``, ``k``, ``t``, ``str``) and their names for messages.
FUNCTIONS = {
    "top": (("part", "PART"), ("k", "K")),
    "above": (("part", "PART"), ("t", "T")),
    "name": (("str", "REGEX"),),
    "file": (("str", "PATH"),),
    "model": (("str", "PATH"), ("part", "PART"), ("k", "K")),
}
_SIGNATURES = ", ".join(f"{f}({', '.join(n for _, n in a)})" for f, a in FUNCTIONS.items())
_TERM_HINT = f"A term is one of {_SIGNATURES}; a term may follow '~' or '('."
#: Longest expression shown whole in an error message; longer ones are cut around the column.
_SHOW = 100


class MaskExprError(SelectionError):
    """A mask expression cannot be parsed or evaluated.

    The message names the problem, shows the expression with a caret under the offending column,
    and says what is allowed there.

    Attributes:
        expression: the expression text as given.
        position: 0-based character offset of the problem.
        column: ``position + 1``.
        length: characters the problem spans (at least 1).
        problem: the first line of the message, without the position.
        hint: what is allowed there.
    """

    def __init__(self, expression: str, position: int, problem: str, hint: str = "", length: int = 1):
        self.expression = expression
        self.position = max(0, min(int(position), len(expression)))
        self.column = self.position + 1
        self.length = max(1, int(length))
        self.problem = problem
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        shown = re.sub(r"[\r\n\t]", " ", self.expression)
        start = 0
        if len(shown) > _SHOW:
            start = max(0, min(self.position - _SHOW // 2, len(shown) - _SHOW))
        line = shown[start : start + _SHOW]
        prefix = "..." if start > 0 else ""
        suffix = "..." if start + _SHOW < len(shown) else ""
        offset = len(prefix) + self.position - start
        span = max(1, min(self.length, len(line) - (self.position - start)))
        caret = " " * offset + "^" + "~" * (span - 1)
        text = f"mask expression, column {self.column}: {self.problem}\n    {prefix}{line}{suffix}\n    {caret}"
        return text + (f"\n{self.hint}" if self.hint else "")


# ------------------------------------------------------------------------------------ tokens
@dataclass(frozen=True)
class _Tok:
    kind: str  # ident, string, number, (, ), ",", &, |, ~, end
    text: str  # source text
    pos: int
    value: str = ""  # decoded string value
    value_pos: tuple[int, ...] = ()  # source offset of each character of ``value``


_NUMBER = re.compile(r"[+-]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?%?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*")
_PUNCT = {"(": "(", ")": ")", ",": ",", "&": "&", "|": "|", "~": "~"}
_ALIASES = {"!": "'~' (not)", "-": "'& ~' (and not)", "^": "'&', '|' and '~'", "+": "'|' (or)"}


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
            continue
        if c in _PUNCT:
            toks.append(_Tok(_PUNCT[c], c, i))
            i += 1
            continue
        if c in "'\"":
            toks.append(_string(src, i))
            i += len(toks[-1].text)
            continue
        m = _NUMBER.match(src, i)
        if m and (c.isdigit() or c == "." or (c in "+-" and m.end() > i + 1)):
            toks.append(_Tok("number", m.group(), i))
            i = m.end()
            continue
        m = _IDENT.match(src, i)
        if m:
            toks.append(_Tok("ident", m.group(), i))
            i = m.end()
            continue
        alias = _ALIASES.get(c)
        hint = (
            f"Use {alias}."
            if alias
            else "An expression holds terms, the operators & | ~, parentheses, commas, quoted strings and numbers."
        )
        raise MaskExprError(src, i, f"unexpected character {c!r}.", hint)
    toks.append(_Tok("end", "", n))
    return toks


def _string(src: str, start: int) -> _Tok:
    quote_char = src[start]
    chars: list[str] = []
    where: list[int] = []
    i = start + 1
    while i < len(src):
        c = src[i]
        if c == "\\" and i + 1 < len(src) and src[i + 1] in "\\'\"":
            chars.append(src[i + 1])
            where.append(i)
            i += 2
            continue
        if c == quote_char:
            return _Tok("string", src[start : i + 1], start, "".join(chars), tuple(where))
        chars.append(c)
        where.append(i)
        i += 1
    raise MaskExprError(
        src,
        start,
        f"the string starting here is never closed (no matching {quote_char}).",
        f"Close it with {quote_char}; write \\{quote_char} for a {quote_char} inside it.",
    )


def quote(value: str) -> str:
    """``value`` as a quoted string of the expression language (inverse of the tokenizer).

    Double quotes unless the value holds ``"`` and no ``'`` (so that a shell command quotes the
    expression in single quotes without escapes). A backslash is written as ``\\\\`` only where it
    would otherwise start an escape (before ``\\``, a quote, or at the end), so regular
    expressions stay readable.
    """
    q = "'" if '"' in value and "'" not in value else '"'
    out = []
    for i, c in enumerate(value):
        if c == "\\":
            nxt = value[i + 1] if i + 1 < len(value) else ""
            out.append("\\\\" if nxt in ("", "\\", "'", '"') else "\\")
        elif c == q:
            out.append("\\" + c)
        else:
            out.append(c)
    return q + "".join(out) + q


# -------------------------------------------------------------------------------------- nodes
def _num(v: int | float) -> str:
    """A topk as text: an int stays a count, a float stays a fraction (``1`` and ``1.0`` differ)."""
    return str(int(v)) if isinstance(v, numbers.Integral) else repr(float(v))


@dataclass(frozen=True, eq=False)
class Node:
    """A node of a mask expression. Equal when the canonical texts are equal.

    ``pos`` is the 0-based source offset the node was parsed from (``-1`` when built in code);
    it is used for error positions only.
    """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and to_text(self) == to_text(other)

    def __hash__(self) -> int:
        return hash(to_text(self))

    def __str__(self) -> str:
        return to_text(self)


@dataclass(frozen=True, eq=False)
class Term(Node):
    """A leaf: one function call.

    ``pos``/``end`` are the source offsets of its first character and one past its ``)``, and
    ``arg_pos`` the offset of each argument (``-1``/``()`` when built in code).
    """

    pos: int = field(default=-1, kw_only=True)
    end: int = field(default=-1, kw_only=True)
    arg_pos: tuple[int, ...] = field(default=(), kw_only=True)


@dataclass(frozen=True, eq=False)
class Top(Term):
    """``top(part, topk)``: the selection rule's topk of ``part`` in the current input space."""

    part: str
    topk: TopK


@dataclass(frozen=True, eq=False)
class Above(Term):
    """``above(part, threshold)``: dims with ``importance >= threshold`` (float32 comparison)."""

    part: str
    threshold: float


@dataclass(frozen=True, eq=False)
class Name(Term):
    """``name(pattern)``: dims of parameters whose base-model name ``re.search``-matches."""

    pattern: str


@dataclass(frozen=True, eq=False)
class File(Term):
    """``file(path)``: a bool mask file over ``input_dim`` or ``unpruned_length`` entries."""

    path: str


@dataclass(frozen=True, eq=False)
class Model(Term):
    """``model(path, part, topk)``: another checkpoint's top-k, compared in base-global space."""

    path: str
    part: str
    topk: TopK


@dataclass(frozen=True, eq=False)
class Not(Node):
    operand: Node
    pos: int = field(default=-1, kw_only=True)


@dataclass(frozen=True, eq=False)
class And(Node):
    operands: tuple[Node, ...]
    pos: int = field(default=-1, kw_only=True)


@dataclass(frozen=True, eq=False)
class Or(Node):
    operands: tuple[Node, ...]
    pos: int = field(default=-1, kw_only=True)


def _flat(cls, operands: Sequence[Node], pos: int = -1) -> Node:
    """``cls(operands)`` with nested ``cls`` nodes spliced in (``&`` and ``|`` are associative)."""
    out: list[Node] = []
    for o in operands:
        out.extend(o.operands if isinstance(o, cls) else (o,))
    return out[0] if len(out) == 1 else cls(tuple(out), pos=pos)


def _negate(node: Node, pos: int = -1) -> Node:
    return node.operand if isinstance(node, Not) else Not(node, pos=pos)


_PREC = {Or: 1, And: 2, Not: 3}


def _prec(node: Node) -> int:
    return _PREC.get(type(node), 4)


def _canon(node: Node) -> Node:
    """The canonical tree: ``~~x`` -> ``x`` and same-operator chains flattened, bottom-up."""
    if isinstance(node, Not):
        return _negate(_canon(node.operand))
    if isinstance(node, (And, Or)):
        if not node.operands:
            raise TypeError(f"{type(node).__name__} needs at least one operand")
        return _flat(type(node), [_canon(o) for o in node.operands])
    return node


def to_text(node: Node) -> str:
    """Canonical text of a syntax tree (see the module docstring); ``parse(to_text(n)) == n``."""
    return _print(_canon(node))


def _print(node: Node) -> str:
    if isinstance(node, Top):
        return f"top({node.part}, {_num(node.topk)})"
    if isinstance(node, Above):
        return f"above({node.part}, {float(node.threshold)!r})"
    if isinstance(node, Name):
        return f"name({quote(node.pattern)})"
    if isinstance(node, File):
        return f"file({quote(node.path)})"
    if isinstance(node, Model):
        return f"model({quote(node.path)}, {node.part}, {_num(node.topk)})"
    if isinstance(node, Not):
        text = _print(node.operand)
        return "~" + (f"({text})" if _prec(node.operand) < _prec(node) else text)
    if isinstance(node, (And, Or)):
        op = " & " if isinstance(node, And) else " | "
        return op.join(f"({_print(o)})" if _prec(o) < _prec(node) else _print(o) for o in node.operands)
    raise TypeError(f"not a mask expression node: {node!r}")


def iter_terms(node: Node):
    """The terms (leaves) of a tree, left to right, repeats included."""
    if isinstance(node, Term):
        yield node
    elif isinstance(node, Not):
        yield from iter_terms(node.operand)
    elif isinstance(node, (And, Or)):
        for o in node.operands:
            yield from iter_terms(o)


# ------------------------------------------------------------------------------------ parser
#: Deepest nesting of '(' and '~' a mask expression may have (the parser and the evaluator
#: recurse once per level; a mask worth writing needs a handful).
MAX_DEPTH = 100


class _Parser:
    def __init__(self, src: str):
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, tok: _Tok, problem: str, hint: str = "") -> MaskExprError:
        return MaskExprError(self.src, tok.pos, problem, hint, len(tok.text))

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.fail(
                self.tok, "the expression is empty.", "Write a term such as top(decoder-weight, 5%). " + _TERM_HINT
            )
        node = self.expr()
        t = self.tok
        if t.kind == ")":
            raise self.fail(t, "')' without a matching '('.", "Remove it, or add the '(' it closes.")
        if t.kind != "end":
            hint = "After a term or ')' comes '&', '|', ')' or the end."
            if t.kind == "ident" and t.text.lower() in ("and", "or", "not"):
                hint = "Write and / or / not as & / | / ~."
            raise self.fail(t, f"expected an operator or the end, got {_describe(t)}.", hint)
        return node

    def expr(self) -> Node:
        pos = self.tok.pos
        ops = [self.conj()]
        while self.tok.kind == "|":
            self.take()
            ops.append(self.conj())
        return _flat(Or, ops, pos)

    def conj(self) -> Node:
        pos = self.tok.pos
        ops = [self.unary()]
        while self.tok.kind == "&":
            self.take()
            ops.append(self.unary())
        return _flat(And, ops, pos)

    def unary(self) -> Node:
        t = self.tok
        if t.kind in ("~", "(") and self.depth >= MAX_DEPTH:
            raise self.fail(
                t,
                f"the expression nests '(' and '~' more than {MAX_DEPTH} levels deep.",
                "Simplify it: ~~x is x, and chains of & or | need no parentheses.",
            )
        if t.kind in ("~", "("):
            self.depth += 1
            try:
                return self._nested(t)
            finally:
                self.depth -= 1
        if t.kind == "ident":
            return self.call()
        prev = self.toks[self.i - 1] if self.i else None
        after = f" after {prev.text!r}" if prev is not None else ""
        raise self.fail(t, f"expected a term{after}, got {_describe(t)}.", _TERM_HINT)

    def _nested(self, t: _Tok) -> Node:
        """``~ unary`` or ``( expr )``, ``t`` being the ``~`` or ``(``."""
        if t.kind == "~":
            self.take()
            return _negate(self.unary(), t.pos)
        self.take()
        if self.tok.kind == ")":
            raise self.fail(self.tok, "empty parentheses.", _TERM_HINT)
        node = self.expr()
        if self.tok.kind != ")":
            if self.tok.kind == "end":
                raise self.fail(t, "this '(' is never closed.", "Add the ')' that closes it.")
            raise self.fail(
                self.tok,
                f"expected ')' or an operator, got {_describe(self.tok)}.",
                f"The '(' at column {t.pos + 1} is still open; after a term comes '&', '|' or ')'.",
            )
        self.take()
        return node

    def call(self) -> Node:
        fn = self.take()
        name = fn.text
        if name not in FUNCTIONS:
            raise self._unknown_function(fn)
        spec = FUNCTIONS[name]
        signature = f"{name}({', '.join(n for _, n in spec)})"
        if self.tok.kind != "(":
            raise self.fail(self.tok, f"expected '(' after {name!r}, got {_describe(self.tok)}.", f"Write {signature}.")
        args, close_tok = self._arguments(name, signature)
        if len(args) != len(spec):
            bad = args[len(spec)] if len(args) > len(spec) else close_tok
            raise self.fail(
                bad,
                f"{name} takes {len(spec)} argument{'s' if len(spec) > 1 else ''} "
                f"({', '.join(n for _, n in spec)}), got {len(args)}.",
                f"Write {signature}.",
            )
        values = [self.arg(name, signature, kind, label, a) for (kind, label), a in zip(spec, args)]
        where = dict(pos=fn.pos, end=close_tok.pos + 1, arg_pos=tuple(a.pos for a in args))
        return _TERMS[name](*values, **where)

    def _unknown_function(self, fn: _Tok) -> MaskExprError:
        """The error for an identifier that is not a function: an operator word, a part, or a typo."""
        name, low = fn.text, fn.text.lower()
        if low in ("and", "or", "not"):
            return self.fail(fn, f"expected a term, got {name!r}.", "Write and / or / not as & / | / ~.")
        if low in EXPR_PARTS:
            return self.fail(
                fn,
                f"expected a term, got the part {name!r}.",
                f"A part goes inside a term, e.g. top({low}, 5%) or above({low}, 0.1).",
            )
        close = difflib.get_close_matches(low, list(FUNCTIONS), n=1)
        return self.fail(
            fn,
            f"unknown function {name!r}.",
            (f"Did you mean {close[0]!r}? " if close else "") + f"The functions are {_SIGNATURES}.",
        )

    def _arguments(self, name: str, signature: str) -> tuple[list[_Tok], _Tok]:
        """The argument tokens from the current ``(`` through its ``)``, and the ``)``."""
        open_tok = self.take()
        args: list[_Tok] = []
        if self.tok.kind != ")":
            while True:
                args.append(self._argument(open_tok, name, signature))
                if self.tok.kind == ",":
                    self.take()
                    continue
                if self.tok.kind == ")":
                    break
                if self.tok.kind == "end":
                    raise self.fail(open_tok, f"the '(' of {name!r} is never closed.", f"Write {signature}.")
                raise self.fail(
                    self.tok,
                    f"expected ',' or ')' in {signature}, got {_describe(self.tok)}.",
                    "Separate arguments with ','; quote regular expressions and paths.",
                )
        return args, self.take()

    def _argument(self, open_tok: _Tok, name: str, signature: str) -> _Tok:
        """One argument token: a bare word, a quoted string or a number."""
        a = self.tok
        if a.kind not in ("ident", "string", "number"):
            if a.kind == "end":
                raise self.fail(open_tok, f"the '(' of {name!r} is never closed.", f"Write {signature}.")
            raise self.fail(
                a,
                f"expected an argument of {signature}, got {_describe(a)}.",
                "Arguments are a part (bare word), a number or a quoted string.",
            )
        return self.take()

    def arg(self, fn: str, signature: str, kind: str, label: str, tok: _Tok):
        """The value of argument ``label`` of ``signature``, by its kind (a FUNCTIONS entry)."""
        handler = {"part": self._part_arg, "str": self._str_arg, "k": self._k_arg, "t": self._t_arg}[kind]
        return handler(fn, signature, label, tok)

    def _part_arg(self, fn: str, signature: str, label: str, tok: _Tok) -> str:
        if tok.kind != "ident":
            raise self.fail(
                tok,
                f"{label} of {signature} must be a bare part name, got {_describe(tok)}.",
                f"The parts are {', '.join(EXPR_PARTS)} (unquoted).",
            )
        part = tok.text.lower()
        if part not in EXPR_PARTS:
            close = difflib.get_close_matches(part, EXPR_PARTS, n=1)
            raise self.fail(
                tok,
                f"unknown part {tok.text!r}.",
                (f"Did you mean {close[0]!r}? " if close else "") + f"The parts are {', '.join(EXPR_PARTS)}.",
            )
        return part

    def _str_arg(self, fn: str, signature: str, label: str, tok: _Tok) -> str:
        if tok.kind != "string":
            raise self.fail(
                tok,
                f"{label} of {signature} must be a quoted string, got {_describe(tok)}.",
                f"Write {fn}('...') or {fn}(\"...\").",
            )
        if fn == "name":
            self._check_regex(tok)
        elif not tok.value:
            raise self.fail(
                tok, f"{label} of {signature} is empty.", "Give the path of a file or checkpoint directory."
            )
        return tok.value

    def _check_regex(self, tok: _Tok) -> None:
        """Raise with the column of the problem when the string ``tok`` is not a regular expression."""
        try:
            re.compile(tok.value)
        except re.error as e:
            at = tok.pos if e.pos is None or e.pos >= len(tok.value_pos) else tok.value_pos[e.pos]
            raise MaskExprError(
                self.src,
                at,
                f"the regular expression {tok.value!r} does not compile: {e.msg}.",
                "name() takes a Python regular expression, searched anywhere in the parameter name.",
            ) from None

    def _number(self, signature: str, label: str, tok: _Tok) -> None:
        if tok.kind != "number":
            raise self.fail(
                tok,
                f"{label} of {signature} must be a number, got {_describe(tok)}.",
                "K: a count (5000), a fraction (0.05) or a percentage (5%); T: a number >= 0.",
            )

    def _k_arg(self, fn: str, signature: str, label: str, tok: _Tok) -> TopK:
        self._number(signature, label, tok)
        try:
            return parse_topk(tok.text)
        except SelectionError as e:
            raise self.fail(
                tok,
                f"bad K {tok.text!r}: {e}",
                "K is a count >= 1 (5000), a fraction in (0, 1] (0.05) or a percentage (5%).",
            ) from None

    def _t_arg(self, fn: str, signature: str, label: str, tok: _Tok) -> float:
        self._number(signature, label, tok)
        if tok.text.endswith("%"):
            raise self.fail(
                tok,
                f"bad T {tok.text!r}: a threshold is an importance value, not a percentage.",
                "Give T as a number >= 0 (importance >= T is kept); for a share of dims use top(PART, K).",
            )
        try:
            t = float(tok.text.replace("_", ""))
        except ValueError:
            t = math.nan
        if math.isnan(t) or t < 0:
            raise self.fail(
                tok,
                f"bad T {tok.text!r}: a threshold must be a number >= 0.",
                "Importance is an absolute value, so T >= 0.",
            )
        return t


#: The term each function of :data:`FUNCTIONS` builds, from its argument values in order.
_TERMS = {"top": Top, "above": Above, "name": Name, "file": File, "model": Model}


def _describe(t: _Tok) -> str:
    if t.kind == "end":
        return "the end of the expression"
    if t.kind == "string":
        return f"the string {t.text}"
    return repr(t.text)


def parse(expression: str | Node) -> Node:
    """Parse a mask expression into its syntax tree (a :class:`Node` is returned as is).

    Raises:
        MaskExprError: (a :class:`~gradiend_core.errors.SelectionError`) for a syntax error, an
            unknown function or part, a wrong number of arguments, a bad K or T, or a regular
            expression that does not compile; the message points at the column.
    """
    if isinstance(expression, Node):
        return expression
    if not isinstance(expression, str):
        raise SelectionError(f"a mask expression must be a string, got {type(expression).__name__}.")
    return _Parser(expression).parse()


def normalise(expression: str | Node) -> str:
    """The canonical text of an expression (parse, then :func:`to_text`).

    Raises:
        MaskExprError: as :func:`parse`.
    """
    return to_text(parse(expression))
