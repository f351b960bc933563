"""The streaming path (rankings built from the weight file block by block, kept on disk) selects
exactly what the in-memory path selects; the cache is reused, keyed by the file, and bounded."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradiend_core.checkpoint.weights as weights_mod
from gradiend_core.analysis.locate import selection_breakdown
from gradiend_core.checkpoint import open_checkpoint, read_checkpoint, write_checkpoint
from gradiend_core.checkpoint.format import Architecture
from gradiend_core.pruning.prune import prune_state_dict
from gradiend_core.ranking import store
from gradiend_core.ranking.importance import PARTS, weight_importance
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.ranking.store import disk as store_disk
from gradiend_core.selection.rule import select
from gradiend_core.space.param_map import ParamMap
from gradiend_core.util.cache import dir_bytes, evict
from gradiend_core.util.units import parse_bytes

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, float("inf"), float("-inf"), float("nan"), 1e-42]


@st.composite
def checkpoints(draw):
    """A small GRADIEND with ties, zeros, NaN and infinities in its weights, and a param map."""
    n = draw(st.integers(1, 300))
    latent = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["float32", "bfloat16", "float16"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    enc = rng.standard_normal((latent, n)).astype(np.float32)
    dec = rng.standard_normal((n, latent)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for arr in (enc, dec, bias):
        flat = arr.reshape(-1)
        hits = rng.integers(0, flat.size, size=draw(st.integers(0, max(1, flat.size // 4))))
        flat[hits] = rng.choice(SPECIAL, size=hits.size)
        if draw(st.booleans()):  # exact ties
            flat[rng.integers(0, flat.size, size=flat.size // 3)] = flat[0]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5)))) if n > 1 else []
    sizes = np.diff([0, *cuts, n])
    pmap = ParamMap.full([(f"p{i}.weight", (int(s),)) for i, s in enumerate(sizes)])
    torch_dtype = getattr(torch, dtype)
    state = {
        "encoder.0.linear.weight": torch.from_numpy(enc).to(torch_dtype),
        "encoder.0.linear.bias": torch.zeros(latent, dtype=torch_dtype),
        "decoder.0.linear.weight": torch.from_numpy(dec).to(torch_dtype),
        "decoder.0.linear.bias": torch.from_numpy(bias).to(torch_dtype),
    }
    block = draw(st.sampled_from([1, 7, 64, 1 << 22]))
    return Architecture(n, latent, torch_dtype=dtype), pmap, state, block


def _write(tmp: Path, arch, pmap, state) -> Path:
    import uuid

    return write_checkpoint(
        tmp / uuid.uuid4().hex[:8], architecture=arch, param_map=pmap, state_dict=state, metadata={}
    )


@SETTINGS
@given(checkpoints(), st.data())
def test_streamed_rankings_select_exactly_what_in_memory_rankings_select(tmp_path, monkeypatch, ck, data):
    arch, pmap, state, block = ck
    monkeypatch.setattr(weights_mod, "BLOCK_DIMS", block)
    path = _write(tmp_path, arch, pmap, state)
    loaded = read_checkpoint(path)
    n = arch.input_dim
    for part in PARTS:
        mem = Ranking(weight_importance(loaded.state_dict, part), pmap.local_offsets)
        store.clear_memory()
        layout = data.draw(st.sampled_from(["never", "now", "prefix"]))
        lazy = open_checkpoint(path)
        streamed = store.ranking_for(lazy, part, layout="now" if layout == "now" else "never")
        assert not lazy.loaded and streamed.has_layout == (layout == "now")
        if layout == "prefix":  # the highest buckets only, down to a drawn bucket boundary
            ends = np.cumsum(streamed.counts[::-1])
            dims = int(data.draw(st.sampled_from(sorted(set(ends[ends > 0].tolist())))))
            store_disk.attach_layout(lazy, part, streamed, None, dims)
            assert streamed.layout_dims == dims and len(streamed.order) == dims
        np.testing.assert_array_equal(streamed.counts, mem.counts)
        assert streamed.n_zero == mem.n_zero and streamed.n_nan == mem.n_nan and streamed.n_inf == mem.n_inf
        mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        mask = None if not mask.any() or data.draw(st.booleans()) else mask
        topk = data.draw(st.one_of(st.none(), st.integers(1, n + 3), st.floats(1e-6, 1.0)))
        threshold = data.draw(st.one_of(st.none(), st.sampled_from([0.0, 0.25, 1.0, 2.5])))
        if mask is None and topk is None and threshold is None:
            topk = 1
        try:
            expected = select(mem, mask=mask, topk=topk, threshold=threshold)
        except Exception as e:  # nothing passes the threshold: both paths say so
            with pytest.raises(type(e)):
                select(streamed, mask=mask, topk=topk, threshold=threshold)
            continue
        got = select(streamed, mask=mask, topk=topk, threshold=threshold)
        assert (got.k, got.n_after_mask, got.n_after_threshold) == (
            expected.k,
            expected.n_after_mask,
            expected.n_after_threshold,
        )
        np.testing.assert_array_equal(got.keep, expected.keep)
        assert math.isclose(got.kept_mass, expected.kept_mass, rel_tol=1e-12, abs_tol=1e-30)
        assert (math.isnan(got.cut) and math.isnan(expected.cut)) or got.cut == expected.cut
        np.testing.assert_array_equal(
            got.dims.param_counts_top(got.k)[0], expected.dims.param_counts_top(expected.k)[0]
        )
        # per parameter, from the kept index set and the importance vector (masked views count in tables)
        offsets = np.asarray(pmap.local_offsets, dtype=np.int64)
        pid = np.searchsorted(offsets, expected.keep, side="right") - 1
        imp = mem.importance_vector()[expected.keep].astype(np.float64)
        imp[~np.isfinite(imp)] = 0.0
        counts, mass = got.dims.param_counts_top(got.k)
        np.testing.assert_array_equal(counts, np.bincount(pid, minlength=len(offsets) - 1))
        if mass is not None:
            np.testing.assert_allclose(mass, np.bincount(pid, weights=imp, minlength=len(offsets) - 1), rtol=1e-9)
        np.testing.assert_array_equal(got.dims.ranked(got.k), expected.dims.ranked(expected.k))
        idx = np.unique(np.random.default_rng(0).integers(0, n, size=min(n, 20)))
        np.testing.assert_array_equal(streamed.values_at(idx), mem.values_at(idx))
        bs, bm = selection_breakdown(pmap, streamed, got), selection_breakdown(pmap, mem, expected)
        np.testing.assert_array_equal(bs.kept, bm.kept)
        np.testing.assert_allclose(bs.importance_kept, bm.importance_kept, rtol=1e-12, atol=1e-30)
        np.testing.assert_allclose(bs.importance_total, bm.importance_total, rtol=1e-12, atol=1e-30)


def test_gathered_pruned_weights_equal_the_sliced_loaded_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_mod, "BLOCK_DIMS", 5)
    rng = np.random.default_rng(1)
    n, latent = 103, 2
    state = {
        "encoder.0.linear.weight": torch.from_numpy(rng.standard_normal((latent, n)).astype(np.float32)),
        "encoder.0.linear.bias": torch.ones(latent),
        "decoder.0.linear.weight": torch.from_numpy(rng.standard_normal((n, latent)).astype(np.float32)),
        "decoder.0.linear.bias": torch.from_numpy(rng.standard_normal(n).astype(np.float32)),
    }
    path = _write(tmp_path, Architecture(n, latent), ParamMap.full([("w", (n,))]), state)
    from gradiend_core.pruning.prune import gather_pruned_weights

    for keep in (np.arange(n), np.array([0]), np.array([3, 4, 5, 90, 102]), np.arange(0, n, 7)):
        got = gather_pruned_weights(open_checkpoint(path), keep)
        want = prune_state_dict(read_checkpoint(path).state_dict, keep)
        assert list(got) == list(want)
        for k in want:
            assert torch.equal(got[k], want[k]), k


def test_a_summarised_checkpoint_reopens_from_the_cache_without_reading_weights(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    n = 500
    state = {
        "encoder.0.linear.weight": torch.from_numpy(rng.standard_normal((1, n)).astype(np.float32)),
        "encoder.0.linear.bias": torch.zeros(1),
        "decoder.0.linear.weight": torch.from_numpy(rng.standard_normal((n, 1)).astype(np.float32)),
        "decoder.0.linear.bias": torch.zeros(n),
    }
    path = _write(tmp_path, Architecture(n, 1), ParamMap.full([("w", (n,))]), state)
    store.clear_memory()
    first = store.ranking_for(open_checkpoint(path), "decoder-weight", layout="now")
    store.clear_memory()

    def no_pass(*a, **k):
        raise AssertionError("the weights were streamed again")

    monkeypatch.setattr(store_disk, "iter_part_importance", no_pass)
    again = store.ranking_for(open_checkpoint(path), "decoder-weight", layout="now")
    np.testing.assert_array_equal(again.counts, first.counts)
    np.testing.assert_array_equal(select(again, topk=37).keep, select(first, topk=37).keep)
    # a changed weight file is another file: it is summarised anew
    monkeypatch.undo()
    state["decoder.0.linear.weight"] = -state["decoder.0.linear.weight"] * 2
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    os.utime(path / "model.safetensors", ns=(1, 1))
    changed = store.ranking_for(open_checkpoint(path), "decoder-weight", layout="never")
    assert changed.total == pytest.approx(2 * first.total, rel=1e-6)


def test_the_cache_is_bounded_in_bytes_least_recently_used_first(tmp_path):
    root = tmp_path / "rankings"
    entries = []
    for i, size in enumerate((4000, 3000, 2000)):
        e = root / f"id{i}" / "decoder-weight.layout"
        e.mkdir(parents=True)
        (e / "order.npy").write_bytes(b"x" * size)
        os.utime(e, (100 + i, 100 + i))  # last used: the entry directory's modification time
        entries.append(e)
    assert dir_bytes(root) == 9000
    removed = evict(root, budget=5500)
    assert removed == [entries[0]]  # the least recently used goes first, and only as many as needed
    assert not entries[0].exists() and entries[1].exists() and entries[2].exists()
    assert dir_bytes(root) <= 5500
    assert evict(root, budget=0, keep=(entries[2],)) == [entries[1]] and entries[2].exists()
    assert parse_bytes("16G") == 16 * 1024**3 and parse_bytes("512M") == 512 * 1024**2 and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_cli_and_export_never_load_the_model(tmp_path, monkeypatch, capsys):
    """The CLI, the plan and the export read blocks of the weight file; the whole model never."""
    from gradiend_core.checkpoint import WeightSource
    from gradiend_core.cli import main

    sample = Path(__file__).resolve().parent.parent / "sample_models" / "number-post-pruned"
    real = WeightSource.read_all

    def refuse(self, progress=None):
        if self.path.resolve() == (sample / "model.safetensors").resolve():
            raise AssertionError("the source's weights were loaded whole")
        return real(self, progress)  # the export is read back whole to verify it: that is its own, small file

    monkeypatch.setattr(WeightSource, "read_all", refuse)
    assert main(["prune", str(sample), "--topk", "0.1", "--dry-run", "--json"]) == 0
    assert main(["prune", str(sample), "--topk", "0.1", "--threshold", "1e-4", "--out", str(tmp_path / "o")]) == 0
    assert main(["info", str(sample)]) == 0
    monkeypatch.undo()
    out = read_checkpoint(tmp_path / "o")
    imp = read_checkpoint(sample).state_dict["decoder.0.linear.weight"].abs().sum(1).numpy()
    n_left = int(np.count_nonzero(imp >= np.float32(1e-4)))
    assert out.architecture.input_dim == math.ceil(0.1 * n_left)


def test_a_layout_too_large_for_the_cache_is_laid_out_for_the_highest_buckets(tmp_path, monkeypatch):
    """Beyond half the cache budget the background layout holds the highest buckets only (up to a
    quarter of the dims); cuts inside and below it select what the in-memory ranking selects."""
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(tmp_path / "cache"))
    n = 4000
    rng = np.random.default_rng(3)
    dec = torch.from_numpy(rng.lognormal(0, 2, size=(n, 1)).astype(np.float32))
    state = {
        "encoder.0.linear.weight": torch.from_numpy(rng.standard_normal((1, n)).astype(np.float32)),
        "encoder.0.linear.bias": torch.zeros(1),
        "decoder.0.linear.weight": dec,
        "decoder.0.linear.bias": torch.from_numpy(rng.standard_normal(n).astype(np.float32)),
    }
    pmap = ParamMap.full([("a.weight", (40, 50)), ("b.weight", (2000,))])
    path = _write(tmp_path, Architecture(n, 1, torch_dtype="float32"), pmap, state)
    monkeypatch.setenv("GRADIEND_CORE_CACHE_BYTES", str(8 * n))  # half of it holds n / 2 dims
    store.clear_memory()
    lazy = open_checkpoint(path)
    streamed = store.ranking_for(lazy, "decoder-weight", layout="background")
    assert store.wait_for_layouts(120)
    assert streamed.has_layout and 0 < streamed.layout_dims <= n // 4
    # the tables the layout pass brings serve the ranked dims made before it (O(buckets) per-parameter counts)
    assert streamed.params is not None and streamed.dims().params is streamed.params
    ends = np.cumsum(streamed.counts[::-1])
    assert streamed.layout_dims in ends.tolist()  # a bucket boundary
    assert len(np.load(next((tmp_path / "cache").rglob("order.npy")), mmap_mode="r")) == streamed.layout_dims
    mem = Ranking(weight_importance(read_checkpoint(path).state_dict, "decoder-weight"), pmap.local_offsets)
    for topk in (1, 10, streamed.layout_dims, streamed.layout_dims + 1, n // 2, n):
        got, expected = select(streamed, topk=topk), select(mem, topk=topk)
        np.testing.assert_array_equal(got.keep, expected.keep)
        np.testing.assert_array_equal(got.dims.ranked(topk), expected.dims.ranked(topk))
        np.testing.assert_array_equal(got.dims.param_counts_top(topk)[0], expected.dims.param_counts_top(topk)[0])
    with pytest.raises(ValueError, match="highest buckets"):
        streamed.attach_layout(streamed.order[:-1], streamed.values[:-1])  # not a bucket boundary
