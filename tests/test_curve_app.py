"""The "Pruning curve" view driven by Streamlit's AppTest; expected numbers by a brute-force numpy
evaluation (sort, cumulative sum, tanh) and by the reference's own encoder evaluation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gradiend import TextPredictionTrainer, TrainingArguments
from safetensors.numpy import load_file
from streamlit.testing.v1 import AppTest

from gradiend_core.curve.sums import log_grid

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
SAMPLES = ROOT / "sample_models"
DATA = SAMPLES / "data"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)


def _open(model, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = str(model)
    at.query_params["view"] = "Pruning curve"
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def _wait_for_jobs(timeout: float = 240) -> None:
    from dashboard.services.gradient_jobs import JOBS

    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(j.status != "running" for j in list(JOBS._jobs.values())):
            return
        time.sleep(0.5)
    raise AssertionError("the gradient job did not finish")


def _brute_curve(path: Path, part_importance: np.ndarray, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Label correlation of the encoder pruned to every top k (numpy: lexsort, cumsum, tanh)."""
    w = load_file(str(path / "model.safetensors"))
    enc_w = w["encoder.0.linear.weight"][0].astype(np.float64)
    order = np.lexsort((np.arange(part_importance.size), -part_importance.astype(np.float64)))
    pre = np.cumsum(x[:, order].astype(np.float64) * enc_w[order], axis=1) + float(w["encoder.0.linear.bias"][0])
    enc = np.tanh(pre.astype(np.float32)).astype(np.float64)
    e = enc - enc.mean(axis=0)
    lab = labels - labels.mean()
    return (lab @ e) / np.sqrt((lab @ lab) * (e * e).sum(axis=0))


def test_saved_gradients_metrics_and_the_smallest_topk_button():
    path = SAMPLES / "own-unpruned"
    at = _open(path)
    assert list(at.radio(key="curve_source").options) == ["Saved with the checkpoint", "Computed from a data file"]
    val = load_file(str(path / "validation_gradients.safetensors"))
    labels = -val["labels"].astype(np.float64)  # the alternative gradient carries the other class's label
    dec = np.abs(load_file(str(path / "model.safetensors"))["decoder.0.linear.weight"]).sum(axis=1)
    brute = _brute_curve(path, dec, val["gradients"], labels)
    assert float(_metric(at, "All 89,216 dims")) == pytest.approx(brute[-1], abs=1e-4)
    assert float(_metric(at, "Selection (4,461 dims)")) == pytest.approx(brute[4460], abs=1e-4)
    assert [c.key for c in at.get("plotly_chart") if c.key == "curve_figure"] == ["curve_figure"]
    at.number_input(key="curve_target_pct").set_value(99.9).run()
    at.button(key="curve_target_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ks = np.union1d(log_grid(89216, 48), [4461])
    expected = next(int(k) for k in ks if abs(brute[k - 1]) >= 0.999 * abs(brute[-1]))
    assert at.session_state["topk"] == str(expected) and at.session_state["part"] == "decoder-weight"
    assert f"topk set to {expected:,}" in at.success[0].value
    assert at.text_input(key="topk").value == str(expected)
    assert f"Selection ({expected:,} dims)" in [m.label for m in at.metric]


def test_computed_gradients_with_progress_match_the_references_evaluation():
    path = SAMPLES / "place-unpruned"
    at = _open(path)
    assert list(at.radio(key="curve_source").options) == ["Computed from a data file"]
    assert at.text_input(key="curve_data").value == "sample_models/data/place.csv"  # the bundled file with its classes
    assert at.text_input(key="curve_base_model").value == "sample_models/base/tiny-bert"  # metadata.base_model
    assert "104 examples of the validation split" in " ".join(c.value for c in at.caption)
    at.button(key="curve_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    _wait_for_jobs()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    tr = TextPredictionTrainer(
        model=str(path),
        data=str(DATA / "place.csv"),
        target_classes=["farm", "town"],
        args=TrainingArguments(train_batch_size=8, seed=0),
    )
    expected = tr.evaluate_encoder(split="validation", use_cache=False)["correlation"]
    assert float(_metric(at, "All 89,216 dims")) == pytest.approx(expected, abs=1e-4)
    table = at.dataframe[0].value
    assert list(table["part"]) == ["encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum"]
    assert table["all dims"].tolist() == pytest.approx([expected] * 4, abs=1e-6)
    # a fresh page finds the gradients in the cache: no button, the curve right away
    at2 = _open(path)
    assert "curve_compute" not in [b.key for b in at2.button]
    assert float(_metric(at2, "All 89,216 dims")) == pytest.approx(expected, abs=1e-4)


def test_cancel_stops_the_computation_and_caches_nothing(tmp_path):
    big = pd.concat([pd.read_csv(DATA / "place.csv")] * 20, ignore_index=True)
    big.to_csv(tmp_path / "big.csv", index=False)
    at = _open(SAMPLES / "place-unpruned")
    at.text_input(key="curve_data").set_value(str(tmp_path / "big.csv")).run()
    at.selectbox(key="curve_split").set_value("all rows").run()
    at.button(key="curve_compute").click().run()
    assert [b.key for b in at.button if b.key == "curve_cancel"] == ["curve_cancel"]
    at.button(key="curve_cancel").click().run()
    _wait_for_jobs()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    msg = " ".join(i.value for i in at.info)
    assert "cancelled after" in msg and "of 4800 examples; nothing was cached" in msg
    cache = tmp_path / "cache" / "eval-gradients"
    assert not cache.exists() or not any(cache.iterdir())
    assert "curve_compute" in [b.key for b in at.button]  # can be started again


def test_a_masked_selection_is_measured_as_its_own_point():
    path = SAMPLES / "own-unpruned"
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = str(path)
    at.query_params["view"] = "Pruning curve"
    at.query_params["name_include"] = "layer\\.1\\."
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    from gradiend_core.checkpoint import read_checkpoint
    from gradiend_core.selection.masks import name_mask

    data = read_checkpoint(path)
    mask = name_mask(data.param_map, "layer\\.1\\.", None)
    dec = np.abs(load_file(str(path / "model.safetensors"))["decoder.0.linear.weight"]).sum(axis=1)
    idx = np.flatnonzero(mask)
    k = int(np.ceil(0.05 * idx.size))
    keep = np.sort(idx[np.lexsort((idx, -dec[idx].astype(np.float64)))[:k]])
    val = load_file(str(path / "validation_gradients.safetensors"))
    w = load_file(str(path / "model.safetensors"))
    pre = (
        val["gradients"][:, keep].astype(np.float64) @ w["encoder.0.linear.weight"][0, keep]
        + w["encoder.0.linear.bias"][0]
    )
    expected = np.corrcoef(-val["labels"], np.tanh(pre.astype(np.float32)))[0, 1]
    assert float(_metric(at, f"Selection ({k:,} dims)")) == pytest.approx(expected, abs=1e-4)
