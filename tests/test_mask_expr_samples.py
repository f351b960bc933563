"""Mask expressions on the bundled samples: the model() term across two GRADIENDs of one base,
gradient-mean from a pre-prune record, and every evaluation error with its column.

Oracles: importance is read from the safetensors files with numpy, top-k sets come from a full
stable sort of (-importance, index) with NaN last, and base-global indices come from the
reference package (``ParamMappedGradiendModel._get_base_global_index_map``).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from refmodels import ref_global_index, ref_load
from safetensors.numpy import load_file

from gradiend_core import read_checkpoint
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.expr.evaluate import evaluate_mask_expr
from gradiend_core.selection.expr.syntax import MaskExprError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
NUMBER, GENDER, POST = SAMPLES / "number-unpruned", SAMPLES / "gender-unpruned", SAMPLES / "number-post-pruned"


def weights(path: Path):
    return load_file(str(path / "model.safetensors"))


def oracle_importance(path: Path, part: str) -> np.ndarray:
    w = weights(path)
    dec, bias, enc = w["decoder.0.linear.weight"], w["decoder.0.linear.bias"], w["encoder.0.linear.weight"]
    return {
        "decoder-weight": np.abs(dec).sum(axis=1),
        "encoder-weight": np.abs(enc).sum(axis=0),
        "decoder-bias": np.abs(bias),
        "decoder-sum": np.abs(dec.sum(axis=1) + bias),
    }[part].astype(np.float32)


def oracle_top(imp: np.ndarray, topk) -> np.ndarray:
    """Sorted local indices of the top-k by a full stable sort: NaN last, -importance, index."""
    n = imp.size
    k = min(topk, n) if isinstance(topk, int) else math.ceil(topk * n)
    nan = np.isnan(imp)
    order = np.lexsort((np.arange(n), np.where(nan, 0, -imp.astype(np.float64)), nan))
    return np.sort(order[:k])


@pytest.fixture(scope="module")
def number():
    return read_checkpoint(NUMBER)


@pytest.fixture(scope="module")
def post():
    return read_checkpoint(POST)


# ------------------------------------------------------------------------------ model()
def test_model_term_number_and_gender_share_the_tiny_bert_base(number):
    expr = f"top(decoder-weight, 0.05) & model({str(GENDER)!r}, decoder-weight, 0.05)"
    result = evaluate_mask_expr(expr, number)
    mine = oracle_top(oracle_importance(NUMBER, "decoder-weight"), 0.05)
    theirs = oracle_top(oracle_importance(GENDER, "decoder-weight"), 0.05)
    assert mine.size == theirs.size == math.ceil(0.05 * 89216) == 4461
    expected = np.zeros(89216, dtype=bool)
    expected[np.intersect1d(mine, theirs)] = True  # both unpruned: local == base-global
    np.testing.assert_array_equal(result.mask, expected)
    assert list(result.term_counts.values()) == [4461, 4461]
    assert result.kept == np.intersect1d(mine, theirs).size
    # the dims only the number GRADIEND finds important
    only = evaluate_mask_expr(f"top(decoder-weight, 0.05) & ~model({str(GENDER)!r}, decoder-weight, 0.05)", number)
    assert only.kept == np.setdiff1d(mine, theirs).size
    assert only.kept + result.kept == 4461


def test_model_term_on_a_pruned_checkpoint_compares_in_base_global_space(post):
    """number-post-pruned (4,461 of 89,216 dims) against gender-unpruned: the gender top-k is mapped
    to base-global indices, then to the post-pruned model's local dims."""
    result = evaluate_mask_expr(f"model({str(GENDER)!r}, encoder-weight, 2000) | top(decoder-weight, 100)", post)
    bgi = ref_global_index(ref_load(POST))
    gender = oracle_top(oracle_importance(GENDER, "encoder-weight"), 2000)  # unpruned: base-global
    mine = bgi[oracle_top(oracle_importance(POST, "decoder-weight"), 100)]
    expected = np.isin(bgi, np.union1d(gender, mine))
    np.testing.assert_array_equal(result.mask, expected)
    assert result.term_counts[f'model("{GENDER}", encoder-weight, 2000)'] == int(np.isin(bgi, gender).sum())
    # and the other way round: the unpruned number model restricted to what post-pruning kept
    back = evaluate_mask_expr(f"model({str(POST)!r}, decoder-weight, 1.0)", read_checkpoint(NUMBER))
    np.testing.assert_array_equal(np.flatnonzero(back.mask), np.sort(bgi))


def test_model_term_refuses_another_base(number, ref_variants, tmp_path):
    other = ref_variants["post"].path  # base "tiny-test", four other parameters
    expr = f"top(decoder-weight, 5) & model({str(other)!r}, decoder-weight, 5)"
    with pytest.raises(MaskExprError) as info:
        evaluate_mask_expr(expr, number)
    assert info.value.column == expr.index("model(") + len("model(") + 1
    assert "different base" in str(info.value) and "map different base-model parameters" in str(info.value)
    # same parameters, another metadata.base_model
    copy = tmp_path / "gender-other-base"
    shutil.copytree(GENDER, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["metadata"]["base_model"] = "some/other-bert"
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MaskExprError, match="different base.*some/other-bert"):
        evaluate_mask_expr(f"model({str(copy)!r}, decoder-weight, 5)", number)


# ------------------------------------------------------------------------------ gradient-mean
def test_gradient_mean_term_uses_the_pre_prune_record():
    path = SAMPLES / "own-pre-pruned"
    record = load_file(str(path / "pre_prune.safetensors"))
    assert "base_global_index" not in record  # measured over the unpruned space: index == base-global
    bgi = ref_global_index(ref_load(path))
    imp = record["importance"][bgi]
    result = evaluate_mask_expr("top(gradient-mean, 500) & ~top(decoder-weight, 0.5)", read_checkpoint(path))
    expected = np.zeros(bgi.size, dtype=bool)
    expected[oracle_top(imp, 500)] = True
    expected[oracle_top(oracle_importance(path, "decoder-weight"), 0.5)] = False
    np.testing.assert_array_equal(result.mask, expected)


def test_gradient_mean_without_record_points_at_the_part(number):
    expr = "top(decoder-weight, 5) | top(gradient-mean, 5)"
    with pytest.raises(MaskExprError) as info:
        evaluate_mask_expr(expr, number)
    assert info.value.column == expr.index("gradient-mean") + 1
    assert "pre_prune.safetensors" in str(info.value) and "decoder-sum instead" in str(info.value)


# ------------------------------------------------------------------------------ other errors
def test_file_errors_point_at_the_path(number, tmp_path):
    np.save(tmp_path / "short.npy", np.ones(7, dtype=bool))
    np.save(tmp_path / "ints.npy", np.ones(89216, dtype=np.int64))
    cases = {
        str(tmp_path / "missing.npy"): "cannot read the mask file",
        str(tmp_path / "short.npy"): "length 7, but this model has input_dim 89,216 and unpruned length 89,216",
        str(tmp_path / "ints.npy"): "must have dtype bool",
        str(tmp_path / "mask.txt"): "must end in",
    }
    for path, words in cases.items():
        expr = f"name('embeddings') & file({path!r})"
        with pytest.raises(MaskExprError) as info:
            evaluate_mask_expr(expr, number)
        assert info.value.column == expr.index("file(") + 6, str(info.value)
        assert words in str(info.value)


def test_resolve_path_policy_errors_point_at_the_path(number):
    def refuse(p):
        raise PermissionError(f"{p} is outside the allowed directories")

    expr = "top(decoder-weight, 5) | model('/etc', decoder-weight, 5)"
    with pytest.raises(MaskExprError) as info:
        evaluate_mask_expr(expr, number, resolve_path=refuse)
    assert info.value.column == expr.index("'/etc'") + 1
    assert "outside the allowed directories" in str(info.value)


def test_an_expression_that_keeps_nothing_says_so(number):
    expr = "top(decoder-weight, 100) & ~top(decoder-weight, 200)"
    with pytest.raises(MaskExprError) as info:
        evaluate_mask_expr(expr, number)
    e = info.value
    assert e.column == 1 and e.length == len(expr)
    assert "keeps none of this model's 89,216 input dims" in str(e)
    assert "top(decoder-weight, 100) keeps 100, top(decoder-weight, 200) keeps 200" in str(e)
    empty = evaluate_mask_expr(expr, number, allow_empty=True)
    assert empty.kept == 0 and empty.term_counts == {"top(decoder-weight, 100)": 100, "top(decoder-weight, 200)": 200}


def test_given_importance_is_used_and_checked(number):
    fake = np.zeros(89216, dtype=np.float32)
    fake[[5, 70000, 12]] = [3, 2, 1]
    r = evaluate_mask_expr("top(decoder-weight, 2)", number, importance={"decoder-weight": fake})
    assert np.flatnonzero(r.mask).tolist() == [5, 70000]
    r = evaluate_mask_expr("top(decoder-weight, 2)", number, importance={"decoder-weight": Ranking(fake)})
    assert np.flatnonzero(r.mask).tolist() == [5, 70000]
    with pytest.raises(Exception, match="length 3"):
        evaluate_mask_expr("top(decoder-weight, 2)", number, importance={"decoder-weight": fake[:3]})


def test_name_term_and_normalised_text(number):
    r = evaluate_mask_expr("~ name( 'embeddings' )", number)
    emb = sum(int(np.prod(e.shape)) for e in number.param_map if "embeddings" in e.name)
    assert r.expression == '~name("embeddings")'
    assert r.kept == 89216 - emb
    assert r.term_counts == {'name("embeddings")': emb}
