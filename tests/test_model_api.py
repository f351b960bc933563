"""The reference-named model API of ``gradiend_core.ParamMappedGradiendModel``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from hypothesis import given, settings
from hypothesis import strategies as st
from refmodels import NUMELS, PARAMS, UNPRUNED_LENGTH, random_inputs, ref_global_index, ref_load

from gradiend_core import PARTS, CheckpointError, ParamMappedGradiendModel, SelectionError


def load(path) -> ParamMappedGradiendModel:
    return ParamMappedGradiendModel.from_pretrained(path)


def snapshot(m: ParamMappedGradiendModel):
    return (
        m.input_dim,
        m.base_global_index().clone(),
        {k: v.detach().clone() for k, v in m.state_dict().items()},
    )


def assert_snapshot_equal(a, b):
    assert a[0] == b[0]
    assert torch.equal(a[1], b[1])
    assert sorted(a[2]) == sorted(b[2])
    for k in a[2]:
        assert torch.equal(a[2][k], b[2][k]), k


def composed_mask(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Mask over the original space of "keep ``first``, then keep ``second`` of what is left"."""
    out = np.zeros(first.size, dtype=bool)
    out[np.flatnonzero(first)[second]] = True
    return out


# --------------------------------------------------------------------------- properties
def test_dimensions_and_lengths(ref_variants):
    for v in ref_variants.values():
        cfg = json.loads((v.path / "config.json").read_text())
        m = load(v.path)
        assert m.input_dim == cfg["architecture"]["input_dim"] == len(m) == m.pruned_length()
        assert m.latent_dim == v.latent_dim
        assert m.unpruned_length() == UNPRUNED_LENGTH == sum(NUMELS)
        assert m.torch_dtype == v.dtype
        assert m.input_dim == sum(e["num_selected"] for e in cfg["mapping"]["param_map"])


def test_param_map_in_reference_form(ref_variants):
    for v in ref_variants.values():
        ours = load(v.path).param_map
        ref = ref_load(v.path).param_map
        assert list(ours) == list(ref) == [n for n, _ in PARAMS]
        for name in ref:
            assert tuple(ours[name]["shape"]) == tuple(ref[name]["shape"])
            assert ours[name]["repr"] == ref[name]["repr"], (v.name, name)
            for key in ("indices", "mask"):
                if key in ref[name]:
                    assert torch.equal(ours[name][key].to(ref[name][key].dtype), ref[name][key])


# --------------------------------------------------------------------------- importance and top-k
def test_importance_part_names(unpruned_ckpt):
    m = load(unpruned_ckpt)
    assert torch.equal(m.get_weight_importance("DECODER-WEIGHT"), m.get_weight_importance("decoder-weight"))
    assert torch.equal(m.get_weight_importance(None), m.get_weight_importance("decoder-weight"))
    with pytest.raises(ValueError, match="decoder-weight"):
        m.get_weight_importance("decoder")


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("topk", [1, 10, 0.01, 0.25, 1.0, 10**6])
@pytest.mark.parametrize("which", ["unpruned", "both", "latent3"])
def test_get_topk_weights(ref_variants, which, part, topk):
    path = ref_variants[which].path
    m = load(path)
    n = m.input_dim
    got = m.get_topk_weights(part=part, topk=topk)
    expected_len = math.ceil(topk * n) if isinstance(topk, float) else min(topk, n)
    assert len(got) == expected_len == len(set(got))
    imp = ref_load(path).get_weight_importance(part).double().numpy()
    # ordered by importance (non-increasing) and the most important ones
    assert np.all(np.diff(imp[got]) <= 0)
    order = np.argsort(-imp, kind="stable")
    assert got == order[:expected_len].tolist()
    # the reference's own get_topk_weights (sorted=True, float32 weights: no ties)
    assert got == ref_load(path).get_topk_weights(part=part, topk=topk)


def test_get_topk_weights_ties_break_by_lower_index(unpruned_ckpt):
    m = load(unpruned_ckpt)
    with torch.no_grad():
        m.decoder[0].linear.weight[:] = 1.0
        m.decoder[0].linear.weight[7] = 5.0
    assert m.get_topk_weights("decoder-weight", 4) == [7, 0, 1, 2]


@pytest.mark.parametrize("topk", [True, 0, -2, 0.0, 1.5, "3"])
def test_get_topk_weights_rejects_bad_topk(unpruned_ckpt, topk):
    with pytest.raises(ValueError):
        load(unpruned_ckpt).get_topk_weights("decoder-weight", topk)


def test_enhancer_mask_on_pruned_model(pruned_ckpt):
    m = load(pruned_ckpt)
    n = m.input_dim
    mask = m.get_enhancer_mask(0.05, "decoder-sum")
    assert mask.shape == (n,) and mask.dtype == torch.bool
    assert int(mask.sum()) == math.ceil(0.05 * n)
    _, pmask = m.prune(topk=0.05, part="decoder-sum", return_mask=True)
    assert torch.equal(mask, pmask)
    assert int(m.get_enhancer_mask(1, "decoder-sum").sum()) == 1


# --------------------------------------------------------------------------- prune
def test_prune_not_inplace_leaves_original_unchanged(pruned_ckpt):
    m = load(pruned_ckpt)
    before = snapshot(m)
    imp_before = m.get_weight_importance("encoder-weight").clone()
    p = m.prune(topk=0.3, part="encoder-weight")
    assert p is not m
    assert_snapshot_equal(snapshot(m), before)
    assert torch.equal(m.get_weight_importance("encoder-weight"), imp_before)
    assert p.input_dim == math.ceil(0.3 * m.input_dim)
    # and modifying the pruned model does not touch the original
    with torch.no_grad():
        p.decoder[0].linear.weight.mul_(0)
    assert_snapshot_equal(snapshot(m), before)


def test_prune_inplace_returns_self(pruned_ckpt):
    m = load(pruned_ckpt)
    n = m.input_dim
    old_global = m.base_global_index().clone()
    imp = m.get_weight_importance("decoder-weight").numpy()
    r, mask = m.prune(topk=5, part="decoder-weight", inplace=True, return_mask=True)
    assert r is m and m.input_dim == 5
    assert mask.dtype == torch.bool and mask.shape == (n,) and int(mask.sum()) == 5
    top5 = np.argsort(-imp.astype(np.float64), kind="stable")[:5]
    assert set(np.flatnonzero(mask.numpy())) == set(top5.tolist())
    assert torch.equal(m.base_global_index(), old_global[mask])


@pytest.mark.parametrize("part", PARTS)
def test_prune_return_mask_and_weights(unpruned_ckpt, part):
    m = load(unpruned_ckpt)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    p, mask = m.prune(topk=0.1, threshold=0.0, part=part, return_mask=True)
    keep = torch.from_numpy(np.flatnonzero(mask.numpy()))
    assert mask.shape == (m.input_dim,)
    assert torch.equal(p.state_dict()["encoder.0.linear.weight"], sd["encoder.0.linear.weight"][:, keep])
    assert torch.equal(p.state_dict()["encoder.0.linear.bias"], sd["encoder.0.linear.bias"])
    assert torch.equal(p.state_dict()["decoder.0.linear.weight"], sd["decoder.0.linear.weight"][keep])
    assert torch.equal(p.state_dict()["decoder.0.linear.bias"], sd["decoder.0.linear.bias"][keep])
    # forward of the pruned model == forward of the full one restricted to the kept dims, when
    # the input is zero elsewhere (the encoder is linear before its activation)
    x = random_inputs(p.input_dim, seed=1)
    full = torch.zeros(x.shape[0], m.input_dim)
    full[:, keep] = x
    with torch.no_grad():
        torch.testing.assert_close(p(x), m(full)[:, keep], rtol=1e-6, atol=1e-6)


def test_prune_errors(pruned_ckpt):
    m = load(pruned_ckpt)
    with pytest.raises(SelectionError):
        m.prune()
    with pytest.raises(SelectionError):
        m.prune(mask=torch.ones(m.input_dim + 1, dtype=torch.bool))
    with pytest.raises(SelectionError):
        m.prune(threshold=1e9)
    with pytest.raises(SelectionError):
        m.prune(topk=3, importance=torch.rand(m.input_dim - 1))
    with pytest.raises(ValueError):
        m.prune(topk=3, part="decoder")
    assert m.input_dim == ref_load(pruned_ckpt).input_dim  # nothing happened


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(PARTS),
    st.sampled_from(PARTS),
    st.one_of(st.integers(1, 1500), st.floats(0.01, 1.0)),
    st.one_of(st.integers(1, 400), st.floats(0.01, 1.0)),
    st.integers(0, 2**31),
)
def test_prune_twice_equals_prune_once_with_composed_selection(ref_variants, part1, part2, topk1, topk2, seed):
    path = ref_variants["unpruned"].path
    m = load(path)
    rng = np.random.default_rng(seed)
    mask1 = rng.random(m.input_dim) < 0.8
    mask1[0] = True
    once, first = m.prune(mask=torch.from_numpy(mask1), topk=topk1, part=part1, return_mask=True)
    twice, second = once.prune(topk=topk2, part=part2, return_mask=True)
    comp = composed_mask(first.numpy(), second.numpy())
    direct = m.prune(mask=torch.from_numpy(comp))
    assert_snapshot_equal(snapshot(twice), snapshot(direct))
    # base-global space: the kept entries are the composition of the two selections
    np.testing.assert_array_equal(twice.base_global_index().numpy(), m.base_global_index().numpy()[comp])
    # and the reference pruning twice lands on the same base-model entries (float32: no ties)
    r = ref_load(path).prune(mask=torch.from_numpy(mask1), topk=topk1, part=part1)
    if not (isinstance(topk1, float) and topk1 == 1.0):  # the reference ignores the mask for topk=1.0
        r = r.prune(topk=topk2, part=part2) if not (isinstance(topk2, float) and topk2 == 1.0) else r
        np.testing.assert_array_equal(ref_global_index(r), twice.base_global_index().numpy())


# --------------------------------------------------------------------------- save and forward
@pytest.mark.parametrize("use_safetensors", [None, False])
def test_save_pretrained_then_reference_load(pruned_ckpt, tmp_path, use_safetensors):
    m = load(pruned_ckpt).prune(topk=0.5, part="decoder-sum")
    out = tmp_path / "saved"
    m.save_pretrained(out, use_safetensors=use_safetensors, training={"steps": 12}, note="x")
    names = {p.name for p in out.iterdir()}
    assert ("pytorch_model.bin" if use_safetensors is False else "model.safetensors") in names
    assert json.loads((out / "training.json").read_text()) == {"steps": 12}
    ref = Ref.from_pretrained(str(out))
    assert ref.input_dim == m.input_dim
    np.testing.assert_array_equal(ref_global_index(ref), m.base_global_index().numpy())
    for k, t in m.state_dict().items():
        assert torch.equal(ref.state_dict()[k], t), k
    assert ref.kwargs["base_model"] == "tiny-test" and ref.kwargs["note"] == "x"
    cfg = json.loads((out / "config.json").read_text())
    assert "training" not in cfg["metadata"]
    x = random_inputs(m.input_dim, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=0, atol=1e-6)


def test_save_pretrained_refuses_to_overwrite_its_source(fresh_copy, pruned_ckpt):
    src = fresh_copy(pruned_ckpt)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    m = load(src).prune(topk=3)
    with pytest.raises(CheckpointError):
        m.save_pretrained(src, overwrite=True)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_constructor_checks_input_dim():
    pm = {"w": {"shape": (3, 4), "repr": "all"}}
    with pytest.raises(ValueError):
        ParamMappedGradiendModel(11, 1, pm)
    m = ParamMappedGradiendModel(12, 2, pm)
    assert m.input_dim == 12 and m.unpruned_length() == 12
    assert m.state_dict()["encoder.0.linear.weight"].shape == (2, 12)


def test_forward_matches_reference(ref_variants):
    for v in ref_variants.values():
        if v.dtype != torch.float32:
            continue
        m, r = load(v.path), ref_load(v.path)
        x = random_inputs(m.input_dim, batch=3, seed=9)
        with torch.no_grad():
            dec, enc = m(x, return_encoded=True)
            rdec, renc = r(x, return_encoded=True)
            torch.testing.assert_close(dec, rdec, rtol=0, atol=1e-6)
            torch.testing.assert_close(enc, renc, rtol=0, atol=1e-6)
            torch.testing.assert_close(m.forward_encoder(x), r.forward_encoder(x), rtol=0, atol=1e-6)


def _grad_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in PARAMS}


def test_flatten_gradient_dict_matches_reference(ref_variants):
    grads = _grad_dict()
    for v in ref_variants.values():
        m, r = load(v.path), ref_load(v.path)
        flat = m.flatten_gradient_dict(grads)
        assert torch.equal(flat, r.flatten_gradient_dict(grads))
        # independently: the entries at the base-global indices of the concatenated full gradients
        full = torch.cat([grads[n].reshape(-1) for n, _ in PARAMS])
        assert torch.equal(flat, full[m.base_global_index()])
        with torch.no_grad():
            torch.testing.assert_close(
                m.forward_encoder(grads).float(), r.forward_encoder(grads).float(), rtol=0, atol=1e-6
            )


def test_forward_with_gradient_dict_returns_dict_like_reference(pruned_ckpt):
    """The reference's forward on a dict of gradients returns a dict of per-parameter tensors,
    zero where a parameter entry is not mapped; code ported by changing the import relies on it."""
    grads = _grad_dict(1)
    m, r = load(pruned_ckpt), ref_load(pruned_ckpt)
    with torch.no_grad():
        expected = r(grads)
        got = m(grads)
    assert isinstance(expected, dict)
    assert isinstance(got, dict), f"forward(dict) returned {type(got).__name__}, the reference returns a dict"
    assert list(got) == list(expected)
    for name, shape in PARAMS:
        assert got[name].shape == shape
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)
