"""Part against part: top-k overlap, UpSet patterns, Spearman and scatter, against Python sets
and scipy."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import scipy.stats
import torch

from dashboard.figures.compare_parts import importance_scatter, spearman_heatmap, upset_figure
from dashboard.figures.overlap import overlap_heatmap
from gradiend_core.analysis.correlation import paired_sample, sample_indices, spearman_matrix
from gradiend_core.analysis.overlap import intersection_patterns, overlap_matrix, part_topk_sets, restrict_patterns
from gradiend_core.ranking.importance import PARTS, weight_importance
from gradiend_core.ranking.ranking import Ranking


@pytest.fixture(scope="module")
def parts():
    """Importance of the four parts of a random GRADIEND (latent_dim 2), 3,000 dims."""
    g = torch.Generator().manual_seed(11)
    n = 3000
    state = {
        "encoder.0.linear.weight": torch.randn(2, n, generator=g),
        "decoder.0.linear.weight": torch.randn(n, 2, generator=g) ** 3,
        "decoder.0.linear.bias": torch.randn(n, generator=g),
    }
    return {p: weight_importance(state, p) for p in PARTS}


def brute_topk(importance: np.ndarray, topk) -> set:
    n = importance.size
    k = min(n, math.ceil(topk * n)) if isinstance(topk, float) else min(topk, n)
    order = sorted(range(n), key=lambda i: (-float(importance[i]), i))
    return set(order[:k])


@pytest.mark.parametrize("topk", [1, 150, 0.05, 0.5, 1.0])
def test_part_sets_and_overlap_equal_python_sets(parts, topk):
    sets = part_topk_sets({p: Ranking(v) for p, v in parts.items()}, topk)
    assert list(sets) == list(PARTS)
    py = {p: brute_topk(v, topk) for p, v in parts.items()}
    for p in PARTS:
        assert set(sets[p].tolist()) == py[p]
    ov = overlap_matrix(sets, 3000)
    for (i, a), (j, b) in itertools.product(enumerate(PARTS), repeat=2):
        inter = len(py[a] & py[b])
        assert ov.intersection[i, j] == inter
        assert ov.jaccard[i, j] == pytest.approx(inter / len(py[a] | py[b]), abs=1e-15)
        assert ov.overlap_fraction[i, j] == pytest.approx(inter / min(len(py[a]), len(py[b])), abs=1e-15)
    assert ov.sizes.tolist() == [len(py[p]) for p in PARTS]


def test_overlap_heatmap_shows_the_matrix(parts):
    sets = part_topk_sets({p: Ranking(v) for p, v in parts.items()}, 200)
    py = {p: set(s.tolist()) for p, s in sets.items()}
    ov = overlap_matrix(sets, 3000)
    jac = [[len(py[a] & py[b]) / len(py[a] | py[b]) for b in PARTS] for a in PARTS]
    fig = overlap_heatmap(ov, "jaccard")
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), jac, atol=1e-15)
    assert list(fig.data[0].x) == list(PARTS) == list(fig.data[0].y)
    fig = overlap_heatmap(ov, "intersection")
    assert np.asarray(fig.data[0].z).tolist() == [[len(py[a] & py[b]) for b in PARTS] for a in PARTS]
    fig = overlap_heatmap(ov, "overlap")
    np.testing.assert_allclose(
        np.asarray(fig.data[0].z, dtype=float),
        [[100 * len(py[a] & py[b]) / min(len(py[a]), len(py[b])) for b in PARTS] for a in PARTS],
    )
    assert fig.layout.title.text and fig.layout.xaxis.title.text == "part"
    with pytest.raises(ValueError, match="value must be"):
        overlap_heatmap(ov, "cosine")


def test_overlap_checks_its_input():
    with pytest.raises(ValueError, match="outside"):
        overlap_matrix({"a": np.array([0, 10])}, 10)
    with pytest.raises(ValueError, match="integer"):
        overlap_matrix({"a": np.array([0.5])}, 10)
    with pytest.raises(ValueError, match="at least one"):
        overlap_matrix({}, 10)


def python_patterns(sets: dict) -> Counter:
    names = list(sets)
    union = set().union(*sets.values())
    return Counter(tuple(x in sets[n] for n in names) for x in union)


@pytest.mark.parametrize("chosen", [PARTS[:2], PARTS[1:4], PARTS])
def test_intersection_patterns_equal_python_sets(parts, chosen):
    rankings = {p: Ranking(parts[p]) for p in chosen}
    sets = part_topk_sets(rankings, 0.2)
    pat = intersection_patterns(sets, 3000)
    expected = python_patterns({p: set(s.tolist()) for p, s in sets.items()})
    got = {tuple(row.tolist()): int(c) for row, c in zip(pat.membership, pat.counts)}
    assert got == dict(expected)
    assert list(pat.counts) == sorted(pat.counts, reverse=True)
    assert sum(pat.counts) == len(set().union(*(set(s.tolist()) for s in sets.values())))
    fig = upset_figure(pat, "0.2")
    bars = fig.data[0]
    labels = [" & ".join(n for n, inside in zip(chosen, key) if inside) for key in got]
    assert dict(zip(bars.x, bars.y)) == {label: got[key] for label, key in zip(labels, got)}
    assert fig.layout.yaxis.title.text == "dims in exactly this pattern"


def test_restricted_patterns_equal_python_sets_of_the_subset(parts):
    sets = part_topk_sets({p: Ranking(v) for p, v in parts.items()}, 0.15)
    full = intersection_patterns(sets, 3000)
    for r in (1, 2, 3, 4):
        for chosen in itertools.combinations(PARTS, r):
            sub = restrict_patterns(full, chosen)
            expected = python_patterns({p: set(sets[p].tolist()) for p in chosen})
            assert {tuple(row.tolist()): int(c) for row, c in zip(sub.membership, sub.counts)} == dict(expected)
            assert sub.names == chosen and sub.set_sizes.tolist() == [sets[p].size for p in chosen]
            direct = intersection_patterns({p: sets[p] for p in chosen}, 3000)
            assert (
                sub.counts.tolist() == direct.counts.tolist() and sub.membership.tolist() == direct.membership.tolist()
            )
    with pytest.raises(ValueError, match="subset"):
        restrict_patterns(full, ["nope"])


def test_patterns_refuse_too_many_sets():
    with pytest.raises(ValueError, match="at most 8"):
        intersection_patterns({str(i): np.array([i]) for i in range(9)}, 20)


def test_spearman_exact_equals_scipy(parts):
    sp = spearman_matrix(parts)
    assert sp.exact and sp.n_used == 3000 and sp.seed is None
    for (i, a), (j, b) in itertools.product(enumerate(PARTS), repeat=2):
        assert sp.rho[i, j] == pytest.approx(scipy.stats.spearmanr(parts[a], parts[b]).statistic, abs=1e-12)
    fig = spearman_heatmap(sp)
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), sp.rho)
    assert "all 3,000 dims" in fig.layout.title.text


def test_spearman_with_ties_and_constant_vector():
    a = np.array([1, 1, 2, 3, 3, 3, 0, 5], dtype=np.float32)
    b = np.array([2, 1, 1, 3, 4, 3, 0, 9], dtype=np.float32)
    sp = spearman_matrix({"a": a, "b": b, "zero": np.zeros(8, dtype=np.float32)})
    assert sp.rho[0, 1] == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(sp.rho[2, 0]) and np.isnan(sp.rho[2, 2])


def test_spearman_above_the_limit_uses_the_stated_seeded_sample(parts):
    sp = spearman_matrix(parts, exact_limit=1000, sample_size=700, seed=5)
    assert not sp.exact and sp.n_used == 700 and sp.seed == 5
    idx = np.sort(np.random.default_rng(5).choice(3000, size=700, replace=False))
    np.testing.assert_array_equal(sample_indices(3000, 700, 5), idx)
    a, b = parts["encoder-weight"][idx], parts["decoder-sum"][idx]
    assert sp.rho[0, 3] == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert "sample of 700 of 3,000 dims (seed 5)" in spearman_heatmap(sp).layout.title.text


def test_spearman_drops_nan_dims():
    a = np.array([1, 2, np.nan, 4, 5, 7], dtype=np.float32)
    b = np.array([2, 1, 3, 5, 4, 6], dtype=np.float32)
    sp = spearman_matrix({"a": a, "b": b})
    ok = ~np.isnan(a)
    assert sp.n_nan_dropped == 1 and sp.n_used == 5
    assert sp.rho[0, 1] == pytest.approx(scipy.stats.spearmanr(a[ok], b[ok]).statistic, abs=1e-12)


def test_scatter_sample_and_figure(parts):
    x, y = parts["decoder-weight"], parts["decoder-bias"].copy()
    y[:50] = 0.0
    s = paired_sample(x, y, size=400, seed=2)
    idx = np.sort(np.random.default_rng(2).choice(3000, size=400, replace=False))
    np.testing.assert_array_equal(s.indices, idx)
    fig = importance_scatter(s, "decoder-weight", "decoder-bias")
    ok = (x[idx] > 0) & (y[idx] > 0)
    np.testing.assert_array_equal(fig.data[0].x, x[idx][ok].astype(np.float64))
    np.testing.assert_array_equal(fig.data[0].y, y[idx][ok].astype(np.float64))
    title = fig.layout.title.text
    assert "sample of 400 of 3,000 dims (seed 2)" in title
    hidden = int((~ok).sum())
    assert (f"{hidden:,} with a zero" in title) == (hidden > 0)
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
