"""Retained mass and ECDF (gradiend_core.analysis.mass, dashboard.figures.distributions) against brute force:
a full sort and a sequential running sum, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradiend_core.ranking.ranking as ranking_mod
from dashboard.figures.distributions import ecdf_figure, retained_mass_figure
from gradiend_core.analysis.mass import count_for_mass, mass_profile, selection_point
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.rule import select


def brute_sorted(importance: np.ndarray) -> list:
    """Importance most important first, NaN last, ties by index: the selection rule, by hand."""

    def key(i):
        v = float(importance[i])
        return (math.isnan(v), 0.0 if math.isnan(v) else -v, i)

    return [float(importance[i]) for i in sorted(range(importance.size), key=key)]


def brute_cumsum(values: list) -> list:
    """Sequential float64 running sum; non-finite values count 0."""
    out, s = [], 0.0
    for v in values:
        s += v if math.isfinite(v) else 0.0
        out.append(s)
    return out


def brute_count(values: list, share: float) -> int:
    cum = brute_cumsum(values)
    return next(k + 1 for k, c in enumerate(cum) if c >= share * cum[-1])


@pytest.fixture(scope="module")
def heavy_tailed():
    rng = np.random.default_rng(3)
    return (rng.pareto(1.5, 20_000) * 1e-3).astype(np.float32)


def test_profile_equals_brute_force_cumsum(heavy_tailed):
    r = Ranking(heavy_tailed)
    prof = mass_profile(r, max_points=400, head=100)
    vals = brute_sorted(heavy_tailed)
    cum = brute_cumsum(vals)
    assert prof.total == pytest.approx(cum[-1], rel=1e-13)
    ks = prof.positions.tolist()
    assert ks[:100] == list(range(1, 101)) and prof.exact_ranks >= 100
    assert len(ks) <= 400 and ks == sorted(set(ks)) and ks[-1] == heavy_tailed.size
    np.testing.assert_allclose(prof.cum_mass, [cum[k - 1] for k in ks], rtol=1e-13)
    for share in (0.5, 0.9, 0.99):
        k, kept = prof.share_points[share]
        assert k == brute_count(vals, share)
        assert kept == pytest.approx(cum[k - 1] / cum[-1], rel=1e-13) and kept >= share


@pytest.mark.parametrize("share", [1e-6, 0.001, 0.25, 0.5, 0.731, 0.9, 0.99, 0.999999, 1.0])
def test_count_for_mass_equals_brute_force(heavy_tailed, share):
    r = Ranking(heavy_tailed)
    prof = mass_profile(r, head=10)
    assert count_for_mass(r, share, prof) == brute_count(brute_sorted(heavy_tailed), share)


def test_ties_and_small_chunks(monkeypatch):
    monkeypatch.setattr(ranking_mod, "BLOCK", 7)  # the per-bucket sums run over many blocks
    imp = np.repeat(np.array([3.0, 1.0, 0.5, 0.25], dtype=np.float32), [5, 10, 20, 40])
    np.random.default_rng(0).shuffle(imp)
    r = Ranking(imp)
    prof = mass_profile(r, head=3)
    vals = brute_sorted(imp)
    cum = brute_cumsum(vals)
    np.testing.assert_allclose(prof.cum_mass, [cum[k - 1] for k in prof.positions], rtol=1e-14)
    for share in (0.1, 0.4, 0.5, 0.8, 1.0):
        assert count_for_mass(r, share, prof) == brute_count(vals, share)
    # four distinct values: the ECDF is exact at each (bucket upper edges lie at or above them)
    assert prof.ecdf_y.tolist() == [40 / 75, 60 / 75, 70 / 75, 1.0]
    assert prof.ecdf_x.tolist() == sorted(prof.ecdf_x.tolist())
    for x, v in zip(prof.ecdf_x, (0.25, 0.5, 1.0, 3.0)):
        assert v <= x < v * (1 + 1 / 128)


def test_nan_and_inf_carry_no_mass_and_are_counted():
    imp = np.array([0.5, np.nan, np.inf, 0.0, 2.0, 0.0, 1.0, np.nan], dtype=np.float32)
    r = Ranking(imp)
    prof = mass_profile(r)
    assert (prof.n_total, prof.n_valid, prof.n_nan, prof.n_inf, prof.n_zero) == (8, 6, 2, 1, 2)
    assert prof.total == 3.5
    # ranked: inf, 2, 1, 0.5, 0, 0 -> cum 0, 2, 3, 3.5, 3.5, 3.5
    assert prof.positions.tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(prof.cum_mass, [0.0, 2.0, 3.0, 3.5, 3.5, 3.5])
    assert prof.share_points[0.5] == (2, 2.0 / 3.5)
    assert count_for_mass(r, 1.0, prof) == 4  # the zeros are not needed
    # ECDF over the 6 non-NaN dims, drawable values only (0 and inf are not)
    assert prof.ecdf_y.tolist() == [3 / 6, 4 / 6, 5 / 6]


def test_zero_total_has_no_counts():
    r = Ranking(np.zeros(10, dtype=np.float32))
    prof = mass_profile(r)
    assert prof.total == 0 and prof.share_points == {} and prof.ecdf_x.size == 0
    with pytest.raises(ValueError, match="no positive finite importance"):
        count_for_mass(r, 0.5, prof)
    assert np.isnan(prof.mass_share).all()


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5, float("nan")])
def test_invalid_share_is_refused(share, heavy_tailed):
    r = Ranking(heavy_tailed[:50])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        count_for_mass(r, share, mass_profile(r))


def test_selection_point_on_curve_without_mask_and_below_with_one(heavy_tailed):
    r = Ranking(heavy_tailed)
    prof = mass_profile(r, head=1000)
    cum = brute_cumsum(brute_sorted(heavy_tailed))
    sel = select(r, topk=250)
    x, y = selection_point(r, sel, prof)
    assert x == 250 / heavy_tailed.size
    assert y == pytest.approx(cum[249] / cum[-1], rel=1e-12)
    mask = np.zeros(heavy_tailed.size, dtype=bool)
    mask[::2] = True
    sel_m = select(r, topk=250, mask=mask)
    xm, ym = selection_point(r, sel_m, prof)
    brute = sum(float(heavy_tailed[i]) for i in sel_m.keep) / cum[-1]
    assert xm == x and ym == pytest.approx(brute, rel=1e-9) and ym <= y


def test_retained_mass_figure_data_equals_brute_force(heavy_tailed):
    r = Ranking(heavy_tailed)
    prof = mass_profile(r, max_points=400, head=50)
    sel = select(r, topk=0.1)
    fig = retained_mass_figure(prof, "decoder-weight", selection_point(r, sel, prof))
    vals = brute_sorted(heavy_tailed)
    cum = brute_cumsum(vals)
    curve = fig.data[0]
    ks = list(curve.customdata)
    assert ks[:50] == list(range(1, 51)) and ks[-1] == heavy_tailed.size
    np.testing.assert_array_equal(curve.x, [k / heavy_tailed.size for k in ks])
    np.testing.assert_allclose(curve.y, [cum[k - 1] / cum[-1] for k in ks], rtol=1e-13)
    markers = {t.name: (t.x[0], t.y[0]) for t in fig.data[1:]}
    for share in (0.5, 0.9, 0.99):
        k = brute_count(vals, share)
        assert markers[f"{share:.0%} of mass: {k:,} dims"] == pytest.approx(
            (k / heavy_tailed.size, cum[k - 1] / cum[-1])
        )
    k_sel = math.ceil(0.1 * heavy_tailed.size)
    assert markers["current selection"] == pytest.approx((k_sel / heavy_tailed.size, cum[k_sel - 1] / cum[-1]))
    assert fig.layout.xaxis.type == "log" and "log" in fig.layout.xaxis.title.text
    assert f"exact at {len(ks):,} ranks" in fig.layout.title.text


def test_ecdf_figure_equals_brute_force_ecdf(heavy_tailed):
    imp = heavy_tailed.copy()
    imp[:7] = 0.0  # zeros are not drawable on a log axis
    r = Ranking(imp)
    prof = mass_profile(r, max_points=300)
    fig = ecdf_figure(prof, "encoder-weight", cut=float(np.median(imp)))
    tr = fig.data[0]
    x = np.asarray(tr.x)
    assert 0 < len(x) <= 300 and (x > 0).all() and np.all(np.diff(x) > 0)
    brute = [np.count_nonzero(imp <= v) / imp.size for v in x]
    np.testing.assert_array_equal(tr.y, brute)
    assert x[-1] >= imp.max() and tr.y[-1] == 1.0
    assert "7 zeros" in fig.layout.title.text
    assert fig.layout.xaxis.type == "log"
    cut = next(t for t in fig.data if t.name.startswith("cut"))  # a legend entry, not a label on the curve
    assert cut.line.dash == "dash" and list(cut.x) == [float(np.median(imp))] * 2
