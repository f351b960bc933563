"""The open pass reads each weight tensor once and summarises all four parts exactly as the
in-memory path does; every fast answer (summaries, bounds, layouts) agrees with ``select`` on the
full importance vector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_rank_store import SETTINGS, SPECIAL, _write, checkpoints

import gradiend_core.checkpoint.weights as weights_mod
from gradiend_core.checkpoint import open_checkpoint
from gradiend_core.checkpoint.tensor_files import SafetensorsFile
from gradiend_core.pruning.reduction import model_disk_bytes_bounds, reduction_report
from gradiend_core.ranking import kernels, store
from gradiend_core.ranking.bounds import Bounds
from gradiend_core.ranking.importance import PARTS, weight_importance
from gradiend_core.ranking.keys import finite_or_zero, sort_keys
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.ranking.store import disk as store_disk
from gradiend_core.ranking.store.scan import TableAccumulator, scan_weights
from gradiend_core.selection.rule import resolve_k, select, select_bounds
from gradiend_core.util.units import format_bytes, format_count, format_percent


@st.composite
def blocks_of_values(draw):
    n = draw(st.integers(0, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e20]))
    v = (rng.standard_normal(n) * scale).astype(np.float32)
    if n:
        hits = rng.integers(0, n, size=n // 3)
        v[hits] = rng.choice(SPECIAL, size=hits.size)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=4))))
    return v, np.array([0, *cuts, n], dtype=np.int64)


@SETTINGS
@given(blocks_of_values(), st.integers(0, 3))
def test_compiled_loop_counts_exactly_what_numpy_counts(vb, split):
    v, bounds = vb
    offsets = np.unique(bounds)
    if offsets.size < 2:
        offsets = np.array([0, v.size], dtype=np.int64)
    fast = TableAccumulator(offsets)
    slow = TableAccumulator(offsets, (kernels.accumulate_numpy, _numpy_window))
    cut = v.size * split // 3  # the same values in two blocks: windows grow between them
    for acc in (fast, slow):
        acc.add(0, v[:cut])
        acc.add(cut, v[cut:])
    (sf, pf), (ss, ps) = fast.finish(), slow.finish()
    np.testing.assert_array_equal(sf.counts, ss.counts)
    np.testing.assert_allclose(sf.mass, ss.mass, rtol=1e-12)
    assert sf.n_zero == ss.n_zero == int(np.count_nonzero(v == 0))
    np.testing.assert_array_equal(pf.counts, ps.counts)
    assert (sf.fine.lo, sf.fine.counts.tolist()) == (ss.fine.lo, ss.fine.counts.tolist())
    ref = Ranking(v if v.size else np.zeros(1, np.float32), offsets if v.size else None)
    if v.size:
        np.testing.assert_array_equal(sf.counts, ref.counts)
        np.testing.assert_allclose(sf.mass, ref.mass, rtol=1e-12, atol=0)
        assert (sf.fine.lo, sf.fine.counts.tolist()) == (ref.summary.fine.lo, ref.summary.fine.counts.tolist())
        np.testing.assert_array_equal(pf.counts, ref.params.counts)
        np.testing.assert_allclose(pf.mass, ref.params.mass, rtol=1e-12, atol=0)


def _numpy_window(values):
    v = values[~np.isnan(values)]
    if v.size == 0:
        return 2**32 - 1, 0
    k = sort_keys(v)
    return int(k.min()), int(k.max())


@SETTINGS
@given(checkpoints())
def test_the_open_pass_reads_each_tensor_once_and_summarises_every_part(tmp_path, monkeypatch, ck):
    arch, pmap, state, block = ck
    monkeypatch.setattr(weights_mod, "BLOCK_DIMS", block)
    path = _write(tmp_path, arch, pmap, state)
    read = {}
    real = SafetensorsFile.read_range

    def counting(self, name, start, stop, fd=None):
        read[name] = read.get(name, 0) + (stop - start)
        return real(self, name, start, stop, fd)

    monkeypatch.setattr(SafetensorsFile, "read_range", counting)
    data = open_checkpoint(path)
    seen = []
    scan = scan_weights(data, lambda f, what: seen.append(f))
    monkeypatch.setattr(SafetensorsFile, "read_range", real)
    spot = {k: v for k, v in read.items()}
    for key in ("encoder.0.linear.weight", "decoder.0.linear.weight", "decoder.0.linear.bias"):
        numel = state[key].numel()
        assert spot.get(key, 0) - numel <= min(numel, 8 * 3 * arch.latent_dim), key  # once (plus the spot check)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    for part in PARTS:
        imp = weight_importance(state, part)
        ref = Ranking(imp, pmap.local_offsets)
        got = scan.parts[part]
        np.testing.assert_array_equal(got.summary.counts, ref.counts)
        np.testing.assert_allclose(got.summary.mass, ref.mass, rtol=1e-12, atol=0)
        assert got.summary.n_zero == ref.n_zero
        assert (got.summary.fine.lo, got.summary.fine.counts.tolist()) == (
            ref.summary.fine.lo,
            ref.summary.fine.counts.tolist(),
        )
        np.testing.assert_array_equal(got.params.counts, ref.params.counts)
        want = imp[scan.sample]
        same = (got.sample.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got.sample) & np.isnan(want))
        assert same.all()


def _check_bounds(dims, ref_dims, imp, k, threshold):
    """Every bound holds the exact answer, and its shown text is the exact answer's."""
    mb = dims.mass_top_bounds(k)
    exact_mass = ref_dims.mass_top(k)
    assert mb.lo <= exact_mass <= mb.hi or math.isclose(mb.lo, exact_mass, rel_tol=1e-12), (k, mb, exact_mass)
    total = ref_dims.ranking.total
    if total > 0:
        shown = mb.map(lambda m: m / total).shown(format_percent)
        assert shown is None or shown == format_percent(exact_mass / total)
    if dims.params is not None:
        pb = dims.param_counts_top_bounds(k)
        exact_p = ref_dims.param_counts_top(k, with_mass=False)[0]
        assert (pb.lo <= exact_p).all() and (exact_p <= pb.hi).all()
        assert int(pb.lo.sum()) <= k <= int(pb.hi.sum())
    vb = dims.value_at_bounds(k - 1)
    v = ref_dims.value_at(k - 1)
    assert (np.isnan(v) and np.isnan(vb.lo)) or vb.lo <= v <= vb.hi, (vb, v)
    if threshold is not None:
        cb = dims.count_at_least_bounds(threshold)
        c = ref_dims.count_at_least(threshold)
        assert cb.lo <= c <= cb.hi
        assert cb.shown(format_count) in (None, format_count(c))


@SETTINGS
@given(checkpoints(), st.data())
def test_every_fast_path_selects_exactly_what_select_on_the_vector_selects(tmp_path, monkeypatch, ck, data):
    """Bounds hold the exact answer and layouts, streams and the vector select the same dims: any
    k, thresholds, masks, NaN/inf/zeros/ties, before a layout exists and after."""
    arch, pmap, state, block = ck
    monkeypatch.setattr(weights_mod, "BLOCK_DIMS", block)
    path = _write(tmp_path, arch, pmap, state)
    lazy = open_checkpoint(path)
    rankings = store.open_rankings(lazy)
    n = arch.input_dim
    part = data.draw(st.sampled_from(PARTS))
    imp = weight_importance(state, part)
    ref = Ranking(imp, pmap.local_offsets)
    streamed = rankings[part]
    mask = None
    if data.draw(st.booleans()):
        mask = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        if not mask.any():
            mask[data.draw(st.integers(0, n - 1))] = True
    finite = imp[np.isfinite(imp)]
    threshold = data.draw(
        st.one_of(st.none(), st.sampled_from([0.0, 1e-42, 0.5, 1.0]), st.sampled_from(finite.tolist() or [0.0]))
    )
    topk = data.draw(st.one_of(st.none(), st.integers(1, n + 3), st.floats(1e-6, 1.0)))
    if mask is None and threshold is None and topk is None:
        topk = 1
    for stage in ("before the layout", "with the layout"):
        if stage == "with the layout":
            layout_dims = data.draw(st.sampled_from([None, "prefix"]))
            dims = None if layout_dims is None else max(1, int(np.cumsum(streamed.counts[::-1])[-1] // 2))
            if dims is not None:
                ends = np.cumsum(streamed.counts[::-1])
                dims = int(ends[np.searchsorted(ends, dims)])
            store_disk.attach_layout(lazy, part, streamed, None, dims)
        sel_ref = _select_or_error(ref, mask, threshold, topk)
        bounds = _bounds_or_error(streamed, mask, threshold, topk)
        if isinstance(sel_ref, Exception):
            assert isinstance(bounds, Exception) or bounds.n_after_threshold.lo == 0
            continue
        nb = bounds.n_after_threshold
        assert nb.lo <= sel_ref.n_after_threshold <= nb.hi
        assert bounds.k.lo <= sel_ref.k <= bounds.k.hi
        if stage == "with the layout" and streamed.layout_dims == n:
            assert bounds.k.exact and bounds.kept_mass().exact and bounds.n_after_threshold.exact
        km = bounds.kept_mass()
        assert km.lo <= sel_ref.kept_mass <= km.hi or math.isclose(km.lo, sel_ref.kept_mass, rel_tol=1e-12)
        if bounds.k.exact and sel_ref.k:
            ref_dims = ref.dims(mask)
            _check_bounds(streamed.dims(mask), ref_dims, imp, sel_ref.k, threshold)
            hist = bounds.dims.bucket_counts_top(sel_ref.k)
            np.testing.assert_array_equal(hist, ref_dims.bucket_counts_top(sel_ref.k))
        disk = model_disk_bytes_bounds(lazy, bounds)
        exact_disk = reduction_report(lazy, sel_ref, ref, part).model_disk_bytes_after
        assert disk.lo <= exact_disk <= disk.hi
        assert disk.shown(format_bytes) in (None, format_bytes(exact_disk))
        sel = select(streamed, mask=mask, threshold=threshold, topk=topk)
        assert sel.k == sel_ref.k and sel.n_after_threshold == sel_ref.n_after_threshold
        np.testing.assert_array_equal(sel.keep, sel_ref.keep)
        assert math.isclose(sel.kept_mass, sel_ref.kept_mass, rel_tol=1e-9, abs_tol=1e-300)
        if sel_ref.k:
            assert sel.cut is not None and ((np.isnan(sel.cut) and np.isnan(sel_ref.cut)) or sel.cut == sel_ref.cut), (
                sel.cut,
                sel_ref.cut,
            )
        # the rule, stated independently: sort all (mask, threshold) survivors by (-value, index)
        alive = np.ones(n, dtype=bool) if mask is None else mask.copy()
        if threshold is not None:
            alive &= ~np.isnan(imp) & (imp >= np.float32(threshold))
        idx = np.flatnonzero(alive)
        order = idx[np.lexsort((idx, ~sort_keys(imp[idx])))]
        k = len(idx) if topk is None else resolve_k(topk, len(idx))
        np.testing.assert_array_equal(sel.keep, np.sort(order[:k]))
        assert math.isclose(float(finite_or_zero(imp[order[:k]]).sum()), sel.kept_mass, rel_tol=1e-9, abs_tol=1e-300)


def _select_or_error(ranking, mask, threshold, topk):
    try:
        return select(ranking, mask=mask, threshold=threshold, topk=topk)
    except Exception as e:  # noqa: BLE001 - compared with the fast path's error
        return e


def _bounds_or_error(ranking, mask, threshold, topk):
    try:
        return select_bounds(ranking, mask=mask, threshold=threshold, topk=topk)
    except Exception as e:  # noqa: BLE001
        return e


def test_bounds_show_the_exact_text_or_a_range_never_a_wrong_number():
    b = Bounds(0.20611, 0.20612)
    assert b.shown(format_percent) == "20.6 %" and not b.exact
    assert Bounds(0.2044, 0.2046).shown(format_percent) is None
    assert Bounds.of(3).exact and Bounds.of(3).value == 3
    with pytest.raises(ValueError, match="only bounded"):
        _ = Bounds(1, 2).value
    assert Bounds(1024 * 1024, 1024 * 1024 + 10).shown(format_bytes) == "1.0 MiB"


def test_bounds_at_scale_are_tight_enough_to_show_exact_text():
    """On 2M heavy-tailed dims without a layout, the preview's texts are exact at once at every
    topk from 1 dim to 100 % and most thresholds (the fine bins decide them)."""
    rng = np.random.default_rng(0)
    imp = (rng.standard_exponential(2_000_000) ** 3).astype(np.float32)
    offsets = np.array([0, 700_000, 1_300_000, 2_000_000])
    full = Ranking(imp, offsets)
    streamed = Ranking.from_stream(full.summary, lambda: iter([(0, imp)]), full.params, None, offsets)
    shown = 0
    for topk in [1, 10, 1000, 0.001, 0.01, 0.05, 0.1, 0.5, 0.9, 1.0]:
        b = select_bounds(streamed, topk=topk)
        exact = select(full, topk=topk)
        text = b.kept_mass().map(lambda m: m / full.total).shown(format_percent)
        assert text in (None, format_percent(exact.kept_mass / full.total))
        shown += text is not None
    assert shown >= 8
    for t in [0.01, 0.1, 1.0, 10.0]:
        cb = select_bounds(streamed, threshold=t).n_after_threshold
        assert cb.shown(format_count) == format_count(int(np.sum(imp >= np.float32(t))))


def test_without_weights_in_a_file_rankings_are_in_memory(tmp_path):
    state = {
        "encoder.0.linear.weight": torch.ones(1, 4),
        "encoder.0.linear.bias": torch.zeros(1),
        "decoder.0.linear.weight": torch.arange(4.0).reshape(4, 1),
        "decoder.0.linear.bias": torch.zeros(4),
    }
    r = Ranking(weight_importance(state, "decoder-weight"))
    assert select_bounds(r, topk=2).k.value == 2


def test_the_top_sets_of_all_four_parts_take_one_pass(tmp_path, monkeypatch):
    """Compare parts needs every part's top-k set: one read of the weight file serves all four."""
    from gradiend_core.analysis.overlap import part_topk_sets
    from gradiend_core.checkpoint.weights import WeightSource

    rng = np.random.default_rng(5)
    n = 5000
    state = {
        "encoder.0.linear.weight": torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32)),
        "encoder.0.linear.bias": torch.zeros(2),
        "decoder.0.linear.weight": torch.from_numpy(rng.standard_normal((n, 2)).astype(np.float32)),
        "decoder.0.linear.bias": torch.from_numpy(rng.standard_normal(n).astype(np.float32)),
    }
    from gradiend_core.checkpoint.format import Architecture
    from gradiend_core.space.param_map import ParamMap

    path = _write(tmp_path, Architecture(n, 2), ParamMap.full([("a", (2000,)), ("b", (3000,))]), state)
    rankings = store.open_rankings(open_checkpoint(path))
    passes = []
    real = WeightSource.blocks
    monkeypatch.setattr(WeightSource, "blocks", lambda self, *a, **k: passes.append(1) or real(self, *a, **k))
    for topk in (0.05, 777, 1.0, 1):
        sets = part_topk_sets(rankings, topk)
        for part in PARTS:
            imp = weight_importance(state, part)
            np.testing.assert_array_equal(sets[part], select(Ranking(imp), topk=topk).keep)
    assert len(passes) <= 4  # at most one per topk (1.0 and repeated answers cost none)
