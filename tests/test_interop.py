"""Interop with the reference package ``gradiend`` 0.2.3.

Every source checkpoint here was written by the reference (see ``refmodels.py``). For each variant,
part and selection, our ``export_pruned`` must write a checkpoint that the reference loads and
that equals the reference's own ``prune`` with the same arguments: the same kept base-global
indices, the same weights, the same forward outputs.

The one legitimate difference is how exact ties of importance are broken at the cut: the
reference uses ``torch.topk(sorted=False)`` (arbitrary among equals), we keep the lower index.
float32 weights drawn at random have no ties, so those variants must match exactly; bfloat16
weights (8-bit significand) have many, so there we check that both keep the same number of
dimensions, that every dimension strictly more important than the boundary value is kept by
both, and that the two selections differ only among dimensions whose importance equals it.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from gradiend.model.model_with_gradiend import ModelWithGradiend
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from refmodels import random_inputs, ref_global_index, ref_load

from gradiend_core import PARTS, ParamMappedGradiendModel, export_pruned

SELECTIONS = ("topk_int", "topk_float", "threshold", "mask", "combined", "topk_1.0")
#: Fixed per-test seed, so a failure reproduces.
MASK_SEED = 20250501


def random_mask(n: int, seed: int = MASK_SEED, p: float = 0.6) -> np.ndarray:
    m = np.random.default_rng(seed + n).random(n) < p
    m[0] = True  # never all False
    return m


def quantile_value(imp: np.ndarray, q: float) -> float:
    """An importance value that actually occurs (so ``>=`` meets equality at the boundary)."""
    return float(np.sort(imp)[int(q * (imp.size - 1))])


def selection_args(kind: str, ref_imp: np.ndarray) -> dict:
    n = ref_imp.size
    if kind == "topk_int":
        return {"topk": max(1, n // 7)}
    if kind == "topk_float":
        return {"topk": 0.137}
    if kind == "threshold":
        return {"threshold": quantile_value(ref_imp, 0.6)}
    if kind == "mask":
        return {"mask": random_mask(n)}
    if kind == "combined":
        return {"mask": random_mask(n), "threshold": quantile_value(ref_imp, 0.25), "topk": 0.5}
    if kind == "topk_1.0":
        return {"topk": 1.0}
    raise AssertionError(kind)


def ref_args(args: dict) -> dict:
    out = dict(args)
    if out.get("mask") is not None:
        out["mask"] = torch.from_numpy(out["mask"])
    return out


def ref_importance(model: Ref, part: str) -> np.ndarray:
    return model.get_weight_importance(part).detach().to(torch.float32).numpy()


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def assert_forward_close(model_a, model_b, n: int, dtype: torch.dtype) -> None:
    x = random_inputs(n, batch=4, seed=n)
    with torch.no_grad():
        ya = model_a(x).to(torch.float32)
        yb = model_b(x).to(torch.float32)
    assert ya.shape == yb.shape == (4, n)
    if dtype == torch.float32:
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-6)
    else:
        # bfloat16 keeps an 8-bit significand: one rounding is a relative 2**-8, and two code paths
        # that accumulate a dot product in a different order may land one rounding apart, which
        # the tanh and the decoder can at most double. Compare in float32 at 2**-7 of the output
        # scale (a different kept set changes outputs by O(1), far beyond this).
        scale = float(yb.abs().max())
        torch.testing.assert_close(ya, yb, rtol=2**-7, atol=2**-7 * scale)


def assert_equal_up_to_ties(ours: np.ndarray, ref: np.ndarray, imp: np.ndarray, candidates: np.ndarray) -> None:
    """Selections (bool masks over the source's input space) that differ only at a tied boundary.

    ``imp`` is the reference's importance (the coarser one when dtypes round), ``candidates``
    what mask and threshold left (by the reference's importance).
    """
    assert ours.sum() == ref.sum(), "both must keep the same number of dimensions"
    boundary = min(float(imp[ours].min()), float(imp[ref].min()))
    strictly = candidates & (imp > boundary)
    assert ours[strictly].all() and ref[strictly].all(), "a strictly more important dimension was dropped"
    diff = ours ^ ref
    assert np.all(imp[diff] == boundary), f"selections differ off the tied boundary {boundary}: {np.unique(imp[diff])}"
    assert not (ours & (imp < boundary)).any() and not (ref & (imp < boundary)).any()


# ---------------------------------------------------------------------------------- fixtures
def test_fixture_variants_use_all_three_reprs(ref_variants):
    """Sanity of the fixtures: every pruned variant's map holds all, indices and mask."""
    import json

    for v in ref_variants.values():
        cfg = json.loads((v.path / "config.json").read_text())
        reprs = {e["repr"] for e in cfg["mapping"]["param_map"]}
        assert reprs == ({"all", "indices", "mask"} if v.pruned else {"all"}), v.name
    names = {p.name for p in ref_variants["both_bin"].path.iterdir()}
    assert {"pytorch_model.bin", "mapping_indices.pth", "mapping_masks.pth"} <= names


# ---------------------------------------------------------------------------------- reading
def test_read_matches_reference(variant):
    """Our reader sees what the reference sees: dims, map, weights, forward."""
    ref = ref_load(variant.path)
    ours = ParamMappedGradiendModel.from_pretrained(variant.path)
    assert ours.input_dim == ref.input_dim
    assert ours.latent_dim == ref.latent_dim == variant.latent_dim
    assert ours.unpruned_length() == ref.unpruned_length()
    assert ours.torch_dtype == ref.torch_dtype == variant.dtype
    np.testing.assert_array_equal(ours.base_global_index().numpy(), ref_global_index(ref))
    assert_same_state(ours.state_dict(), ref.state_dict())
    assert_forward_close(ours, ref, ref.input_dim, variant.dtype)


@pytest.mark.parametrize("part", PARTS)
def test_importance_matches_reference(variant, part):
    """Our importance equals the reference's ``get_weight_importance(part)`` (compared in float32)."""
    ref = ref_load(variant.path)
    ours = ParamMappedGradiendModel.from_pretrained(variant.path).get_weight_importance(part)
    assert ours.dtype == torch.float32 and ours.shape == (ref.input_dim,)
    torch.testing.assert_close(ours, ref.get_weight_importance(part).to(torch.float32), rtol=0, atol=0)


@pytest.mark.parametrize("part", PARTS)
def test_importance_matches_definition(variant, part):
    """Independent of both implementations: the definition from the pruning guide, in float64."""
    sd = ref_load(variant.path).state_dict()
    w_dec = sd["decoder.0.linear.weight"].double().numpy()
    b_dec = sd["decoder.0.linear.bias"].double().numpy()
    w_enc = sd["encoder.0.linear.weight"].double().numpy()
    expected = {
        "encoder-weight": np.abs(w_enc).sum(axis=0),
        "decoder-weight": np.abs(w_dec).sum(axis=1),
        "decoder-bias": np.abs(b_dec),
        "decoder-sum": np.abs(w_dec.sum(axis=1) + b_dec),
    }[part]
    # float32 rounding bound of a short sum, relative to the sum of absolute terms (cancellation)
    scale = {
        "encoder-weight": np.abs(w_enc).sum(axis=0),
        "decoder-weight": np.abs(w_dec).sum(axis=1),
        "decoder-bias": np.abs(b_dec),
        "decoder-sum": np.abs(w_dec).sum(axis=1) + np.abs(b_dec),
    }[part]
    ours = ParamMappedGradiendModel.from_pretrained(variant.path).get_weight_importance(part).double().numpy()
    # Importance is computed in the weights' dtype, as the reference computes it, so the rounding
    # bound is that dtype's unit roundoff (bfloat16: 8-bit significand -> 2**-8; float32: 2**-24).
    unit = {torch.float32: 2**-24, torch.bfloat16: 2**-8, torch.float16: 2**-11}[sd["decoder.0.linear.weight"].dtype]
    assert np.all(np.abs(ours - expected) <= 4 * unit * scale)


# ---------------------------------------------------------------------------------- exports
@pytest.mark.parametrize("kind", SELECTIONS)
@pytest.mark.parametrize("part", PARTS)
def test_export_equals_reference_prune(variant, part, kind, tmp_path):
    src = variant.path
    ref_src = ref_load(src)
    imp = ref_importance(ref_src, part)
    args = selection_args(kind, imp)
    out = tmp_path / "export"

    result = export_pruned(src, out, part=part, **args)

    ref_out = Ref.from_pretrained(str(out))  # the reference loads our export unchanged
    ours_out = ParamMappedGradiendModel.from_pretrained(out)
    ref_pruned, ref_mask = ref_load(src).prune(part=part, return_mask=True, **ref_args(args))
    ref_mask = ref_mask.numpy()
    our_mask = result.selection.mask()
    src_global = ref_global_index(ref_src)

    # the reference and we read the written map identically, and it is what we selected
    np.testing.assert_array_equal(ref_global_index(ref_out), ours_out.base_global_index().numpy())
    np.testing.assert_array_equal(ours_out.base_global_index().numpy(), src_global[our_mask])
    assert ref_out.input_dim == our_mask.sum() == ours_out.input_dim

    if variant.exact:
        np.testing.assert_array_equal(our_mask, ref_mask)
        np.testing.assert_array_equal(ours_out.base_global_index().numpy(), ref_global_index(ref_pruned))
        same = ref_pruned
    else:
        candidates = np.ones(imp.size, dtype=bool)
        if args.get("mask") is not None:
            candidates &= args["mask"]
        if args.get("threshold") is not None:
            candidates &= imp >= np.float32(args["threshold"])
        if kind in ("mask", "threshold"):
            np.testing.assert_array_equal(our_mask, ref_mask)
        else:
            assert_equal_up_to_ties(our_mask, ref_mask, imp, candidates)
        # our weights for our kept set equal the reference's pruning to that same set
        same = ref_load(src).prune(mask=torch.from_numpy(our_mask))
    assert_same_state(ref_out.state_dict(), same.state_dict())
    assert_forward_close(ref_out, same, same.input_dim, variant.dtype)
    assert_forward_close(ours_out, same, same.input_dim, variant.dtype)


def test_export_to_bin_layout_loads_in_reference(pruned_ckpt, tmp_path):
    ref_src = ref_load(pruned_ckpt)
    out = tmp_path / "bin"
    export_pruned(pruned_ckpt, out, part="decoder-sum", topk=0.3, use_safetensors=False)
    names = {p.name for p in out.iterdir()}
    assert "pytorch_model.bin" in names and "model.safetensors" not in names
    assert not any(n.endswith(".safetensors") for n in names)
    ref_out = Ref.from_pretrained(str(out))
    ref_pruned = ref_src.prune(part="decoder-sum", topk=0.3)
    np.testing.assert_array_equal(ref_global_index(ref_out), ref_global_index(ref_pruned))
    assert_same_state(ref_out.state_dict(), ref_pruned.state_dict())


def test_threshold_compared_in_float32_like_the_reference(unpruned_ckpt, tmp_path):
    """A threshold a hair above an importance value that rounds to it in float32: the reference
    compares float32 importance with the float32 threshold and keeps that value; so must we."""
    ref_src = ref_load(unpruned_ckpt)
    imp = ref_importance(ref_src, "decoder-weight")
    v = np.sort(imp)[imp.size // 2]
    t = float(np.nextafter(np.float64(v), np.inf))
    assert t > float(v) and np.float32(t) == v
    result = export_pruned(unpruned_ckpt, tmp_path / "o", part="decoder-weight", threshold=t)
    _, ref_mask = ref_src.prune(part="decoder-weight", threshold=t, return_mask=True)
    np.testing.assert_array_equal(result.selection.mask(), ref_mask.numpy())
    assert result.selection.k == int((imp >= v).sum())


@pytest.mark.parametrize("topk", [None, 100, 0.2])
def test_custom_importance_equals_reference(unpruned_ckpt, tmp_path, topk):
    """Pre-pruning style: a signed, gradient-like importance vector instead of a part. Half of it
    is exactly zero, some of that -0.0 (what a mean of gradients that are all zero can give);
    -0.0 == 0.0, so the threshold 0.0 keeps both, as the reference's float comparison does."""
    ref_src = ref_load(unpruned_ckpt)
    n = ref_src.input_dim
    rng = np.random.default_rng(5)
    imp = rng.standard_normal(n).astype(np.float32)
    zero = rng.random(n) < 0.5
    imp[zero] = np.where(rng.random(int(zero.sum())) < 0.5, -0.0, 0.0).astype(np.float32)
    args = {"threshold": 0.0} if topk is None else {"threshold": 0.0, "topk": topk}
    if topk is not None:
        imp[zero] = -1.0  # no ties at the cut, so that torch.topk's arbitrary tie order cannot matter
        imp[np.flatnonzero(~zero)[:7]] = -0.0
    result = export_pruned(unpruned_ckpt, tmp_path / "o", importance=imp, **args)
    _, ref_mask = ref_src.prune(importance=torch.from_numpy(imp), return_mask=True, **args)
    np.testing.assert_array_equal(result.selection.mask(), ref_mask.numpy())
    if topk is None:
        assert result.selection.k == int((imp >= 0).sum())


def test_pruning_twice_equals_reference_pruning_twice(unpruned_ckpt, tmp_path):
    """Export of an export (our pre + post) equals the reference pruning twice."""
    a = tmp_path / "a"
    b = tmp_path / "b"
    export_pruned(unpruned_ckpt, a, part="encoder-weight", topk=0.4)
    export_pruned(a, b, part="decoder-weight", topk=100)
    ref = ref_load(unpruned_ckpt).prune(part="encoder-weight", topk=0.4).prune(part="decoder-weight", topk=100)
    np.testing.assert_array_equal(ref_global_index(Ref.from_pretrained(str(b))), ref_global_index(ref))
    assert_same_state(Ref.from_pretrained(str(b)).state_dict(), ref.state_dict())


# ---------------------------------------------------------------------------------- reference bugs
def reference_enhancer_mask(ref_model: Ref, topk, part: str) -> torch.Tensor:
    """``ModelWithGradiend.get_enhancer_mask`` of the reference, on a bare GRADIEND.

    A ``ModelWithGradiend`` needs a base model; the method only uses ``self.gradiend``, a cache
    and ``self.get_topk_weights``, so a stub with exactly those is enough to run the real code.
    """
    stub = types.SimpleNamespace(gradiend=ref_model, _enhancer_mask_cache={})
    stub.get_topk_weights = lambda part="decoder-weight", topk=1000: ModelWithGradiend.get_topk_weights(
        stub, part=part, topk=topk
    )
    return ModelWithGradiend.get_enhancer_mask(stub, topk, part)


def test_reference_enhancer_mask_floors_fraction_and_treats_one_as_all(unpruned_ckpt):
    """Pins the reference's behaviour we deliberately do not copy."""
    ref = ref_load(unpruned_ckpt)
    n = ref.input_dim
    assert 0.05 * n != math.floor(0.05 * n)  # a fractional count, where floor and ceil differ
    assert int(reference_enhancer_mask(ref, 0.05, "decoder-weight").sum()) == math.floor(0.05 * n)
    assert int(reference_enhancer_mask(ref, 1, "decoder-weight").sum()) == n
    # while the reference's own prune keeps ceil(0.05 n) and one dimension for topk=1
    assert ref.prune(topk=0.05).input_dim == math.ceil(0.05 * n)
    assert ref.prune(topk=1).input_dim == 1


def test_reference_enhancer_mask_breaks_on_pruned_model(pruned_ckpt):
    """The reference indexes a local mask with base-global indices after pruning."""
    ref = ref_load(pruned_ckpt)
    assert ref_global_index(ref).max() >= ref.input_dim
    with pytest.raises(IndexError):
        reference_enhancer_mask(ref, 0.05, "decoder-weight")


def test_reference_topk_one_float_ignores_mask(unpruned_ckpt, tmp_path):
    """The reference returns the model unpruned for topk=1.0 even with a mask; we apply the mask
    (mask -> threshold -> topk, and topk=1.0 keeps all that is left)."""
    ref = ref_load(unpruned_ckpt)
    mask = random_mask(ref.input_dim)
    assert ref.prune(mask=torch.from_numpy(mask), topk=1.0).input_dim == ref.input_dim
    result = export_pruned(unpruned_ckpt, tmp_path / "o", mask=mask, topk=1.0)
    np.testing.assert_array_equal(result.selection.mask(), mask)
    assert Ref.from_pretrained(str(tmp_path / "o")).input_dim == mask.sum()


@pytest.mark.parametrize("which", ["unpruned", "both"])
@pytest.mark.parametrize("topk", [0.05, 0.5, 1, 7, 1.0])
def test_our_enhancer_mask_keeps_what_prune_keeps(ref_variants, which, topk):
    v = ref_variants[which]
    ours = ParamMappedGradiendModel.from_pretrained(v.path)
    n = ours.input_dim
    expected = math.ceil(topk * n) if isinstance(topk, float) else min(topk, n)
    mask = ours.get_enhancer_mask(topk, "decoder-weight")
    assert mask.dtype == torch.bool and mask.shape == (n,)
    assert int(mask.sum()) == expected
    # exactly the dims prune keeps, and the reference prune keeps (float32: no ties)
    _, pmask = ours.prune(topk=topk, part="decoder-weight", return_mask=True)
    assert torch.equal(mask, pmask)
    _, rmask = ref_load(v.path).prune(topk=topk, part="decoder-weight", return_mask=True)
    assert torch.equal(mask, rmask)
    # and they are the `expected` most important ones (by an independent argsort)
    imp = ref_importance(ref_load(v.path), "decoder-weight")
    top = np.argsort(-imp.astype(np.float64), kind="stable")[:expected]
    assert set(np.flatnonzero(mask.numpy())) == set(top.tolist())
