"""The analysis views in the running page (Streamlit AppTest): every view renders, every figure
has a title, axis titles and the PNG download config, and the controls do what they say."""

from __future__ import annotations

import base64
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from gradiend.trainer.core.arguments import TrainingArguments
from gradiend.trainer.core.pruning import PostPruneConfig
from gradiend.trainer.core.stats import write_training_stats
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
NEW_TABS = ["Distributions", "Compare parts", "Where in the model", "Top-k table", "Compare models", "Training"]
PARAMS = {
    "bert.embeddings.word_embeddings.weight": (40, 16),
    "bert.encoder.layer.0.attention.self.query.weight": (16, 16),
    "bert.encoder.layer.0.attention.self.query.bias": (16,),
    "bert.encoder.layer.0.intermediate.dense.weight": (32, 16),
    "bert.encoder.layer.1.output.dense.weight": (16, 32),
    "bert.encoder.layer.1.output.LayerNorm.weight": (16,),
}
N = sum(math.prod(s) for s in PARAMS.values())  # 1,824


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A BERT-named model written by the reference: unpruned (with a trainer-written training.json)
    and pruned to 600 dims."""
    root = tmp_path_factory.mktemp("views")
    torch.manual_seed(5)
    ref = Ref(
        N,
        1,
        {n: {"shape": s, "repr": "all"} for n, s in PARAMS.items()},
        device=torch.device("cpu"),
        base_model="views-base",
    )
    with torch.no_grad():
        ref.decoder[0].linear.weight.copy_(torch.randn(N, 1) ** 3)
        ref.decoder[0].linear.bias.copy_(torch.randn(N))
    ref.save_pretrained(str(root / "full"))
    args = TrainingArguments(output_dir=str(root / "full"), post_prune_config=PostPruneConfig(topk=600))
    write_training_stats(
        str(root / "full"),
        training_stats={"global_step": 6, "correlation": 0.7, "scores": {0: 0.1, 3: 0.4, 6: 0.7}},
        best_score_checkpoint={"correlation": 0.7, "global_step": 6, "epoch": 0},
        training_args=args.to_dict(),
        losses=[1.0, 0.8, 0.7, 0.6, 0.5, 0.45],
        convergence_info={"converged": True, "threshold": 0.5},
    )
    ref.prune(topk=600, part="decoder-weight", inplace=True)
    ref.save_pretrained(str(root / "pruned"))
    return {"full": root / "full", "pruned": root / "pruned"}


def open_app(path: Path, view: str | None = None) -> AppTest:
    """Open the page on ``path`` with ``view`` as the open tab (only the open tab runs)."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = str(path)
    if view is not None:
        at.query_params["view"] = view
    at.run()
    assert not at.exception, at.exception
    return at


def decode(obj):
    """Plotly's JSON with its typed arrays (``{"dtype", "bdata", "shape"}``) turned into numpy."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            shape = obj.get("shape")
            return arr.reshape([int(d) for d in str(shape).split(",")]) if shape else arr
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def charts(at: AppTest):
    """``(figure as a dict with arrays decoded, config)`` of every Plotly chart in the page."""
    return [(decode(json.loads(c.proto.spec)), json.loads(c.proto.config or "{}")) for c in at.get("plotly_chart")]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("which", ["full", "pruned"])
def test_every_view_renders_with_titled_downloadable_figures(checkpoints, which):
    pages = [open_app(checkpoints[which], view) for view in NEW_TABS]
    for at in pages:
        assert not at.error, [e.value for e in at.error]
        assert [t.label for t in at.tabs][: 1 + len(NEW_TABS)] == ["Selection"] + NEW_TABS
    expected = {
        "ecdf_decoder-weight",
        "layer_component_heatmap",
        "part_spearman",
        "part_topk_overlap",
        "part_upset",
        "retained_mass_decoder-weight",
        "scatter_decoder-weight_vs_encoder-weight",
    } | ({"training_record"} if which == "full" else set())
    every = [c for at in pages for c in charts(at)]
    ours = [
        (spec, config)
        for spec, config in every
        if config.get("toImageButtonOptions", {}).get("filename") in expected | {"training_record"}
    ]
    assert sorted(config["toImageButtonOptions"]["filename"] for _, config in ours) == sorted(expected)
    for spec, config in ours:
        layout = spec["layout"]
        assert layout["title"]["text"], layout
        axes = [
            v for k, v in layout.items() if k.startswith(("xaxis", "yaxis")) and isinstance(v, dict) and "title" in v
        ]
        assert axes and all(a["title"]["text"] for a in axes)
        assert all(t.get("hovertemplate") or t.get("hoverinfo") == "skip" for t in spec["data"])
        assert config["displaylogo"] is False and config["toImageButtonOptions"]["format"] == "png"
    assert metric(pages[NEW_TABS.index("Distributions")], "topk for 90% of the mass")
    assert sum(len(at.dataframe) for at in pages) >= 2  # per-parameter table, top-k table


def brute_count(importance: np.ndarray, share: float) -> int:
    cum = np.cumsum(np.sort(importance.astype(np.float64))[::-1])
    return int(np.argmax(cum >= share * cum[-1])) + 1


def test_target_mass_sets_sidebar_topk(checkpoints):
    at = open_app(checkpoints["full"], "Distributions")
    imp = Ref.from_pretrained(str(checkpoints["full"])).get_weight_importance("encoder-weight").float().numpy()
    at.selectbox(key="dist_part").set_value("encoder-weight").run()
    at.number_input(key="target_mass_pct").set_value(75.0).run()
    at.button(key="target_mass_apply").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    k = brute_count(imp, 0.75)
    assert at.text_input(key="topk").value == str(k)
    assert at.selectbox(key="part").value == "encoder-weight"
    assert metric(at, "Input dims kept") == f"{k:,}"
    assert any(f"topk set to {k:,}" in s.value for s in at.success)


def test_name_filter_is_stored_for_the_selection(checkpoints):
    at = open_app(checkpoints["full"], "Where in the model")
    at.text_input(key="name_include_input").set_value(r"encoder\.layer\.0").run()
    at.text_input(key="name_exclude_input").set_value("bias$").run()
    assert any("Matches 2 of 6 parameters" in c.value for c in at.caption)
    at.button(key="name_filter_apply").click().run()
    assert at.session_state["name_include"] == r"encoder\.layer\.0" and at.session_state["name_exclude"] == "bias$"
    assert any("Name filter set" in i.value for i in at.info)
    at.button(key="name_filter_clear").click().run()
    assert at.session_state["name_include"] is None and at.text_input(key="name_include_input").value == ""
    at.text_input(key="name_include_input").set_value("(").run()
    assert any("invalid parameter-name pattern" in e.value for e in at.error)


def test_compare_models_with_a_pruned_version(checkpoints, tmp_path):
    at = open_app(checkpoints["full"], "Compare models")
    at.multiselect(key="models_samples").set_value([]).run()
    at.text_area(key="models_paths").set_value(str(checkpoints["pruned"])).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    spec = next(s for s, _ in charts(at) if "overlap of models" in s["layout"]["title"]["text"])
    z = np.asarray(spec["data"][0]["z"], dtype=float)
    # default topk 0.05: each model keeps ceil(0.05 * its input_dim) dims;
    # pruning by decoder-weight keeps the top dims in place, so the pruned set lies inside the full one; the default
    # is the intersection in dims (a percentage of the smaller set would read 100 %), and the labels give the set sizes
    n_full, n_pruned = (
        math.ceil(0.05 * Ref.from_pretrained(str(checkpoints[w])).input_dim) for w in ("full", "pruned")
    )
    assert z.shape == (2, 2) and z[0, 1] == z[1, 0] == n_pruned and z[0, 0] == n_full
    sizes = [t.split("<br>")[1] for t in spec["layout"]["yaxis"]["ticktext"]]
    assert sizes == [f"|A| = {n_full:,} dims", f"|A| = {n_pruned:,} dims"]
    at.radio(key="models_value").set_value("overlap (% of the smaller set)").run()
    spec = next(s for s, _ in charts(at) if "overlap of models" in s["layout"]["title"]["text"])
    assert np.asarray(spec["data"][0]["z"], dtype=float)[0, 1] == 100.0
    # a model of another base is refused with a message
    other = tmp_path / "other"
    torch.manual_seed(0)
    Ref(
        10, 1, {"x.weight": {"shape": (10,), "repr": "all"}}, device=torch.device("cpu"), base_model="other"
    ).save_pretrained(str(other))
    at.text_area(key="models_paths").set_value(f"{checkpoints['pruned']}\n{other}").run()
    assert not at.exception
    assert any("map different base-model parameters" in e.value for e in at.error)


def test_training_view_without_training_json(checkpoints):
    at = open_app(checkpoints["pruned"], "Training")
    assert any("no training.json" in c.value for c in at.caption)


def test_training_view_with_trainer_record(checkpoints):
    at = open_app(checkpoints["full"], "Training")
    assert metric(at, "Best step") == "6" and metric(at, "Converged") == "yes"
    spec = next(s for s, _ in charts(at) if s["layout"]["title"]["text"].startswith("Training record"))
    score = next(t for t in spec["data"] if t["name"] == "score")
    assert list(score["x"]) == [0, 3, 6] and list(score["y"]) == [0.1, 0.4, 0.7]


def test_topk_view_without_topk_and_with_threshold(checkpoints):
    at = open_app(checkpoints["full"], "Compare parts")
    at.text_input(key="topk").set_value("").run()
    at.number_input(key="threshold").set_value(0.5).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Set a topk in the sidebar" in i.value for i in at.info)


def test_unreadable_other_checkpoint_is_reported(checkpoints, tmp_path):
    bad = tmp_path / "broken"
    shutil.copytree(checkpoints["pruned"], bad)
    (bad / "config.json").write_text("{")
    at = open_app(checkpoints["full"], "Compare models")
    at.multiselect(key="models_samples").set_value([]).run()
    at.text_area(key="models_paths").set_value(str(bad)).run()
    assert not at.exception
    assert any("not valid UTF-8 JSON" in e.value for e in at.error)


def test_views_follow_a_gradient_mean_part():
    """The sidebar may rank by the pre-prune record ("gradient-mean", bundled pre-pruned samples)."""
    from dashboard.services.loading import has_pre_prune_record, sample_models

    with_record = [p for _, p in sample_models() if has_pre_prune_record(str(p))]
    assert with_record, "no bundled sample with pre_prune.safetensors: build the samples (sample_models/)"
    pages = {}
    for view in NEW_TABS:
        at = open_app(with_record[0], view)
        at.selectbox(key="part").set_value("gradient-mean").run()
        assert not at.exception and not at.error, (view, [e.value for e in at.error])
        pages[view] = at
    assert pages["Distributions"].selectbox(key="dist_part").value == "gradient-mean"
    assert pages["Compare models"].selectbox(key="models_part").value == "decoder-weight"
    assert any("gradient-mean" in c.value for c in pages["Top-k table"].markdown)  # the top-k table's heading
