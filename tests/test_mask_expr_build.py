"""Building expressions by pointing: combine() with minimal parentheses, and the term
constructors a UI calls (parameters, layer x component cells, UpSet patterns)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradiend_core import read_checkpoint
from gradiend_core.analysis.overlap import intersection_patterns, part_topk_sets
from gradiend_core.errors import SelectionError
from gradiend_core.ranking.importance import PARTS, weight_importance
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.expr.build import (
    above_term,
    cell_term,
    combine,
    file_term,
    model_term,
    name_term,
    params_term,
    top_term,
    upset_term,
)
from gradiend_core.selection.expr.evaluate import evaluate_mask_expr
from gradiend_core.selection.expr.syntax import parse
from gradiend_core.space.layers import parse_param_name
from gradiend_core.space.param_map import ParamMap

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
T1, T2, T3 = "top(decoder-weight, 5)", "top(encoder-weight, 0.1)", 'name("x")'


@pytest.fixture(scope="module")
def number():
    return read_checkpoint(SAMPLES / "number-unpruned")


# ------------------------------------------------------------------------------ combine
@pytest.mark.parametrize(
    "expr, term, op, expected",
    [
        (None, T1, "include", T1),
        ("", T1, "intersect", T1),
        (None, T3, "exclude", f"~{T3}"),
        (T1, T2, "include", f"{T1} | {T2}"),
        (T1, T2, "intersect", f"{T1} & {T2}"),
        (T1, T2, "exclude", f"{T1} & ~{T2}"),
        (f"{T1} | {T2}", T3, "exclude", f"({T1} | {T2}) & ~{T3}"),
        (f"{T1} | {T2}", T3, "intersect", f"({T1} | {T2}) & {T3}"),
        (f"{T1} | {T2}", T3, "include", f"{T1} | {T2} | {T3}"),
        (f"{T1} & {T2}", T3, "include", f"{T1} & {T2} | {T3}"),
        (f"{T1} & {T2}", T3, "intersect", f"{T1} & {T2} & {T3}"),
        (T1, f"{T2} | {T3}", "exclude", f"{T1} & ~({T2} | {T3})"),
        (T1, f"{T2} & {T3}", "exclude", f"{T1} & ~({T2} & {T3})"),
        (T1, f"~{T2}", "exclude", f"{T1} & {T2}"),
        (f"{T1} | {T2}", None, "invert", f"~({T1} | {T2})"),
        (f"~({T1} | {T2})", None, "invert", f"{T1} | {T2}"),
        (T1, None, "invert", f"~{T1}"),
        (f"{T1} & ~{T2}", None, "invert", f"~({T1} & ~{T2})"),
    ],
)
def test_combine(expr, term, op, expected):
    assert combine(expr, term, op) == expected
    assert combine(parse(expr) if expr else expr, parse(term) if term else term, op) == expected


def test_combine_equals_the_set_operation(number):
    a, b = "top(decoder-weight, 0.05)", "top(encoder-weight, 0.05)"
    ma = evaluate_mask_expr(a, number).mask
    mb = evaluate_mask_expr(b, number).mask
    for op, want in {"include": ma | mb, "intersect": ma & mb, "exclude": ma & ~mb}.items():
        np.testing.assert_array_equal(evaluate_mask_expr(combine(a, b, op), number).mask, want)
    np.testing.assert_array_equal(
        evaluate_mask_expr(combine(combine(a, b, "include"), None, "invert"), number).mask, ~(ma | mb)
    )


@pytest.mark.parametrize(
    "expr, term, op, words",
    [
        (T1, T2, "union", "op must be one of include, exclude, intersect, invert"),
        (None, None, "invert", "no expression to invert"),
        (T1, None, "include", "include needs a term"),
        (T1, "top(decoder-weight", "include", "never closed"),
    ],
)
def test_combine_errors(expr, term, op, words):
    with pytest.raises(SelectionError, match=re.escape(words)):
        combine(expr, term, op)


# ------------------------------------------------------------------------------ terms
def test_simple_term_constructors():
    assert top_term("decoder-weight", 0.05) == "top(decoder-weight, 0.05)"
    assert top_term("Encoder-Weight", 5000) == "top(encoder-weight, 5000)"
    assert top_term("decoder-sum", np.int64(7)) == "top(decoder-sum, 7)"
    assert top_term("decoder-sum", 1.0) != top_term("decoder-sum", 1)
    assert above_term("decoder-bias", 1) == "above(decoder-bias, 1.0)"
    assert name_term(r"layer\.0\.") == r'name("layer\.0\.")'
    assert file_term("it's.npy") == 'file("it\'s.npy")'
    assert file_term('say "hi"') == "file('say \"hi\"')"
    assert model_term("runs/gender", "gradient-mean", 0.1) == 'model("runs/gender", gradient-mean, 0.1)'
    for bad in (
        lambda: top_term("decoder-weight", 0),
        lambda: top_term("decoder-weight", 1.5),
        lambda: top_term("weights", 5),
        lambda: above_term("decoder-bias", -1),
        lambda: above_term("decoder-bias", float("nan")),
        lambda: name_term("a("),
    ):
        with pytest.raises(SelectionError):
            bad()


def matched(term: str, names):
    pattern = parse(term).pattern
    return [n for n in names if re.search(pattern, n)]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_params_term_matches_exactly_the_chosen_parameters(data):
    pmap = read_checkpoint(SAMPLES / "number-unpruned").param_map
    names = pmap.names
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=12))
    term = params_term(chosen, pmap)
    assert set(matched(term, names)) == set(chosen)
    assert params_term(list(reversed(chosen)), pmap) == term  # one set of parameters, one text


def test_params_term_on_tricky_names():
    names = ["a.b", "a.b.c", "a.bc", "x", "a.b.c.d", "ab"]
    for k in range(1, len(names) + 1):
        for start in range(len(names) - k + 1):
            chosen = names[start : start + k]
            assert sorted(matched(params_term(chosen), names)) == sorted(chosen), chosen


def test_params_term_errors(number):
    with pytest.raises(SelectionError, match="at least one"):
        params_term([])
    with pytest.raises(SelectionError, match="not mapped"):
        params_term(["bert.nothing.weight"], number.param_map)


def test_cell_term_selects_exactly_the_cell(number):
    names = number.param_map.names
    # by hand: layer 0 x query of tiny-bert is its weight and bias
    term = cell_term(number.param_map, "0", "query")
    assert term == r'name("^bert\.encoder\.layer\.0\.attention\.self\.query\.(?:weight|bias)$")'
    assert matched(term, names) == [
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.0.attention.self.query.bias",
    ]
    parsed = {n: parse_param_name(n) for n in names}
    cells = set(parsed.values())
    for layer, comp in cells:
        want = [n for n in names if parsed[n] == (layer, comp)]
        assert matched(cell_term(number.param_map, layer, comp), names) == want
    for layer in {c[0] for c in cells}:
        assert matched(cell_term(number.param_map, layers=layer), names) == [n for n in names if parsed[n][0] == layer]
    for comp in {c[1] for c in cells}:
        assert matched(cell_term(number.param_map, components=comp), names) == [
            n for n in names if parsed[n][1] == comp
        ]
    # the term's mask holds exactly the dims of the cell's parameters
    r = evaluate_mask_expr(cell_term(number.param_map, "1", ["query", "key"]), number)
    sizes = {e.name: int(np.prod(e.shape)) for e in number.param_map}
    assert r.kept == sum(sizes[n] for n in names if parsed[n] in {("1", "query"), ("1", "key")})
    with pytest.raises(SelectionError, match="no mapped parameter"):
        cell_term(number.param_map, "7", "query")


def test_cell_term_layers_6_to_11_of_a_12_layer_model():
    comps = ["attention.self.query.weight", "attention.output.dense.bias", "output.LayerNorm.weight"]
    names = (
        ["bert.embeddings.word_embeddings.weight"]
        + [f"bert.encoder.layer.{i}.{c}" for i in range(12) for c in comps]
        + ["bert.pooler.dense.weight"]
    )
    pmap = ParamMap.full((n, (2,)) for n in names)
    term = cell_term(pmap, layers=[str(i) for i in range(6, 12)])
    assert matched(term, names) == [n for n in names if re.search(r"layer\.([6-9]|1[01])\.", n)]
    # layer 1 must not pick up layers 10 and 11
    assert matched(cell_term(pmap, layers="1"), names) == [f"bert.encoder.layer.1.{c}" for c in comps]


def test_upset_term_counts_match_the_intersection_patterns(number):
    rankings = {p: Ranking(weight_importance(number.state_dict, p)) for p in PARTS}
    topk = 0.05
    sets = part_topk_sets(rankings, topk)
    patterns = intersection_patterns(sets, number.param_map.input_dim)
    terms = [top_term(p, topk) for p in patterns.names]
    assert upset_term(terms, [True, True, False, False]) == (
        f"top({patterns.names[0]}, 0.05) & top({patterns.names[1]}, 0.05) & ~top({patterns.names[2]}, 0.05) "
        f"& ~top({patterns.names[3]}, 0.05)"
    )
    for row, count in zip(patterns.membership, patterns.counts):
        r = evaluate_mask_expr(upset_term(terms, list(row)), number, importance=rankings)
        assert r.kept == count, patterns.names
    with pytest.raises(SelectionError, match="at least one set"):
        upset_term(terms, [False] * 4)
    with pytest.raises(SelectionError, match="one membership flag per set"):
        upset_term(terms, [True])
