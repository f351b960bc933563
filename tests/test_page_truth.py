"""What the page says is true and stays put (Streamlit AppTest): view choices survive other tabs,
the last valid selection stays visible while an input is retyped, numbers agree with each other and
with the files, charts do not mislead on float16, +Inf and mask-only selections, tables show no None."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from safetensors.numpy import load_file
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest
from test_figures_views import charts

from gradiend_core.cli import main
from gradiend_core.util.units import format_bytes, format_percent

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")
SAMPLES = REPO / "sample_models"
PRE = SAMPLES / "own-pre-pruned"
PARAMS = {
    "bert.embeddings.word_embeddings.weight": (40, 20),
    "bert.encoder.layer.0.output.dense.weight": (20, 20),
    "bert.pooler.dense.bias": (100,),
}
N = sum(math.prod(s) for s in PARAMS.values())  # 1,300


def _ref(dtype=torch.float32, seed=11) -> Ref:
    torch.manual_seed(seed)
    pm = {n: {"shape": s, "repr": "all"} for n, s in PARAMS.items()}
    return Ref(N, 1, pm, device=torch.device("cpu"), base_model="truth-test-base", torch_dtype=dtype)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("truth") / "plain"
    _ref().save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def with_inf(tmp_path_factory) -> Path:
    """Decoder rows 3 and 7 hold +Inf: their decoder-weight importance is +Inf."""
    ref = _ref()
    with torch.no_grad():
        ref.decoder[0].linear.weight[[3, 7]] = float("inf")
    d = tmp_path_factory.mktemp("truth") / "inf"
    ref.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def half(tmp_path_factory) -> Path:
    """float16 weights spread over 1e-10..1: the smallest underflow to exact zeros."""
    ref = _ref(torch.float16)
    g = torch.Generator().manual_seed(2)
    w = 10.0 ** (torch.rand(N, 1, generator=g) * 10 - 10)
    with torch.no_grad():
        ref.decoder[0].linear.weight.copy_(w.to(torch.float16))
        ref.encoder[0].linear.weight.copy_((w.T * 3).to(torch.float16))
    d = tmp_path_factory.mktemp("truth") / "half"
    ref.save_pretrained(str(d))
    return d


def open_app(path: Path, view: str = "Selection", **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["model"] = str(path)
    at.query_params["view"] = view
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def show(at: AppTest, view: str) -> AppTest:
    """Open another tab, as a click on it does (the open tab lives in the URL)."""
    at.query_params["view"] = view
    at.run()
    assert not at.exception, at.exception
    return at


def colour(m) -> str:
    """The colour the page draws a metric's delta in."""
    return MetricProto.MetricColor.Name(m.proto.color)


def metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def importance(path: Path, part: str = "decoder-weight") -> np.ndarray:
    return Ref.from_pretrained(str(path)).get_weight_importance(part).float().numpy()


def top_by_rule(v: np.ndarray, k: int) -> np.ndarray:
    """The selection rule by brute force: higher first (+Inf first, NaN last), ties by lower index."""
    key = np.where(np.isnan(v), -np.inf, v.astype(np.float64))
    return np.lexsort((np.arange(v.size), -key))[:k]


def finite_share(v: np.ndarray, keep) -> float:
    w = np.where(np.isfinite(v), v.astype(np.float64), 0.0)
    return w[keep].sum() / w.sum()


# ------------------------------------------------------------------------------ stale state
def test_view_choices_survive_a_visit_to_another_tab():
    at = open_app(PRE, "Compare parts")
    at.radio(key="parts_overlap_value").set_value("intersection (dims)").run()
    at.selectbox(key="parts_scatter_x").set_value("decoder-bias").run()
    at.selectbox(key="parts_scatter_y").set_value("decoder-sum").run()
    show(at, "Distributions").selectbox(key="dist_part").set_value("encoder-weight").run()
    at.number_input(key="target_mass_pct").set_value(75.0).run()
    show(at, "Where in the model").radio(key="where_metric").set_value("kept dims").run()
    show(at, "Top-k table").selectbox(key="topk_rows").set_value(100).run()
    show(at, "Pruning stages").selectbox(key="stages_post_part").set_value("encoder-weight").run()
    show(at, "Training")
    assert show(at, "Compare parts").radio(key="parts_overlap_value").value == "intersection (dims)"
    assert at.selectbox(key="parts_scatter_x").value == "decoder-bias"
    assert at.selectbox(key="parts_scatter_y").value == "decoder-sum"
    assert show(at, "Distributions").selectbox(key="dist_part").value == "encoder-weight"
    assert at.number_input(key="target_mass_pct").value == 75.0
    assert show(at, "Where in the model").radio(key="where_metric").value == "kept dims"
    assert show(at, "Top-k table").selectbox(key="topk_rows").value == 100
    assert show(at, "Pruning stages").selectbox(key="stages_post_part").value == "encoder-weight"


@pytest.mark.parametrize("typed", ["", "abc", "0"])
def test_retyping_topk_keeps_the_last_valid_selection_visible(plain, typed):
    at = open_app(plain, topk="200")
    assert metric(at, "Input dims kept").value == "200"
    at.text_input(key="topk").set_value(typed).run()
    assert not at.exception
    assert at.error, "the input's problem is reported"
    assert any("Showing the last valid selection" in i.value and "topk 200" in i.value for i in at.info)
    assert metric(at, "Input dims kept").value == "200"  # the preview stays
    assert charts(at), "the open view stays"
    assert at.button(key="export").disabled  # nothing is exported while the input is invalid
    at.text_input(key="topk").set_value("100").run()
    assert not at.error and metric(at, "Input dims kept").value == "100" and not at.button(key="export").disabled


def test_a_threshold_that_keeps_nothing_keeps_the_last_valid_selection(plain):
    at = open_app(plain, topk="0.1")
    at.number_input(key="threshold").set_value(1e9).run()
    assert any("keeps nothing" in e.value for e in at.error)
    assert metric(at, "Input dims kept").value == f"{math.ceil(0.1 * N):,}"


def test_without_a_valid_selection_yet_only_the_error_shows(plain):
    # a link whose threshold keeps nothing: there is no earlier selection to fall back on
    at = open_app(plain, topk="0.1", threshold="1e9")
    assert any("keeps nothing" in e.value for e in at.error)
    assert not any(m.label == "Input dims kept" for m in at.metric)
    assert not any(b.key == "export" and not b.disabled for b in at.button)


# ---------------------------------------------------------------------- numbers that agree
def test_importance_kept_counts_finite_values_with_inf_weights(with_inf, capsys):
    imp = importance(with_inf)
    assert np.isinf(imp[[3, 7]]).all()
    k = math.ceil(0.05 * N)
    expected = finite_share(imp, top_by_rule(imp, k))
    at = open_app(with_inf)
    assert metric(at, "Importance kept").value == format_percent(expected) != "n/a"
    assert "NaN and ±Inf count 0" in metric(at, "Importance kept").proto.help
    show(at, "Distributions")
    names = [t.get("name", "") for spec, _ in charts(at) for t in spec["data"]]
    assert any(f"importance kept {format_percent(expected)}" in name for name in names)
    assert main(["prune", str(with_inf), "--topk", "0.05", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"]["importance_kept"] == pytest.approx(expected)


def test_importance_kept_with_a_mask_alone(plain):
    imp = importance(plain)
    names = np.concatenate([np.full(math.prod(s), n.endswith("weight")) for n, s in PARAMS.items()])
    at = open_app(plain)
    at.session_state["name_include"] = r"weight$"
    at.text_input(key="topk").set_value("").run()
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Input dims kept").value == f"{int(names.sum()):,}"
    assert metric(at, "Importance kept").value == format_percent(finite_share(imp, names))


def test_shares_and_changes_read_true():
    """89,213 of 89,216 dims is not 100 %; mapping files make that export larger, shown as a red +."""
    at = open_app(SAMPLES / "number-unpruned", topk="89213")
    kept = metric(at, "Input dims kept")
    assert kept.proto.delta == "99.997 % of 89.2k"
    disk = [m for m in at.metric if m.label == "Size on disk"][-1]  # the preview's (the first is the header's)
    assert disk.proto.delta.startswith("+") and not disk.proto.delta.startswith("+-")
    assert colour(disk) == "RED" and disk.proto.direction == MetricProto.MetricDirection.UP
    params = metric(at, "GRADIEND parameters")
    assert params.proto.delta == "-0.003 %" and colour(params) == "GREEN"


def test_header_preview_and_banner_show_one_size_on_disk(plain, tmp_path):
    from test_disk import model_file_bytes

    at = open_app(plain, topk="100")
    sizes = [m for m in at.metric if m.label == "Size on disk"]
    assert sizes[0].value == format_bytes(model_file_bytes(plain))  # the header
    out = tmp_path / "exported"
    at.text_input(key="export_dir").set_value(str(out)).run()
    at.button(key="export").click().run()
    assert not at.error, [e.value for e in at.error]
    written = format_bytes(model_file_bytes(out))
    assert sizes[1].value == written  # the preview, before the export was written
    assert any(f"({written} on disk" in s.value for s in at.success)  # the banner
    assert f"{model_file_bytes(plain):,} B -> {model_file_bytes(out):,} B" in sizes[1].proto.help


def test_a_clipped_topk_is_reported_beside_the_preview(plain):
    at = open_app(plain, topk="100000")
    warnings = [w.value for w in at.warning]
    assert any(f"topk asks for 100,000 dims, but the mask and threshold leave {N:,}" in w for w in warnings), warnings
    texts = [n.label if type(n).__name__ == "Metric" else str(getattr(n, "value", "")) for n in at.main]
    at_preview = texts.index("Preview")
    at_warning = next(i for i, t in enumerate(texts) if "topk asks for" in t)
    at_metric = texts.index("Input dims kept")
    assert at_preview < at_warning < at_metric


def _cohen_d(x: np.ndarray, labels: np.ndarray) -> float:
    a, b = x[labels > 0], x[labels < 0]
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    return abs(a.mean() - b.mean()) / pooled


def test_cut_cost_headline_is_a_row_of_its_table():
    at = open_app(PRE, "Pruning stages", part="decoder-weight")
    k = math.ceil(0.05 * 8922)
    imp = importance(PRE)
    keep = np.sort(top_by_rule(imp, k))
    w = load_file(str(PRE / "model.safetensors"))
    val = load_file(str(PRE / "validation_gradients.safetensors"))
    g = Ref.from_pretrained(str(PRE))._get_base_global_index_map().numpy()
    cols = {int(b): i for i, b in enumerate(val["base_global_index"])}
    x = val["gradients"][:, [cols[int(b)] for b in g]].astype(np.float64)
    enc_w, enc_b = w["encoder.0.linear.weight"][0].astype(np.float64), float(w["encoder.0.linear.bias"][0])
    labels = val["labels"].astype(np.float64)
    pre_before, pre_after = x @ enc_w + enc_b, x[:, keep] @ enc_w[keep] + enc_b
    out_ratio = _cohen_d(np.tanh(pre_after), labels) / _cohen_d(np.tanh(pre_before), labels)
    pre_ratio = _cohen_d(pre_after, labels) / _cohen_d(pre_before, labels)
    table = next(df.value for df in at.dataframe if "measure" in df.value.columns)
    assert list(table.columns) == ["measure", "as saved (8,922 dims)", f"after the cut ({k:,} dims)", "kept"]
    kept = dict(zip(table["measure"], table["kept"]))
    assert metric(at, "Separation kept, encoder output").value == kept["separation, encoder output"]
    assert kept["separation, encoder output"] == format_percent(out_ratio)
    assert metric(at, "Separation kept, pre-activation").value == kept["separation, pre-activation"]
    assert kept["separation, pre-activation"] == format_percent(pre_ratio)
    assert not any("unpruned (" in c for c in table.columns)


# -------------------------------------------------------------------------------- charts
def _log_axes(spec):
    for name, axis in spec["layout"].items():
        if name.startswith(("xaxis", "yaxis")) and isinstance(axis, dict):
            yield name, axis


def test_float16_charts_cover_the_positive_values_and_count_the_zeros(half):
    imp = importance(half)
    zeros = int((imp == 0).sum())
    smallest = float(imp[imp > 0].min())
    assert zeros > 0
    for view in ("Selection", "Distributions", "Compare parts"):
        at = open_app(half, view)
        assert not at.error, [e.value for e in at.error]
        for spec, _ in charts(at):
            title = spec["layout"]["title"]["text"]
            for name, axis in _log_axes(spec):
                ticks = [float(v) for v in axis.get("tickvals", [])]
                if not ticks or "importance" not in axis.get("title", {}).get("text", ""):
                    continue
                if axis.get("type") == "log":
                    assert min(ticks) >= smallest / 10, (view, title, name, ticks)
                else:  # the histogram: bins in log10 units
                    assert min(ticks) >= math.log10(smallest) - 1, (view, title, name, ticks)
            if "of every dim" in title:
                assert f"{zeros:,} dims with importance 0" in title


def test_a_mask_alone_draws_no_cut_in_any_chart(plain):
    at = open_app(plain)
    at.session_state["name_include"] = r"weight$"
    at.text_input(key="topk").set_value("").run()
    for view in ("Selection", "Distributions"):
        show(at, view)
        figures = charts(at)
        assert figures
        for spec, _ in figures:
            assert not any(t.get("name", "").startswith("cut") for t in spec["data"]), (view, spec["layout"]["title"])
            assert not spec["layout"].get("shapes")


def test_threshold_input_steps_with_the_parts_scale(plain):
    at = open_app(plain)
    for part in ("decoder-weight", "decoder-bias"):
        at.selectbox(key="part").set_value(part).run()
        largest = float(np.max(importance(plain, part)))
        assert at.number_input(key="threshold").step == pytest.approx(10.0 ** (math.floor(math.log10(largest)) - 1))
    at.number_input(key="threshold").set_value(1e-5).run()
    imp = importance(plain, "decoder-bias")
    at.text_input(key="topk").set_value("").run()
    assert metric(at, "Input dims kept").value == f"{int((imp >= np.float32(1e-5)).sum()):,}"


# ---------------------------------------------------------------------------- words, tables
def test_tables_show_no_none_or_null():
    for path, views in (
        (SAMPLES / "number-unpruned", ("Where in the model", "Top-k table", "Training")),
        (PRE, ("Pruning stages", "Training")),
    ):
        for view in views:
            at = open_app(path, view)
            assert at.dataframe, view
            for df in at.dataframe:
                frame = df.value
                assert not frame.isna().any().any(), (view, frame.columns)
                text = frame.astype(str)
                assert not text.isin(["None", "null", "nan", "NaN", "True", "False"]).any().any(), (view, frame.columns)


def test_top_k_table_names_tokens_of_embedding_rows():
    at = open_app(SAMPLES / "number-unpruned", "Top-k table", topk="300")
    vocab = (SAMPLES / "base" / "tiny-bert" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    table = next(df.value for df in at.dataframe if "token" in df.value.columns)
    rows = table[table["parameter"] == "bert.embeddings.word_embeddings.weight"]
    assert len(rows) > 0
    for coords, token in zip(rows["coords"], rows["token"]):
        assert token == vocab[int(re.match(r"\((\d+),", coords).group(1))]
    assert (table[table["parameter"] != "bert.embeddings.word_embeddings.weight"]["token"] == "-").all()


def test_path_input_is_trimmed_and_errors_name_the_path_once(plain, tmp_path):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").set_value(f"  {plain}\n").run()
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "input_dim (dims)").value == f"{N:,}"
    missing = tmp_path / "no-such-checkpoint"
    at.text_input(key="model_path").set_value(f" {missing} ").run()
    text = " ".join(e.value for e in at.error)
    assert text.count(str(missing)) == 1, text


def test_refused_export_names_the_checkbox_not_a_python_keyword(plain, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    at = open_app(plain, topk="10")
    at.text_input(key="export_dir").set_value(str(full)).run()
    at.button(key="export").click().run()
    text = " ".join(e.value for e in at.sidebar.error)
    assert "tick 'Replace a non-empty directory'" in text and "overwrite=True" not in text
    assert main(["prune", str(plain), "--topk", "10", "--out", str(full)]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "overwrite=True" not in err
