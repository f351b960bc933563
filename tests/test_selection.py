"""Property tests of the one selection rule, ``gradiend_core.selection.rule.select``, against a
brute-force implementation written here from the rule's statement:

1. mask: keep indices where the mask is True;
2. threshold: of those, keep indices with ``importance >= threshold`` (NaN never passes). As in
   the reference (a float32 tensor compared with a Python float), the comparison is in float32;
3. topk: of the ``n`` left, keep the first ``k`` in the order "higher importance first, lower
   index first on ties, NaN after every number", with ``k = min(topk, n)`` for an int and
   ``k = math.ceil(topk * n)`` for a float in (0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradiend_core import Ranking, SelectionError, select

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ brute force
def f32(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def brute_force(imp, mask=None, threshold=None, topk=None):
    """Return (kept sorted indices, n after mask, n after threshold) or None if nothing is left."""
    imp = [float(v) for v in np.asarray(imp, dtype=np.float32)]
    n = len(imp)
    cand = [i for i in range(n) if mask is None or bool(mask[i])]
    n_mask = len(cand)
    if threshold is not None:
        t = f32(threshold)
        cand = [i for i in cand if not math.isnan(imp[i]) and imp[i] >= t]
    n_thr = len(cand)
    if n_thr == 0:
        return None
    if topk is not None:
        k = min(topk, n_thr) if isinstance(topk, int) else math.ceil(topk * n_thr)
        ranked = sorted(cand, key=lambda i: (math.isnan(imp[i]), 0.0 if math.isnan(imp[i]) else -imp[i], i))
        cand = ranked[:k]
    return sorted(cand), n_mask, n_thr


# ------------------------------------------------------------------------------ strategies
# A small pool makes exact ties (and signed zeros, infinities, NaN) frequent.
POOL = [0.0, -0.0, 0.25, 0.5, 1.0, 2.0, 3.5, float("inf"), float("-inf"), float("nan")]
value = st.one_of(st.sampled_from(POOL), st.floats(-5, 5, width=32))


@st.composite
def importance(draw, min_size=1, max_size=120, nan=True):
    vals = draw(
        st.lists(value if nan else value.filter(lambda v: not math.isnan(v)), min_size=min_size, max_size=max_size)
    )
    return np.array(vals, dtype=np.float32)


@st.composite
def masks(draw, n):
    bits = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    m = np.array(bits, dtype=bool)
    if not m.any():
        m[draw(st.integers(0, n - 1))] = True
    return m


def topks(n):
    return st.one_of(
        st.integers(1, n + 5),
        st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
        st.sampled_from([1, 1.0, 0.5, 0.1, 1e-9]),
    )


@st.composite
def thresholds(draw, imp):
    finite = [float(v) for v in imp if np.isfinite(v) and v >= 0]
    options = [st.floats(0, 6, allow_nan=False), st.just(0.0)]
    if finite:
        options.append(st.sampled_from(finite))  # exactly at a value: `>=` must keep it
    return draw(st.one_of(*options))


@st.composite
def problems(draw):
    imp = draw(importance())
    n = imp.size
    mask = draw(st.one_of(st.none(), masks(n)))
    threshold = draw(st.one_of(st.none(), thresholds(imp)))
    topk = draw(st.one_of(st.none(), topks(n)))
    assume(mask is not None or threshold is not None or topk is not None)
    as_ = draw(st.sampled_from(["numpy", "torch", "ranking"]))
    return imp, mask, threshold, topk, as_


def wrap(imp, as_):
    if as_ == "torch":
        return torch.from_numpy(imp.copy())
    if as_ == "ranking":
        return Ranking(imp)
    return imp


# ------------------------------------------------------------------------------ properties
@SETTINGS
@given(problems())
def test_select_equals_brute_force(p):
    imp, mask, threshold, topk, as_ = p
    expected = brute_force(imp, mask, threshold, topk)
    if expected is None:
        with pytest.raises(SelectionError):
            select(wrap(imp, as_), mask=mask, threshold=threshold, topk=topk)
        return
    keep, n_mask, n_thr = expected
    sel = select(wrap(imp, as_), mask=mask, threshold=threshold, topk=topk)
    assert sel.keep.dtype == np.int64
    assert sel.keep.tolist() == keep
    assert sel.k == len(keep)
    assert sel.input_dim == imp.size
    assert sel.n_after_mask == n_mask
    assert sel.n_after_threshold == n_thr
    np.testing.assert_array_equal(sel.mask(), np.isin(np.arange(imp.size), keep))


@SETTINGS
@given(importance(), st.data())
def test_kept_count(imp, data):
    n = imp.size
    topk = data.draw(topks(n))
    sel = select(imp, topk=topk)
    expected = min(topk, n) if isinstance(topk, int) else math.ceil(topk * n)
    assert sel.k == expected


@SETTINGS
@given(problems())
def test_stepwise_equals_one_call(p):
    """mask, then threshold on what is left, then topk on what is left == one call."""
    imp, mask, threshold, topk, _ = p
    assume(brute_force(imp, mask, threshold, topk) is not None)
    idx = np.arange(imp.size)
    if mask is not None:
        idx = idx[select(None, input_dim=imp.size, mask=mask).keep]
    if threshold is not None:
        idx = idx[select(imp[idx], threshold=threshold).keep]
    if topk is not None:
        idx = idx[select(imp[idx], topk=topk).keep]
    np.testing.assert_array_equal(select(imp, mask=mask, threshold=threshold, topk=topk).keep, idx)


@SETTINGS
@given(importance(), st.data())
def test_mask_and_threshold_commute(imp, data):
    n = imp.size
    mask = data.draw(masks(n))
    threshold = data.draw(thresholds(imp))
    assume(brute_force(imp, mask, threshold) is not None)
    both = select(imp, mask=mask, threshold=threshold).keep
    thr_only = set(select(imp, threshold=threshold).keep.tolist())
    assert both.tolist() == [i for i in np.flatnonzero(mask) if i in thr_only]


@SETTINGS
@given(importance(), st.data())
def test_larger_topk_keeps_a_superset(imp, data):
    n = imp.size
    mask = data.draw(st.one_of(st.none(), masks(n)))
    if data.draw(st.booleans()):
        a, b = sorted(data.draw(st.lists(st.integers(1, n + 3), min_size=2, max_size=2)))
    else:
        a, b = sorted(data.draw(st.lists(st.floats(0, 1, exclude_min=True), min_size=2, max_size=2)))
    small = set(select(imp, mask=mask, topk=a).keep.tolist())
    large = set(select(imp, mask=mask, topk=b).keep.tolist())
    assert small <= large


@SETTINGS
@given(importance(), st.data())
def test_nan_never_ranks_before_a_number(imp, data):
    n = imp.size
    topk = data.draw(topks(n))
    keep = select(imp, topk=topk).keep
    kept_nan = np.isnan(imp[keep])
    dropped = np.setdiff1d(np.arange(n), keep)
    if kept_nan.any():
        assert np.isnan(imp[dropped]).all(), "a NaN was kept while a number was dropped"
    r = Ranking(imp)
    ranked_nan = np.isnan(imp[r.dims().ranked(n)])
    assert not np.any(ranked_nan[:-1] & ~ranked_nan[1:]), "NaN before a number in the ranking"
    assert r.n_nan == int(np.isnan(imp).sum())


@SETTINGS
@given(importance(), st.data())
def test_threshold_never_keeps_nan(imp, data):
    imp = np.concatenate([imp, np.array([np.nan, 0.75, np.nan], dtype=np.float32)])
    threshold = data.draw(thresholds(imp))
    assume(brute_force(imp, threshold=threshold) is not None)
    assert not np.isnan(imp[select(imp, threshold=threshold).keep]).any()


def test_ties_break_by_lower_index():
    imp = np.array([1, 3, 2, 3, 3, 0], dtype=np.float32)
    assert select(imp, topk=2).keep.tolist() == [1, 3]
    assert select(imp, topk=4).keep.tolist() == [1, 2, 3, 4]


def test_negative_zero_equals_zero():
    """-0.0 == 0.0 as numbers (IEEE 754, torch, NumPy, the reference): a tie, broken by index, and
    both pass a threshold of 0 (custom importance such as a signed gradient mean can hold -0.0)."""
    assert select(np.array([-0.0, 0.0], dtype=np.float32), topk=1).keep.tolist() == [0]
    assert select(np.array([0.0, -0.0, 0.0], dtype=np.float32), topk=2).keep.tolist() == [0, 1]
    assert select(np.array([-0.0], dtype=np.float32), threshold=0.0).keep.tolist() == [0]
    assert select(np.array([1.0, -0.0, 0.0, -1.0], dtype=np.float32), threshold=0.0).keep.tolist() == [0, 1, 2]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20000), st.sampled_from([0.0, 0.01, 0.3]))
def test_large_vectors_against_lexsort(seed, n, nan_share):
    """A second method at sizes where many buckets and long ties occur: numpy's lexsort."""
    rng = np.random.default_rng(seed)
    imp = np.round(rng.standard_normal(n) * rng.choice([1, 100, 1e-30]), int(rng.integers(0, 3))).astype(np.float32)
    imp[rng.random(n) < nan_share] = np.nan
    imp[rng.random(n) < 0.05] = -0.0
    nan = np.isnan(imp)
    key = np.where(nan, 0.0, -imp.astype(np.float64))
    order = np.lexsort((np.arange(n), key, nan))  # NaN last, then importance descending, then index
    topk = int(rng.integers(1, n + 1)) if rng.random() < 0.5 else float(rng.random() or 1.0)
    k = min(topk, n) if isinstance(topk, int) else math.ceil(topk * n)
    np.testing.assert_array_equal(select(imp, topk=topk).keep, np.sort(order[:k]))
    finite = imp[~nan]
    if finite.size and finite.max() >= 0:
        t = float(rng.choice(finite[finite >= 0]))
        np.testing.assert_array_equal(select(imp, threshold=t).keep, np.flatnonzero(~nan & (imp >= np.float32(t))))
    mask = rng.random(n) < 0.5
    if mask.any():
        m_order = order[mask[order]]
        k = min(topk, mask.sum()) if isinstance(topk, int) else math.ceil(topk * mask.sum())
        np.testing.assert_array_equal(select(imp, mask=mask, topk=topk).keep, np.sort(m_order[:k]))


def test_int_one_and_float_one_differ():
    imp = np.array([0.3, 0.9, 0.1], dtype=np.float32)
    assert select(imp, topk=1).keep.tolist() == [1]
    assert select(imp, topk=1.0).keep.tolist() == [0, 1, 2]


def test_float_topk_rounds_up_including_float_error():
    # 0.07 * 100 == 7.000000000000001 in binary floating point: ceil gives 8, as the reference's
    # math.ceil(topk * n) does; an exact decimal product would give 7.
    imp = np.arange(100, dtype=np.float32)
    assert 0.07 * 100 > 7
    assert select(imp, topk=0.07).k == 8
    assert select(imp[:30], topk=0.05).k == 2  # ceil(1.5)


# ------------------------------------------------------------------------------ validation
IMP = np.array([0.5, 2.0, 1.25, 0.0], dtype=np.float32)


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([1, 0, 1, 0], dtype=torch.int64),
        torch.tensor([1.0, 0.0, 1.0, 0.0]),
        np.array([1, 0, 1, 0], dtype=np.uint8),
        np.array([True, False, True]),
        torch.ones(5, dtype=torch.bool),
        torch.ones(4, 1, dtype=torch.bool),
        np.ones((2, 2), dtype=bool),
        [True, False, True, False],
        torch.zeros(4, dtype=torch.bool),
        np.zeros(4, dtype=bool),
    ],
    ids=["int64", "float", "uint8", "short", "long", "column", "2d", "list", "all-false-torch", "all-false-np"],
)
def test_bad_mask_raises(mask):
    with pytest.raises(SelectionError) as e:
        select(IMP, mask=mask)
    assert isinstance(e.value, ValueError)
    with pytest.raises(SelectionError):
        select(IMP, mask=mask, topk=2)


@pytest.mark.parametrize("threshold", [-0.5, -1e-30, float("nan"), True, "0.5", [0.5]])
def test_bad_threshold_raises(threshold):
    with pytest.raises(SelectionError) as e:
        select(IMP, threshold=threshold)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("threshold", [2.5, 100.0])
def test_threshold_above_max_names_the_largest_value(threshold):
    with pytest.raises(SelectionError) as e:
        select(IMP, threshold=threshold)
    assert repr(2.0) in str(e.value)
    # with a mask, the largest value among what the mask keeps
    with pytest.raises(SelectionError) as e:
        select(IMP, mask=np.array([True, False, True, True]), threshold=1.5)
    assert repr(1.25) in str(e.value)


@pytest.mark.parametrize(
    "topk", [True, False, 0, -1, -3, 0.0, -0.1, 1.5, 1.0000001, float("nan"), float("inf"), "5", "0.5", None, [3]]
)
def test_bad_topk_raises(topk):
    if topk is None:  # nothing given at all
        with pytest.raises(SelectionError):
            select(IMP)
        return
    with pytest.raises(SelectionError) as e:
        select(IMP, topk=topk)
    assert isinstance(e.value, ValueError)


def test_numpy_scalars_are_accepted_like_python_numbers():
    assert select(IMP, topk=np.int64(2)).keep.tolist() == select(IMP, topk=2).keep.tolist() == [1, 2]
    assert select(IMP, topk=np.float64(0.5)).keep.tolist() == [1, 2]
    assert select(IMP, threshold=np.float32(1.25)).keep.tolist() == [1, 2]


def test_threshold_and_topk_need_importance():
    with pytest.raises(SelectionError):
        select(None, input_dim=4, topk=2)
    with pytest.raises(SelectionError):
        select(None, input_dim=4, threshold=0.1)
    assert select(None, input_dim=4, mask=np.array([0, 1, 1, 0], dtype=bool)).keep.tolist() == [1, 2]


def test_importance_length_must_match_input_dim():
    with pytest.raises(SelectionError):
        select(IMP, input_dim=5, topk=1)
