"""Property tests of mask expressions against set algebra on brute-force sets in base-global space.

The oracle here is written from the semantics' statement, not from the code under test:

* every term denotes a set of base-global indices: ``top(PART, K)`` the base-global indices of
  the model's top-k local dims, found by a full stable sort of ``(NaN last, -importance, index)``
  with ``k = min(K, n)`` for a count and ``ceil(K * n)`` for a fraction; ``above(PART, T)`` those
  with ``importance >= float32(T)``; ``name(R)`` every entry of every parameter whose name
  ``re.search``-matches; ``file(F)`` the True entries of a base-global mask (or the base-global
  indices of the True dims of a local mask); ``model(P, PART, K)`` the other model's top-k;
* ``&``, ``|``, ``~`` are intersection, union, complement in ``range(unpruned_length)``;
* the mask is membership of each local dim's base-global index.

Importance is computed here from the weights with numpy (latent_dim 1: |w| per dim), and the
base-global index of each dim from the map's positions, so no code under test feeds the oracle.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradiend_core.checkpoint import DEC_B, DEC_W, ENC_B, ENC_W, Architecture, CheckpointData
from gradiend_core.selection.expr.evaluate import evaluate_mask_expr
from gradiend_core.selection.expr.syntax import Above, And, File, MaskExprError, Model, Name, Not, Or, Top, to_text
from gradiend_core.space.param_map import ParamEntry, ParamMap

SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
PARTS4 = ("encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum")
NAMES = (
    "bert.embeddings.word_embeddings.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.0.attention.self.query.bias",
    "bert.encoder.layer.1.output.dense.weight",
)
# A small pool makes exact ties, signed zeros, infinities and NaN frequent.
POOL = [0.0, -0.0, 0.25, -0.25, 0.5, 1.0, -1.0, 2.0, float("inf"), float("-inf"), float("nan")]
value = st.one_of(st.sampled_from(POOL), st.floats(-3, 3, width=32))


# ------------------------------------------------------------------------------ model strategy
@st.composite
def base_shapes(draw) -> list[tuple[str, tuple[int, ...]]]:
    n = draw(st.integers(1, 4))
    shapes = []
    for name in NAMES[:n]:
        dims = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
        shapes.append((name, tuple(dims)))
    return shapes


@st.composite
def checkpoint(draw, shapes, tag: str = "this") -> CheckpointData:
    """A checkpoint over ``shapes``, unpruned or pruned (random positions), with random weights."""
    pruned = draw(st.booleans())
    entries = []
    for name, shape in shapes:
        numel = int(np.prod(shape))
        if not pruned or draw(st.booleans()):
            entries.append(ParamEntry(name, shape))
            continue
        keep = draw(st.lists(st.booleans(), min_size=numel, max_size=numel))
        entries.append(ParamEntry(name, shape, np.flatnonzero(keep).astype(np.int64)))
    pmap = ParamMap(entries)
    n = pmap.input_dim
    if n == 0:  # a checkpoint has at least one input dim
        entries[0] = ParamEntry(shapes[0][0], shapes[0][1])
        pmap = ParamMap(entries)
        n = pmap.input_dim
    vec = lambda: np.array(draw(st.lists(value, min_size=n, max_size=n)), dtype=np.float32)  # noqa: E731
    state = {
        ENC_W: torch.from_numpy(vec().reshape(1, n)),
        ENC_B: torch.zeros(1),
        DEC_W: torch.from_numpy(vec().reshape(n, 1)),
        DEC_B: torch.from_numpy(vec()),
    }
    return CheckpointData(Path(f"/nonexistent/{tag}"), Architecture(n, 1), pmap, state, {"base_model": "tiny-test"})


# ------------------------------------------------------------------------------ the oracle
def oracle_bgi(pmap: ParamMap) -> list[int]:
    """Base-global index of each local dim, from the positions (a second method)."""
    out, offset = [], 0
    for e in pmap.entries:
        numel = int(np.prod(e.shape))
        pos = range(numel) if e.positions is None else [int(p) for p in e.positions]
        out += [offset + p for p in pos]
        offset += numel
    return out


def oracle_importance(data: CheckpointData, part: str) -> list[float]:
    enc = data.state_dict[ENC_W].numpy()[0]
    dec = data.state_dict[DEC_W].numpy()[:, 0]
    bias = data.state_dict[DEC_B].numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        v = {
            "encoder-weight": np.abs(enc),
            "decoder-weight": np.abs(dec),
            "decoder-bias": np.abs(bias),
            "decoder-sum": np.abs(dec + bias),
        }[part]
    return [float(x) for x in v.astype(np.float32)]


def oracle_topk(imp: Sequence[float], topk) -> list[int]:
    n = len(imp)
    k = min(topk, n) if isinstance(topk, int) else math.ceil(topk * n)
    order = sorted(range(n), key=lambda i: (math.isnan(imp[i]), 0.0 if math.isnan(imp[i]) else -imp[i], i))
    return order[:k]


def oracle_set(node, data: CheckpointData, files: dict[str, np.ndarray], others: dict[str, CheckpointData]) -> set:
    pmap = data.param_map
    universe = set(range(pmap.unpruned_length))
    bgi = oracle_bgi(pmap)
    if isinstance(node, Top):
        return {bgi[i] for i in oracle_topk(oracle_importance(data, node.part), node.topk)}
    if isinstance(node, Above):
        t = float(np.float32(node.threshold))
        return {bgi[i] for i, v in enumerate(oracle_importance(data, node.part)) if v >= t}
    if isinstance(node, Name):
        out, offset = set(), 0
        for e in pmap.entries:
            numel = int(np.prod(e.shape))
            if re.search(node.pattern, e.name):
                out |= set(range(offset, offset + numel))
            offset += numel
        return out
    if isinstance(node, File):
        m = files[node.path]
        if m.size == pmap.unpruned_length:
            return {int(g) for g in np.flatnonzero(m)}
        return {bgi[i] for i in np.flatnonzero(m)}
    if isinstance(node, Model):
        other = others[node.path]
        obgi = oracle_bgi(other.param_map)
        return {obgi[i] for i in oracle_topk(oracle_importance(other, node.part), node.topk)}
    if isinstance(node, Not):
        return universe - oracle_set(node.operand, data, files, others)
    sets = [oracle_set(o, data, files, others) for o in node.operands]
    out = sets[0]
    for s in sets[1:]:
        out = out & s if isinstance(node, And) else out | s
    return out


# ------------------------------------------------------------------------------ expressions
def topks(n: int):
    return st.one_of(
        st.integers(1, n + 3),
        st.sampled_from([1.0, 0.5, 0.1, 1e-9, 0.3]),
        st.floats(0, 1, exclude_min=True, allow_subnormal=False),
    )


def thresholds():
    return st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 1e-30]), st.floats(0, 3, allow_nan=False, width=32))


PATTERNS = [re.escape(n) for n in NAMES] + [r"layer\.0", r"weight$", r"^bert\.e", "nomatch", "."]


@st.composite
def problem(draw):
    shapes = draw(base_shapes())
    data = draw(checkpoint(shapes, "this"))
    n, full = data.param_map.input_dim, data.param_map.unpruned_length
    others = {f"other{i}": draw(checkpoint(shapes, f"other{i}")) for i in range(draw(st.integers(0, 2)))}
    files: dict[str, np.ndarray] = {}
    for i in range(draw(st.integers(0, 2))):
        length = draw(st.sampled_from([n, full]))
        files[f"mask{i}.npy"] = np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)), dtype=bool)

    leaves = [
        st.builds(Top, st.sampled_from(PARTS4), topks(n)),
        st.builds(Above, st.sampled_from(PARTS4), thresholds()),
        st.builds(Name, st.sampled_from(PATTERNS)),
    ]
    if files:
        leaves.append(st.builds(File, st.sampled_from(sorted(files))))
    if others:
        leaves.append(st.builds(Model, st.sampled_from(sorted(others)), st.sampled_from(PARTS4), topks(n + 2)))
    tree = draw(
        st.recursive(
            st.one_of(*leaves),
            lambda kids: st.one_of(
                st.builds(Not, kids),
                st.builds(lambda ops: And(tuple(ops)), st.lists(kids, min_size=2, max_size=3)),
                st.builds(lambda ops: Or(tuple(ops)), st.lists(kids, min_size=2, max_size=3)),
            ),
            max_leaves=6,
        )
    )
    return data, tree, files, others


def run(data, tree, files, others, tmp: Path, **kw):
    for name, m in files.items():
        np.save(tmp / name, m)
    return evaluate_mask_expr(
        to_text(tree),
        data,
        load_checkpoint=lambda p: others[Path(p).name],
        resolve_path=lambda p: tmp / p if p in files else Path(p),
        **kw,
    )


def terms_of(node):
    if isinstance(node, (Top, Above, Name, File, Model)):
        yield node
    elif isinstance(node, Not):
        yield from terms_of(node.operand)
    else:
        for o in node.operands:
            yield from terms_of(o)


# ------------------------------------------------------------------------------ properties
@SETTINGS
@given(problem())
def test_expression_equals_set_algebra_in_base_global_space(p):
    data, tree, files, others = p
    bgi = oracle_bgi(data.param_map)
    expected_set = oracle_set(tree, data, files, others)
    expected = np.array([g in expected_set for g in bgi], dtype=bool)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(data, tree, files, others, Path(tmp), allow_empty=True)
        np.testing.assert_array_equal(result.mask, expected)
        # the mask over base-global indices: the expression's set, restricted to this model's entries
        g = np.zeros(data.param_map.unpruned_length, dtype=bool)
        g[[x for x in bgi if x in expected_set]] = True
        np.testing.assert_array_equal(result.global_mask(), g)
        assert result.sha256 == hashlib.sha256(np.packbits(expected).tobytes()).hexdigest()
        for t in terms_of(tree):
            s = oracle_set(t, data, files, others)
            assert result.term_counts[to_text(t)] == sum(g in s for g in bgi), to_text(t)
        assert list(result.term_counts) == list(dict.fromkeys(to_text(t) for t in terms_of(tree)))
        if not expected.any():
            with pytest.raises(MaskExprError, match="keeps none"):
                run(data, tree, files, others, Path(tmp))


@SETTINGS
@given(problem(), st.data())
def test_laws_of_the_algebra(p, more):
    """De Morgan, double negation, absorption and complement hold on the masks."""
    data, a, files, others = p
    b = more.draw(st.sampled_from([Name(r"weight$"), Top("decoder-sum", 1), Above("encoder-weight", 0.5), a]))
    with tempfile.TemporaryDirectory() as tmp:
        ev = lambda t: run(data, t, files, others, Path(tmp), allow_empty=True).mask  # noqa: E731
        ma, mb = ev(a), ev(b)
        np.testing.assert_array_equal(ev(Not(And((a, b)))), ~ma | ~mb)
        np.testing.assert_array_equal(ev(Not(Or((a, b)))), ~ma & ~mb)
        np.testing.assert_array_equal(ev(Not(Not(a))), ma)
        np.testing.assert_array_equal(ev(Or((a, And((a, b))))), ma)
        assert not ev(And((a, Not(a)))).any()
        assert ev(Or((a, Not(a)))).all()


@SETTINGS
@given(st.data())
def test_top_term_is_the_selection_rule_with_ties_and_nan(data):
    """A single top() equals the brute-force top-k, whatever the ties and NaN."""
    n = data.draw(st.integers(1, 40))
    imp = np.array(data.draw(st.lists(st.sampled_from(POOL), min_size=n, max_size=n)), dtype=np.float32)
    pmap = ParamMap.full([("p.weight", (n,))])
    state = {
        ENC_W: torch.zeros(1, n),
        ENC_B: torch.zeros(1),
        DEC_W: torch.from_numpy(imp.reshape(n, 1)),
        DEC_B: torch.zeros(n),
    }
    ckpt = CheckpointData(Path("/nonexistent"), Architecture(n, 1), pmap, state, {})
    topk = data.draw(topks(n))
    result = evaluate_mask_expr(to_text(Top("decoder-weight", topk)), ckpt)
    expected = np.zeros(n, dtype=bool)
    expected[oracle_topk([float(v) for v in np.abs(imp)], topk)] = True
    np.testing.assert_array_equal(result.mask, expected)


def test_fraction_rounds_up_and_ties_go_to_the_lower_index():
    """By hand: 10 dims with importance [1, 1, 1, 0, 0, nan, 2, 2, 0.5, 1]; 25 % of 10 -> ceil(2.5) = 3
    dims: the two 2.0 (dims 6, 7), then the lowest-index 1.0 (dim 0)."""
    imp = np.array([1, 1, 1, 0, 0, np.nan, 2, 2, 0.5, 1], dtype=np.float32)
    pmap = ParamMap.full([("p.weight", (10,))])
    state = {
        ENC_W: torch.zeros(1, 10),
        ENC_B: torch.zeros(1),
        DEC_W: torch.from_numpy(imp.reshape(10, 1)),
        DEC_B: torch.zeros(10),
    }
    ckpt = CheckpointData(Path("/nonexistent"), Architecture(10, 1), pmap, state, {})
    assert np.flatnonzero(evaluate_mask_expr("top(decoder-weight, 25%)", ckpt).mask).tolist() == [0, 6, 7]
    # NaN ranks last: top 10 keeps all, top 9 drops exactly the NaN
    assert np.flatnonzero(~evaluate_mask_expr("top(decoder-weight, 9)", ckpt).mask).tolist() == [5]
    # above: >= compares in float32, NaN never passes
    assert np.flatnonzero(evaluate_mask_expr("above(decoder-weight, 1)", ckpt).mask).tolist() == [0, 1, 2, 6, 7, 9]
    assert evaluate_mask_expr("above(decoder-weight, 3) | top(decoder-weight, 1)", ckpt).term_counts == {
        "above(decoder-weight, 3.0)": 0,
        "top(decoder-weight, 1)": 1,
    }
