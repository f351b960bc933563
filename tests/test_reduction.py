"""The reduction preview equals what an export actually writes, and its numbers equal hand counts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gradiend_core import export_pruned, read_checkpoint
from gradiend_core.pruning.plan import plan_pruning
from gradiend_core.ranking.importance import PARTS

SELECTIONS = {
    "topk": lambda n, imp: {"topk": 0.2},
    "topk_int": lambda n, imp: {"topk": 1},
    "threshold": lambda n, imp: {"threshold": float(np.sort(imp)[n // 2])},
    "mask": lambda n, imp: {"mask": np.random.default_rng(n).random(n) < 0.3},
    "all": lambda n, imp: {"topk": 1.0},
}


def independent_importance(weights_file, part) -> np.ndarray:
    sd = (
        load_file(str(weights_file))
        if str(weights_file).endswith(".safetensors")
        else torch.load(weights_file, weights_only=True)
    )
    w_dec = sd["decoder.0.linear.weight"].double().numpy()
    b_dec = sd["decoder.0.linear.bias"].double().numpy()
    w_enc = sd["encoder.0.linear.weight"].double().numpy()
    return {
        "encoder-weight": np.abs(w_enc).sum(axis=0),
        "decoder-weight": np.abs(w_dec).sum(axis=1),
        "decoder-bias": np.abs(b_dec),
        "decoder-sum": np.abs(w_dec.sum(axis=1) + b_dec),
    }[part]


def hand_params(cfg: dict, k: int) -> int:
    a = cfg["architecture"]
    latent = a["latent_dim"]
    total = latent * k + latent + k * latent + (k if a["bias_decoder"] else 0)
    return total + (2 if a["activation_encoder"] == "id" else 0)


@pytest.mark.parametrize("kind", list(SELECTIONS))
@pytest.mark.parametrize("part", ["decoder-weight", "encoder-weight"])
def test_report_equals_export(variant, part, kind, tmp_path):
    src = variant.path
    cfg = json.loads((src / "config.json").read_text())
    n = cfg["architecture"]["input_dim"]
    data = read_checkpoint(src)
    imp64 = independent_importance(data.weights_file, part)
    args = SELECTIONS[kind](n, imp64.astype(np.float32))
    out = tmp_path / "out"
    result = export_pruned(src, out, part=part, **args)
    rep = result.report
    k = result.selection.k

    # the preview (the plan the CLI's --dry-run and the page compute) is the export's report
    preview = plan_pruning(data, source=part, **args).report
    a, b = preview.to_dict(), rep.to_dict()
    assert np.isnan(a.pop("importance_kept")) == np.isnan(b["importance_kept"])
    if not np.isnan(b.pop("importance_kept")):
        assert preview.importance_kept == rep.importance_kept
    assert a == b

    # files: every model file the export wrote with its exact size (not the provenance record, nor the
    # saved copy of the mask, which the export keeps so that its command reproduces it)
    extra = {"pruning.json", "mask.safetensors"}
    written = {p.name: os.path.getsize(p) for p in out.iterdir() if p.is_file() and p.name not in extra}
    assert ("mask.safetensors" in {p.name for p in out.iterdir()}) == (args.get("mask") is not None)
    assert rep.disk_files_after == written
    assert rep.disk_bytes_after == sum(written.values())
    if variant.name != "both_bin":
        # the reference wrote the source with safetensors: the "before" column is its real files
        before = {p.name: os.path.getsize(p) for p in src.iterdir() if p.is_file()}
        assert rep.disk_files_before == before

    # dims and parameter counts by hand
    out_cfg = json.loads((out / "config.json").read_text())
    assert out_cfg["architecture"]["input_dim"] == k == rep.input_dim_after
    assert rep.input_dim_before == n
    assert rep.unpruned_length == sum(int(np.prod(e["shape"])) for e in cfg["mapping"]["param_map"])
    assert rep.total_params_before == hand_params(cfg, n)
    assert rep.total_params_after == hand_params(cfg, k)
    stored = load_file(str(out / "model.safetensors"))
    assert sum(t.numel() for t in stored.values()) == rep.total_params_after

    # memory = parameters x bytes per parameter at the model dtype
    itemsize = torch.empty(0, dtype=variant.dtype).element_size()
    assert rep.memory_bytes_before == hand_params(cfg, n) * itemsize
    assert rep.memory_bytes_after == hand_params(cfg, k) * itemsize
    assert rep.memory_bytes_after == sum(t.numel() * t.element_size() for t in stored.values())

    # kept share of the part's importance, computed with numpy in float64 from the source weights;
    # a mask alone reports it too (the part is the one the page charts beside the selection)
    share = imp64[result.selection.keep].sum() / imp64.sum()
    assert rep.importance_kept == pytest.approx(share, rel=1e-5)
    assert rep.source == part
    if kind == "all":
        assert rep.importance_kept == pytest.approx(1.0, rel=1e-6)
        assert rep.disk_files_after == rep.disk_files_before or variant.name == "both_bin"
    assert rep.kept_fraction == pytest.approx(k / n)


@pytest.mark.parametrize("part", PARTS)
def test_report_for_custom_importance(unpruned_ckpt, tmp_path, part):
    """Pre-pruning style: a given importance vector replaces the weight importance."""
    data = read_checkpoint(unpruned_ckpt)
    n = data.architecture.input_dim
    imp = np.random.default_rng(3).random(n).astype(np.float32)
    result = export_pruned(unpruned_ckpt, tmp_path / "o", part=part, importance=imp, topk=0.1)
    expected_keep = np.sort(np.argsort(-imp.astype(np.float64), kind="stable")[: int(np.ceil(0.1 * n))])
    np.testing.assert_array_equal(result.selection.keep, expected_keep)
    assert result.report.importance_kept == pytest.approx(
        imp[expected_keep].astype(np.float64).sum() / imp.sum(), rel=1e-6
    )
    written = {p.name: os.path.getsize(p) for p in (tmp_path / "o").iterdir() if p.name != "pruning.json"}
    assert result.report.disk_files_after == written
