"""The paths taken for large checkpoints give the same results as the plain ones on small input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import gradiend_core.checkpoint as checkpoint
import gradiend_core.ranking.importance as importance
import gradiend_core.ranking.ranked_dims as ranked_dims
import gradiend_core.ranking.ranking as ranking_mod
import gradiend_core.selection.rule as selection
from gradiend_core import CheckpointError, read_checkpoint
from gradiend_core.analysis.distribution import cut_value, log_histogram


def test_buffered_safetensors_read_equals_library(tmp_path):
    tensors = {
        "a": torch.randn(7, 3),
        "b": torch.randn(5).to(torch.bfloat16),
        "c": torch.arange(9, dtype=torch.int32),
        "d": torch.zeros(0),
        "e": torch.randn(2, 2).to(torch.float16),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    ours = checkpoint.SafetensorsFile(path).read_all()
    lib = load_file(str(path))
    assert set(ours) == set(lib)
    for k in lib:
        assert ours[k].dtype == lib[k].dtype and torch.equal(ours[k], lib[k]), k


def test_buffered_read_rejects_truncated_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"w": torch.randn(1000)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        checkpoint.SafetensorsFile(path).read_all()


def test_checkpoint_read_in_small_blocks_equals_the_library_read(tmp_path, monkeypatch):
    torch.manual_seed(3)
    ref = RefModel(700, 2, {"p.weight": {"shape": (35, 20), "repr": "all"}}, device=torch.device("cpu"))
    ref.save_pretrained(str(tmp_path / "ck"))
    lib = load_file(str(tmp_path / "ck" / "model.safetensors"))
    monkeypatch.setattr(checkpoint.tensor_files, "READ_BLOCK", 100)
    ours = read_checkpoint(tmp_path / "ck")
    for k, v in lib.items():
        assert torch.equal(ours.state_dict[k], v), k


def test_chunked_importance_equals_one_shot(monkeypatch):
    torch.manual_seed(0)
    state = {
        "encoder.0.linear.weight": torch.randn(3, 1001),
        "encoder.0.linear.bias": torch.randn(3),
        "decoder.0.linear.weight": torch.randn(1001, 3),
        "decoder.0.linear.bias": torch.randn(1001),
    }
    expected = {
        "encoder-weight": state["encoder.0.linear.weight"].abs().sum(0),
        "decoder-weight": state["decoder.0.linear.weight"].abs().sum(1),
        "decoder-bias": state["decoder.0.linear.bias"].abs(),
        "decoder-sum": (state["decoder.0.linear.weight"].sum(1) + state["decoder.0.linear.bias"]).abs(),
    }
    monkeypatch.setattr(importance, "CHUNK", 64)
    for part, exp in expected.items():
        np.testing.assert_allclose(importance.weight_importance(state, part), exp.numpy(), rtol=1e-6, atol=0)


def test_bucketed_ranking_equals_full_sort_with_small_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    imp = np.abs(rng.standard_cauchy(5000)).astype(np.float32)
    imp[rng.integers(0, 5000, 50)] = np.nan
    imp[rng.integers(0, 5000, 50)] = 0.0
    imp[100:200] = imp[0]  # a block of exact ties
    monkeypatch.setattr(ranking_mod, "BLOCK", 97)
    r = ranking_mod.Ranking(imp)
    # full order by (importance desc, index asc), NaN last, computed independently with Python's sort
    exp_order = sorted(range(imp.size), key=lambda i: (1, 0.0, i) if math.isnan(imp[i]) else (0, -float(imp[i]), i))
    for k in (1, 7, 100, 150, 2500, 4999, 5000):
        assert r.dims().top(k).tolist() == sorted(exp_order[:k]), k
    for t in (0.0, float(np.nanmedian(imp)), float(imp[0])):
        assert r.dims().count_at_least(t) == int(np.sum(imp >= np.float32(t))), t
    assert r.dims().ranked(imp.size).tolist() == exp_order
    hist = log_histogram(r)
    assert hist.counts.sum() == int(np.sum(np.isfinite(imp) & (imp > 0)))
    assert hist.n_zero == int(np.sum(imp == 0)) and hist.n_nonfinite == int(np.sum(~np.isfinite(imp)))


def test_nan_payloads_rank_last_and_inf_first():
    # NaN bit patterns: quiet, signalling with a payload in the low bits, negative quiet
    bits = np.array([0x7FC00000, 0x7F800001, 0xFFC00000, 0x7F800000, 0x3F800000, 0], dtype=np.uint32)
    imp = bits.view(np.float32)  # nan, nan, nan, +inf, 1.0, 0.0
    r = ranking_mod.Ranking(imp)
    assert r.n_nan == 3 and r.n_nonfinite == 4 and r.n_zero == 1
    assert r.dims().top(1).tolist() == [3] and r.dims().top(3).tolist() == [3, 4, 5]
    assert r.dims().top(4).tolist() == [0, 3, 4, 5]  # the first NaN by index fills the fourth place
    assert r.dims().count_at_least(0.0) == 3


def test_histogram_and_cut_from_bucket_boundary_equal_a_pass_over_keep():
    rng = np.random.default_rng(11)
    imp = np.abs(rng.standard_cauchy(20_000)).astype(np.float32)
    imp[:300] = 0.0
    imp[300:320] = 1e-42  # denormals share the zero bucket
    r = ranking_mod.Ranking(imp)
    other = ranking_mod.Ranking(np.flip(imp).copy())  # a selection ranked by another part takes the slow path
    for topk in (1, 10, 0.3, 19_690, 19_700, 19_990):
        sel = selection.select(r, topk=topk)
        by_keep = selection.Selection(
            sel.input_dim, sel.n_after_mask, sel.n_after_threshold, sel.k, mask_array=sel.mask()
        )
        fast_hist, slow_hist = log_histogram(r, sel), log_histogram(r, by_keep)
        np.testing.assert_array_equal(fast_hist.kept_counts, slow_hist.kept_counts)
        assert fast_hist.zero_kept == slow_hist.zero_kept == int(np.sum(imp[sel.keep] == 0))
        assert cut_value(r, sel) == float(imp[sel.keep].min())
        assert cut_value(other, sel) is None and cut_value(r, by_keep) is None


def test_display_bins_are_never_narrower_than_a_bucket():
    """On a narrow range of values the kept bar must cover its cut, not sit beside it: display
    bins are at least one value bucket wide (values are placed at their bucket's middle)."""
    from gradiend_core.analysis.distribution import BUCKET_LOG10_WIDTH

    imp = np.array([0.0633, 0.0640, 0.0645, 0.0631, 0.0629, 0.0650, 0.0638, 0.0636], dtype=np.float32)
    r = ranking_mod.Ranking(imp)
    sel = selection.select(r, topk=1)
    hist = log_histogram(r, sel)
    assert hist.width >= BUCKET_LOG10_WIDTH * 0.999
    kept = np.flatnonzero(hist.kept_counts)
    cut = math.log10(cut_value(r, sel))
    assert kept.size == 1 and hist.log_edges[kept[0]] <= cut <= hist.log_edges[kept[0] + 1]


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=2.0**-100, max_value=2.0**100, width=32),
            st.sampled_from([0.0, math.inf, math.nan, 9.99999e-4, 1e-3, 1.0000001e-3, 10.0, 9.999999]),
        ),
        min_size=1,
        max_size=200,
    )
)
@settings(max_examples=200, deadline=None)
def test_the_largest_finite_decade_is_that_of_the_largest_finite_value(values):
    v = np.array(values, dtype=np.float32)
    finite = v[np.isfinite(v) & (v > 0)].astype(np.float64)
    expected = math.floor(math.log10(finite.max())) if finite.size else None
    assert ranking_mod.Ranking(v).largest_finite_decade() == expected


def test_last_answers_are_kept_within_one_byte_budget_for_the_process(monkeypatch):
    """A page asks each rerun for the same top-k: the last answer is kept, but all of them together
    stay within LAST_ANSWER_BYTES (the least recently kept go first)."""
    rng = np.random.default_rng(5)
    a = ranking_mod.Ranking(rng.random(4000, dtype=np.float32))
    b = ranking_mod.Ranking(rng.random(4000, dtype=np.float32))
    monkeypatch.setattr(ranked_dims, "LAST_ANSWER_BYTES", 1000 * 8 + 10)  # room for one answer of 1,000 dims
    ka = a.dims().top(1000)
    np.testing.assert_array_equal(ka, np.sort(np.argsort(-a.importance_vector(), kind="stable")[:1000]))
    assert a.dims().answer_bytes() == 8000 and a.dims().top(1000) is ka  # asked again: the kept answer
    b.dims().top(1000)
    assert a.dims().answer_bytes() == 0 and b.dims().answer_bytes() == 8000
    np.testing.assert_array_equal(a.dims().top(1000), ka)  # recomputed, the same
