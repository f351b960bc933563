"""The dashboard with the pre-prune importance ("gradient-mean") and the "Pruning stages" view,
driven by Streamlit's AppTest; expected numbers computed independently with numpy."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from safetensors.numpy import load_file
from streamlit.testing.v1 import AppTest

from gradiend_core.cli import main
from gradiend_core.ranking.importance import PARTS
from gradiend_core.util.units import format_percent

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
SAMPLES = ROOT / "sample_models"
PRE = SAMPLES / "own-pre-pruned"


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _open(model, **query) -> AppTest:
    """Open the page on ``model`` with the "Pruning stages" tab open (only the open tab runs)."""
    query.setdefault("view", "Pruning stages")
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["model"] = str(model)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((np.arange(values.size), -values.astype(np.float64)))
    return np.sort(order[:k])


def _pre_pruned_numbers(k: int):
    """Independent numbers for own-pre-pruned: gradient-mean top-k, its kept share, the recall of
    the gradient-mean top-k against the decoder-weight top-k, and the cut's encoder correlation."""
    torch.manual_seed(0)
    g = Ref.from_pretrained(str(PRE))._get_base_global_index_map().numpy()
    rec = load_file(str(PRE / "pre_prune.safetensors"))
    rec_g = rec.get("base_global_index", np.arange(rec["importance"].size, dtype=np.int64))
    order = np.argsort(rec_g)
    gm = rec["importance"][order[np.searchsorted(rec_g[order], g)]].astype(np.float64)
    w = load_file(str(PRE / "model.safetensors"))
    dec = np.abs(w["decoder.0.linear.weight"]).sum(axis=1)
    keep = _top_k(gm, k)
    recall = np.intersect1d(keep, _top_k(dec, k)).size / k
    val = load_file(str(PRE / "validation_gradients.safetensors"))
    vcols = {int(b): i for i, b in enumerate(val["base_global_index"])}
    x = val["gradients"][:, [vcols[int(b)] for b in g]].astype(np.float64)
    enc_w = w["encoder.0.linear.weight"][0].astype(np.float64)
    enc_b = float(w["encoder.0.linear.bias"][0])
    before = np.tanh(x @ enc_w + enc_b)
    after = np.tanh(x[:, keep] @ enc_w[keep] + enc_b)
    return keep, gm[keep].sum() / gm.sum(), recall, float(np.corrcoef(before, after)[0, 1])


def test_gradient_mean_is_offered_only_with_a_pre_prune_record():
    assert list(_open(SAMPLES / "own-unpruned").selectbox(key="part").options) == list(PARTS)
    assert list(_open(PRE).selectbox(key="part").options) == list(PARTS) + ["gradient-mean"]


def test_gradient_mean_selection_pruning_stages_and_export(tmp_path, capsys):
    at = _open(PRE)
    at.selectbox(key="part").set_value("gradient-mean").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    k = math.ceil(0.05 * 8922)
    keep, share, recall, enc_corr = _pre_pruned_numbers(k)
    # preview: the top-k by the record's importance
    assert _metric(at, "Input dims kept") == f"{k:,}"
    assert _metric(at, "Importance kept") == format_percent(share)
    assert at.query_params["part"] == "gradient-mean"  # mirrored into the URL
    # "Pruning stages": recall, reduction, cut cost
    assert _metric(at, "Ranking recall at k") == format_percent(recall)
    assert _metric(at, "Kept-set recall at k") == "100.0 %"
    assert _metric(at, "k (current selection)") == f"{k:,}"
    assert _metric(at, "Pre-pruning kept") == "8,922"
    assert float(_metric(at, "Encoder output correlation")) == pytest.approx(enc_corr, abs=1e-4)
    table = next(df.value for df in at.dataframe if {"stage", "GRADIEND parameters"} <= set(df.value.columns))
    assert list(table["input dims"]) == [89_216, 8_922, k]
    assert list(table["GRADIEND parameters"]) == [3 * n + 1 for n in (89_216, 8_922, k)]
    assert list(table["memory (bytes)"]) == [4 * (3 * n + 1) for n in (89_216, 8_922, k)]
    # export from the dashboard == the CLI's --importance gradient-mean, byte for byte
    out = tmp_path / "dash"
    at.text_input(key="export_dir").set_value(str(out)).run()
    at.button(key="export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    torch.manual_seed(0)
    loaded = Ref.from_pretrained(str(out))
    g = Ref.from_pretrained(str(PRE))._get_base_global_index_map().numpy()
    assert np.array_equal(loaded._get_base_global_index_map().numpy(), g[keep])
    command = next(c.value for c in at.code if c.value.startswith("gradiend-core prune"))
    assert "--importance gradient-mean" in command and "--part" not in command
    assert (
        main(["prune", str(PRE), "--importance", "gradient-mean", "--topk", "0.05", "--out", str(tmp_path / "cli")])
        == 0
    )
    capsys.readouterr()
    for name in sorted(p.name for p in out.iterdir()):
        if name != "pruning.json":
            assert (
                hashlib.sha256((out / name).read_bytes()).digest()
                == hashlib.sha256((tmp_path / "cli" / name).read_bytes()).digest()
            ), name


def test_part_gradient_mean_from_the_url():
    at = _open(PRE, part="gradient-mean", topk="100")
    assert at.selectbox(key="part").value == "gradient-mean"
    assert _metric(at, "Input dims kept") == "100"


def test_pruning_stages_without_pre_prune_record():
    """own-post-pruned: no pre_prune.safetensors, validation gradients saved."""
    at = _open(SAMPLES / "own-post-pruned")
    assert not at.error
    assert any("no pre-prune record" in i.value for i in at.info)
    assert not any(m.label == "Ranking recall at k" for m in at.metric)
    table = next(df.value for df in at.dataframe if {"stage", "GRADIEND parameters"} <= set(df.value.columns))
    k = math.ceil(0.05 * 4461)
    assert list(table["input dims"]) == [89_216, 4_461, k]
    assert list(table["stage"]) == ["unpruned", "this checkpoint", "after the current selection"]
    assert float(_metric(at, "Encoder output correlation")) <= 1.0


def test_pruning_stages_without_any_record(tmp_path):
    """A checkpoint the reference package wrote: neither record; the view says so and still draws the reduction."""
    torch.manual_seed(3)
    pm = {"layer.0.weight": {"shape": (20, 10), "repr": "all"}}
    d = tmp_path / "plain"
    Ref(200, 1, pm, device=torch.device("cpu"), base_model="plain-base").save_pretrained(str(d))
    at = _open(d)
    assert not at.error
    infos = " ".join(i.value for i in at.info)
    assert "no pre-prune record" in infos and "no saved validation gradients" in infos
    table = next(df.value for df in at.dataframe if {"stage", "GRADIEND parameters"} <= set(df.value.columns))
    assert list(table["input dims"]) == [200, 10]
    assert list(table["GRADIEND parameters"]) == [3 * 200 + 1, 3 * 10 + 1]


def test_pruning_stages_for_an_unpruned_checkpoint_with_a_record(tmp_path):
    """own-unpruned with own-pre-pruned's record beside it: the record's kept set was not applied,
    so the kept-set recall compares it with the trained model's top-k and the chain has no pre stage."""
    d = tmp_path / "unpruned-with-record"
    shutil.copytree(SAMPLES / "own-unpruned", d)
    shutil.copy(PRE / "pre_prune.safetensors", d)
    at = _open(d)
    assert not at.error
    k = math.ceil(0.05 * 89_216)
    dec = np.abs(load_file(str(d / "model.safetensors"))["decoder.0.linear.weight"]).sum(axis=1)
    rec = load_file(str(d / "pre_prune.safetensors"))
    t = _top_k(dec, k)
    assert _metric(at, "Kept-set recall at k") == format_percent(np.isin(t, rec["kept"]).sum() / k)
    assert _metric(at, "Ranking recall at k") == format_percent(
        np.intersect1d(t, _top_k(rec["importance"], k)).size / k
    )
    table = next(df.value for df in at.dataframe if {"stage", "GRADIEND parameters"} <= set(df.value.columns))
    assert list(table["stage"]) == ["unpruned (this checkpoint)", "after the current selection"]
    assert any("was not applied to this checkpoint" in c.value for c in at.caption)
