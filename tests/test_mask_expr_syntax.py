"""The mask expression parser: precedence, quoting, canonical text, and every syntax error with
its caret position (columns counted by hand in the expressions below)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradiend_core.errors import SelectionError
from gradiend_core.selection.expr.syntax import (
    Above,
    And,
    File,
    MaskExprError,
    Model,
    Name,
    Not,
    Or,
    Top,
    normalise,
    parse,
    quote,
    to_text,
)


def shape(node):
    """The tree as nested tuples, read from the node fields only (independent of to_text)."""
    if isinstance(node, Top):
        return ("top", node.part, type(node.topk).__name__, node.topk)
    if isinstance(node, Above):
        return ("above", node.part, node.threshold)
    if isinstance(node, Name):
        return ("name", node.pattern)
    if isinstance(node, File):
        return ("file", node.path)
    if isinstance(node, Model):
        return ("model", node.path, node.part, type(node.topk).__name__, node.topk)
    if isinstance(node, Not):
        return ("not", shape(node.operand))
    return ("and" if isinstance(node, And) else "or", tuple(shape(o) for o in node.operands))


A, B, C, D = "name('a')", "name('b')", "name('c')", "name('d')"
a, b, c, d = (("name", x) for x in "abcd")


# ------------------------------------------------------------------------------ precedence
@pytest.mark.parametrize(
    "text, expected",
    [
        (f"{A} | {B} & {C}", ("or", (a, ("and", (b, c))))),
        (f"{A} & {B} | {C}", ("or", (("and", (a, b)), c))),
        (f"~{A} & {B}", ("and", (("not", a), b))),
        (f"~({A} & {B})", ("not", ("and", (a, b)))),
        (f"{A} & {B} | {C} & {D}", ("or", (("and", (a, b)), ("and", (c, d))))),
        (f"({A} | {B}) & {C}", ("and", (("or", (a, b)), c))),
        (f"{A} & ({B} & {C})", ("and", (a, b, c))),
        (f"({A} | {B}) | ({C} | {D})", ("or", (a, b, c, d))),
        (f"~~{A}", a),
        (f"~~~{A}", ("not", a)),
        (f"~{A} | ~{B} & ~{C}", ("or", (("not", a), ("and", (("not", b), ("not", c)))))),
        (f"((({A})))", a),
    ],
)
def test_precedence(text, expected):
    assert shape(parse(text)) == expected


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("top(decoder-weight,0.05)&top(encoder-weight,5%)", "top(decoder-weight, 0.05) & top(encoder-weight, 0.05)"),
        ("  top( Decoder-Weight , 5e3 )\n|\tname( 'x' ) ", 'top(decoder-weight, 5000) | name("x")'),
        ("top(decoder-sum, 5_000)", "top(decoder-sum, 5000)"),
        ("above(decoder-bias, 1)", "above(decoder-bias, 1.0)"),
        ("above(decoder-bias, 1e-3)", "above(decoder-bias, 0.001)"),
        ("(name('a') | name('b')) & ~(name('c') | name('d'))", '(name("a") | name("b")) & ~(name("c") | name("d"))'),
        ("((name('a') & name('b'))) | name('c')", 'name("a") & name("b") | name("c")'),
        ("model('runs/x', gradient-mean, 10%)", 'model("runs/x", gradient-mean, 0.1)'),
        ("~~(name('a') | name('b'))", 'name("a") | name("b")'),
        ("""name('say "hi"') | name("it's")""", """name('say "hi"') | name("it's")"""),
    ],
)
def test_canonical_text(text, canonical):
    assert normalise(text) == canonical
    assert normalise(canonical) == canonical
    assert parse(text) == parse(canonical)


def test_count_and_fraction_are_different_topk():
    """``1`` is one dim, ``1.0`` is all of them: they must not compare equal."""
    assert shape(parse("top(decoder-weight, 1)"))[2:] == ("int", 1)
    assert shape(parse("top(decoder-weight, 1.0)"))[2:] == ("float", 1.0)
    assert parse("top(decoder-weight, 1)") != parse("top(decoder-weight, 1.0)")
    assert parse("top(decoder-weight, 5%)") == parse("top(decoder-weight, 0.05)")


# ------------------------------------------------------------------------------ quoting
@pytest.mark.parametrize(
    "text, value",
    [
        (r"file('a b.npy')", "a b.npy"),
        (r"file('it\'s.npy')", "it's.npy"),
        (r'file("it' + "'" + r's.npy")', "it's.npy"),
        (r'file("say \"hi\".npy")', 'say "hi".npy'),
        (r"file('C:\\masks\\m.npy')", r"C:\masks\m.npy"),
        (r"file('C:\masks\m.npy')", r"C:\masks\m.npy"),  # an unknown escape keeps its backslash
        (r"file('end\\')", "end\\"),
        (r"name('layer\.\d+\.')", r"layer\.\d+\."),
        (r"name('a|b')", "a|b"),
        (r"name('&~()|,')", "&~()|,"),
    ],
)
def test_strings_and_escapes(text, value):
    node = parse(text)
    assert (node.path if isinstance(node, File) else node.pattern) == value
    assert parse(to_text(node)) == node


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_quote_round_trips_any_string(s):
    node = parse(f"file({quote(s)})")
    assert node.path == s
    assert normalise(to_text(node)) == to_text(node)


# ------------------------------------------------------------------------------ round trip
def full_parens(node) -> str:
    """Every operator parenthesised: a printer independent of the minimal-parentheses one."""
    if isinstance(node, Not):
        return f"(~{full_parens(node.operand)})"
    if isinstance(node, (And, Or)):
        op = " & " if isinstance(node, And) else " | "
        return "(" + op.join(full_parens(o) for o in node.operands) + ")"
    return to_text(node)


def canonical_shape(node):
    """shape() of the tree with ~~x -> x and nested same operators flattened (by hand)."""
    s = shape(node)

    def canon(s):
        if s[0] == "not":
            inner = canon(s[1])
            return inner[1] if inner[0] == "not" else ("not", inner)
        if s[0] in ("and", "or"):
            out = []
            for o in s[1]:
                o = canon(o)
                out.extend(o[1] if o[0] == s[0] else (o,))
            return (s[0], tuple(out))
        return s

    return canon(s)


leaf = st.one_of(
    st.builds(
        Top,
        st.sampled_from(["encoder-weight", "decoder-sum", "gradient-mean"]),
        st.one_of(st.integers(1, 10**6), st.floats(0, 1, exclude_min=True)),
    ),
    st.builds(Above, st.sampled_from(["decoder-bias", "decoder-weight"]), st.floats(0, 1e6)),
    st.builds(Name, st.sampled_from(["x", r"a\.b", "it's", '"', "\\\\"])),
    st.builds(File, st.text(min_size=1, max_size=8)),
    st.builds(Model, st.text(min_size=1, max_size=8), st.just("decoder-weight"), st.integers(1, 99)),
)
trees = st.recursive(
    leaf,
    lambda kids: st.one_of(
        st.builds(Not, kids),
        st.builds(lambda o: And(tuple(o)), st.lists(kids, min_size=2, max_size=3)),
        st.builds(lambda o: Or(tuple(o)), st.lists(kids, min_size=2, max_size=3)),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_print_parse_round_trip(tree):
    text = to_text(tree)
    back = parse(text)
    assert shape(back) == canonical_shape(tree)
    assert to_text(back) == text
    # explicit parentheses everywhere parse to the same tree
    assert shape(parse(full_parens(tree))) == canonical_shape(tree)


# ------------------------------------------------------------------------------ errors
ERRORS = [
    # (expression, 1-based column, words the message must contain)
    ("", 1, ["empty", "top(decoder-weight, 5%)"]),
    ("   ", 4, ["empty"]),
    ("top(decoder-weight, 5) &", 25, ["expected a term after '&'", "the end"]),
    ("top(decoder-weight, 5) & | name('x')", 26, ["expected a term after '&'", "'|'"]),
    ("tpo(decoder-weight, 5)", 1, ["unknown function 'tpo'", "Did you mean 'top'"]),
    ("Top(decoder-weight, 5)", 1, ["unknown function 'Top'", "Did you mean 'top'"]),
    ("top(decoder-weight)", 19, ["top takes 2 arguments (PART, K), got 1"]),
    ("top(decoder-weight, 5, 6)", 24, ["top takes 2 arguments (PART, K), got 3"]),
    ("name()", 6, ["name takes 1 argument (REGEX), got 0"]),
    ("model('x', decoder-weight)", 26, ["model takes 3 arguments (PATH, PART, K), got 2"]),
    (
        "top(decoder-weights, 5)",
        5,
        ["unknown part 'decoder-weights'", "Did you mean 'decoder-weight'", "gradient-mean"],
    ),
    ("top('decoder-weight', 5)", 5, ["must be a bare part name", "the string 'decoder-weight'"]),
    ("top(5, decoder-weight)", 5, ["must be a bare part name"]),
    ("top(decoder-weight, 0)", 21, ["bad K '0'", "count must be >= 1"]),
    ("top(decoder-weight, 1.5)", 21, ["bad K '1.5'", "(0, 1]"]),
    ("top(decoder-weight, 150%)", 21, ["bad K '150%'", "percentage"]),
    ("top(decoder-weight, -3)", 21, ["bad K '-3'"]),
    ("top(decoder-weight, all)", 21, ["K of top(PART, K) must be a number", "'all'"]),
    ("above(decoder-sum, -1)", 20, ["bad T '-1'", ">= 0"]),
    ("above(decoder-sum, 5%)", 20, ["bad T '5%'", "not a percentage"]),
    ("name('a(b')", 8, ["does not compile", "missing )"]),
    ("name('ok') | name('x[')", 21, ["does not compile"]),
    ("name(abc)", 6, ["must be a quoted string", "'abc'"]),
    ("name('abc", 6, ["never closed", "no matching '"]),
    ('file("abc', 6, ["never closed", 'no matching "']),
    ("file('')", 6, ["PATH of file(PATH) is empty"]),
    ("(top(decoder-weight, 5)", 1, ["this '(' is never closed"]),
    ("(name('a') name('b'))", 12, ["expected ')' or an operator", "column 1 is still open"]),
    ("top(decoder-weight, 5))", 23, ["')' without a matching '('"]),
    ("top(decoder-weight, 5) top(decoder-bias, 5)", 24, ["expected an operator or the end", "'&', '|', ')'"]),
    ("top(decoder-weight, 5) and name('x')", 24, ["expected an operator", "& / | / ~"]),
    ("not name('x')", 1, ["expected a term, got 'not'", "& / | / ~"]),
    ("top(decoder-weight, 5) - name('x')", 24, ["unexpected character '-'", "'& ~'"]),
    ("!name('x')", 1, ["unexpected character '!'", "'~'"]),
    ("name('x') + name('y')", 11, ["unexpected character '+'", "'|'"]),
    ("name('x') $", 11, ["unexpected character '$'"]),
    ("decoder-weight", 1, ["expected a term, got the part 'decoder-weight'", "top(decoder-weight, 5%)"]),
    ("top decoder-weight", 5, ["expected '(' after 'top'", "top(PART, K)"]),
    ("()", 2, ["empty parentheses"]),
    ("top(decoder-weight, 5", 4, ["the '(' of 'top' is never closed"]),
    ("top(decoder-weight, &)", 21, ["expected an argument of top(PART, K)", "'&'"]),
    ("top(decoder-weight; 5)", 19, ["unexpected character ';'"]),
    ("name('x')\n& name('y') &&", 24, ["expected a term after '&'"]),
]


@pytest.mark.parametrize("expr, column, words", ERRORS)
def test_syntax_errors_point_at_the_column(expr, column, words):
    with pytest.raises(MaskExprError) as info:
        parse(expr)
    e = info.value
    assert isinstance(e, SelectionError)
    assert e.column == column and e.position == column - 1, str(e)
    msg = str(e)
    for w in words:
        assert w in msg, (w, msg)
    lines = msg.split("\n")
    assert lines[0].startswith(f"mask expression, column {column}: ")
    shown, caret = lines[1], lines[2]
    assert shown == "    " + re.sub(r"\s", " ", expr)
    assert caret.index("^") == 4 + column - 1
    assert len(lines) == 4 and lines[3], "every error says what is allowed there"


def test_long_expression_error_shows_a_window_around_the_column():
    expr = (
        " | ".join(f"name('p{i}')" for i in range(40))
        + " | name('x[') | "
        + " | ".join(f"name('q{i}')" for i in range(40))
    )
    with pytest.raises(MaskExprError) as info:
        parse(expr)
    e = info.value
    shown, caret = str(e).split("\n")[1:3]
    assert e.position == expr.index("x[") + 1  # the '[' that opens the unterminated set
    assert len(shown) < 120 and shown.strip().startswith("...") and shown.endswith("...")
    assert shown[caret.index("^")] == expr[e.position] == "["


def test_parse_rejects_non_strings():
    with pytest.raises(SelectionError, match="must be a string"):
        parse(5)
