"""Saved masks: a named expression with its resolved base-global mask in one safetensors file;
round trip, reuse as a mask file and as an expression, and refusal of damaged or foreign files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from refmodels import ref_global_index, ref_load
from safetensors import safe_open
from safetensors.torch import save_file

from gradiend_core import read_checkpoint
from gradiend_core.errors import SelectionError
from gradiend_core.selection.expr.bundle import (
    BUNDLE_FORMAT,
    MaskBundle,
    load_mask_bundle,
    make_mask_bundle,
    save_mask_bundle,
)
from gradiend_core.selection.expr.evaluate import evaluate_mask_expr
from gradiend_core.selection.expr.syntax import MaskExprError
from gradiend_core.selection.masks import load_mask, read_mask_file

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
POST, NUMBER = SAMPLES / "number-post-pruned", SAMPLES / "number-unpruned"
EXPR = 'top(decoder-weight, 0.25) & ~name("LayerNorm")'


@pytest.fixture(scope="module")
def post():
    return read_checkpoint(POST)


@pytest.fixture(scope="module")
def saved(post, tmp_path_factory):
    result = evaluate_mask_expr(EXPR, post)
    path = save_mask_bundle(
        make_mask_bundle("  both ends  ", result, post.metadata.get("base_model")),
        tmp_path_factory.mktemp("masks") / "both.safetensors",
    )
    return result, path


def test_file_layout(saved, post):
    result, path = saved
    bgi = ref_global_index(ref_load(POST))  # the reference's base-global index of each dim
    expected = np.zeros(89216, dtype=bool)
    expected[bgi[result.mask]] = True
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["mask"]
        mask = f.get_tensor("mask")
        meta = f.metadata()
    assert mask.dtype == torch.bool and mask.shape == (89216,)
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert meta["format"] == BUNDLE_FORMAT
    assert meta["name"] == "both ends"
    assert meta["expression"] == result.expression == EXPR
    assert meta["mask_sha256"] == hashlib.sha256(np.packbits(expected).tobytes()).hexdigest()
    assert meta["kept"] == str(result.kept) and meta["unpruned_length"] == "89216"
    assert meta["base_model"] == "sample_models/base/tiny-bert"
    assert [p.name for p in path.parent.iterdir()] == ["both.safetensors"]  # no temporary file left


def test_round_trip_as_bundle_as_mask_file_and_as_expression(saved, post):
    result, path = saved
    b = load_mask_bundle(path)
    assert (b.name, b.expression, b.base_model) == ("both ends", EXPR, "sample_models/base/tiny-bert")
    np.testing.assert_array_equal(b.mask, result.global_mask())
    from_bytes = load_mask_bundle(path.read_bytes())  # e.g. an upload
    assert (from_bytes.name, from_bytes.expression) == (b.name, b.expression)
    np.testing.assert_array_equal(from_bytes.mask, b.mask)
    np.testing.assert_array_equal(b.local_mask(post.param_map, post.metadata), result.mask)
    # as a plain mask file: --mask and file('...')
    np.testing.assert_array_equal(read_mask_file(path), b.mask)
    np.testing.assert_array_equal(load_mask(path, post.param_map), result.mask)
    np.testing.assert_array_equal(evaluate_mask_expr(f"file({str(path)!r})", post).mask, result.mask)
    # on another variant of the base (unpruned): the same base-global entries
    number = read_checkpoint(NUMBER)
    np.testing.assert_array_equal(evaluate_mask_expr(f"file({str(path)!r})", number).mask, b.mask)
    # as an expression: evaluated again on the model it was made on, the same mask
    assert evaluate_mask_expr(b.expression, post).sha256 == result.sha256


def test_refusals(saved, post, tmp_path):
    result, path = saved
    bundle = load_mask_bundle(path)
    with pytest.raises(SelectionError, match="exists"):
        save_mask_bundle(bundle, path)
    with pytest.raises(SelectionError, match=r"\.safetensors"):
        save_mask_bundle(bundle, tmp_path / "m.npy")
    with pytest.raises(SelectionError, match="non-empty name"):
        make_mask_bundle(" ", result)
    # damaged: one flipped bit in the stored mask
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    with pytest.raises(SelectionError, match="damaged"):
        load_mask_bundle(bytes(raw))
    # a plain mask file is not a bundle
    save_file({"mask": torch.ones(5, dtype=torch.bool)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(SelectionError, match="not a saved mask"):
        load_mask_bundle(tmp_path / "plain.safetensors")
    with pytest.raises(SelectionError, match="cannot read"):
        load_mask_bundle(tmp_path / "missing.safetensors")


def test_a_bundle_of_another_base_is_refused(saved, post, tmp_path):
    result, _ = saved
    good = make_mask_bundle("x", result, "sample_models/base/tiny-bert")
    foreign = MaskBundle("x", good.expression, good.mask, good.base_model, "0" * 64)
    path = save_mask_bundle(foreign, tmp_path / "foreign.safetensors")
    expr = f"top(decoder-weight, 5) & file({str(path)!r})"
    with pytest.raises(MaskExprError) as info:
        evaluate_mask_expr(expr, post)
    assert info.value.column == expr.index("file(") + 6
    assert "another base model" in str(info.value)
    with pytest.raises(SelectionError, match="mapped parameters"):
        foreign.local_mask(post.param_map)
    renamed = MaskBundle("x", good.expression, good.mask, "other/bert", good.base_params_sha256)
    with pytest.raises(MaskExprError, match="other/bert"):
        evaluate_mask_expr(f"file({str(save_mask_bundle(renamed, tmp_path / 'renamed.safetensors'))!r})", post)
