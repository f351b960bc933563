"""The Selection view's figures: the kept set is visible at any topk, counts are not stacked on a log
axis, a mask alone draws no cut, exact zeros do not stretch a log axis, one tick notation."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from dashboard.figures.common import log_ticks, tick_text
from dashboard.figures.selection import importance_histogram, rank_figure
from gradiend_core.analysis.distribution import cut_value, log_histogram, rank_curve
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.rule import select


@pytest.fixture(scope="module")
def importance() -> np.ndarray:
    g = np.random.default_rng(3)
    v = (10.0 ** g.uniform(-9, -1, 60_000)).astype(np.float32)
    v[:500] = 0.0  # exact zeros, as float16 weights underflow to
    return v


def brute_top(v: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((np.arange(v.size), -v.astype(np.float64)))
    return v[order[:k]].astype(np.float64)


@pytest.mark.parametrize("topk", [0.05, 1e-4, 1, 7])
def test_rank_curve_shows_the_kept_ranks_exactly(importance, topk):
    r = Ranking(importance)
    sel = select(r, topk=topk)
    curve = rank_curve(sel)
    k = sel.k
    truth = brute_top(importance, curve.upto)
    assert curve.k == k and curve.upto == min(importance.size, max(10 * k, 100))
    head = curve.ranks <= curve.exact_upto
    np.testing.assert_array_equal(curve.values[head], truth[curve.ranks[head] - 1])
    assert curve.values[curve.ranks == k][0] == truth[k - 1] == sel.cut
    # beyond the exact head: a bucket's lower edge, at most 1/128 octave below the true value
    rest = ~head
    true_rest = truth[curve.ranks[rest] - 1]
    assert np.all(curve.values[rest] <= true_rest) and np.all(curve.values[rest] >= true_rest * 2 ** (-1 / 128))
    fig = rank_figure(curve, "decoder-weight")
    kept = next(t for t in fig.data if t.name.startswith("kept"))
    assert max(kept.x) == k and min(kept.x) == 1  # every kept rank is on the axis, whatever topk is
    assert fig.layout.xaxis.type == "log" and "log scale" in fig.layout.xaxis.title.text
    assert fig.layout.yaxis.type == "log" and "log scale" in fig.layout.yaxis.title.text


def test_histogram_overlays_kept_on_all_and_never_stacks(importance):
    r = Ranking(importance)
    sel = select(r, topk=0.4)
    hist = log_histogram(r, sel)
    fig = importance_histogram(hist, "decoder-weight", cut_value(r, sel))
    assert fig.layout.barmode == "overlay"
    every, kept = fig.data[0], fig.data[1]
    # bars are true counts from 0: the kept bar of a bin is its kept count, not a slice on top of the dropped ones
    assert list(every.y) == list(hist.counts) and list(kept.y) == list(hist.kept_counts)
    assert int(np.sum(kept.y)) + hist.zero_kept == sel.k
    assert ("log scale" in fig.layout.yaxis.title.text) == (fig.layout.yaxis.type == "log")
    assert not fig.layout.annotations  # the cut is named in the legend, not written on the bars
    cut = next(t for t in fig.data if t.name.startswith("cut"))
    assert cut.x[0] == pytest.approx(math.log10(sel.cut))


def test_exact_zeros_do_not_stretch_the_axis(importance):
    r = Ranking(importance)
    hist = log_histogram(r, select(r, topk=0.05))
    positive = importance[importance > 0]
    assert hist.log_edges[0] >= math.log10(positive.min()) - 0.1
    fig = importance_histogram(hist, "decoder-weight")
    assert "500 dims with importance 0" in fig.layout.title.text
    assert min(fig.layout.xaxis.tickvals) >= math.log10(positive.min()) - 1


def test_a_mask_alone_draws_no_cut(importance):
    r = Ranking(importance)
    mask = np.zeros(importance.size, dtype=bool)
    mask[::3] = True
    sel = select(None, input_dim=importance.size, mask=mask)
    assert cut_value(r, sel) is None and rank_curve(sel) is None
    fig = importance_histogram(log_histogram(r, sel), "decoder-weight", cut_value(r, sel))
    assert not any(t.name.startswith("cut") for t in fig.data) and not fig.layout.shapes


def test_one_tick_notation():
    assert tick_text(1, -4) == "1e-4" and tick_text(5, -3) == "5e-3" and tick_text(1, 0) == "1"
    ticks = log_ticks(1e-9, 0.07)
    assert ticks["ticktext"][0] == "1e-9" and all("^" not in t and "10" != t[:2] for t in ticks["ticktext"])
    narrow = log_ticks(0.0617, 0.066)  # a zoom inside one decade still gets labels in the same notation
    assert len(narrow["ticktext"]) >= 2 and all(re.fullmatch(r"[0-9.]+(e-?[0-9]+)?", t) for t in narrow["ticktext"])
