"""Building a mask in the page by pointing, driven by Streamlit's AppTest on the bundled samples.

A chart selection is sent the way the browser sends it (a JSON string widget value for the
chart's element id, see :func:`select`); what a real click produces is checked by
``tests/test_browser_mask.py``. Expected sets are computed without the core: the reference
package's own ``prune`` for top-k sets, the parameter shapes for name terms.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")
NUMBER = REPO / "sample_models" / "number-unpruned"
GENDER = REPO / "sample_models" / "gender-unpruned"
PARTS = ("encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum")


# ------------------------------------------------------------------------------------ helpers
def open_app(view: str | None = None, model: Path = NUMBER, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["model"] = str(model)
    if view:
        at.query_params["view"] = view
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chart(at: AppTest, key_prefix: str):
    """The Plotly chart whose key starts with ``key_prefix`` (keys carry a pick generation)."""
    return next(c for c in at.get("plotly_chart") if (c.key or "").startswith(key_prefix))


def spec(element) -> dict:
    from tests.test_figures_views import decode

    return decode(json.loads(element.proto.spec))


def select(at: AppTest, element, selection: dict) -> AppTest:
    """Rerun with ``selection`` as the selection state of a chart or table, as the frontend sends it
    (AppTest has no way to click a chart: its widget state is added to the others by hand)."""
    states = at._tree.get_widget_states()
    extra = WidgetStates()
    w = extra.widgets.add()
    w.id = element.proto.id
    w.string_value = json.dumps({"selection": selection})
    states.widgets.extend(extra.widgets)
    at._run(states)
    assert not at.exception, at.exception
    return at


def click_cells(at: AppTest, key_prefix: str, cells) -> AppTest:
    """Pick heatmap cells ``[(row label, column label), ...]`` on a chart with cell targets."""
    el = chart(at, key_prefix)
    target = next(t for t in spec(el)["data"] if t.get("name") == "cell targets")
    points = []
    for i, (x, y, cd) in enumerate(zip(target["x"], target["y"], target["customdata"])):
        if (y, x) in cells:
            point = {"curve_number": 1, "point_number": i, "point_index": i, "x": x, "y": y, "customdata": list(cd)}
            points.append(point)
    assert len(points) == len(cells), (cells, target["y"], target["x"])
    indices = [p["point_index"] for p in points]
    return select(at, el, {"points": points, "point_indices": indices, "box": [], "lasso": []})


def click_bar(at: AppTest, key_prefix: str, label: str) -> AppTest:
    el = chart(at, key_prefix)
    bar = spec(el)["data"][0]
    i = list(bar["x"]).index(label)
    point = {
        "curve_number": 0,
        "point_number": i,
        "point_index": i,
        "x": label,
        "y": int(bar["y"][i]),
        "customdata": int(bar["customdata"][i]),
    }
    return select(at, el, {"points": [point], "point_indices": [i], "box": [], "lasso": []})


def expression(at: AppTest):
    return at.session_state["mask_expr"]


def ref_topk(path: Path, part: str, topk) -> set:
    """The reference package's own top-k of ``part``: base-global indices it keeps."""
    ref = RefModel.from_pretrained(str(path))
    return set(ref.prune(topk=topk, part=part)._get_base_global_index_map().tolist())


def ref_param_counts(path: Path):
    """``{name: entries}`` of the mapped parameters, from the reference's param_map (all mapped whole)."""
    ref = RefModel.from_pretrained(str(path))
    return {n: int(np.prod(spec_["shape"])) for n, spec_ in ref.param_map.items()}


# ------------------------------------------------------------------------------------ tests
def test_heatmap_cells_build_a_name_term_and_the_plan_uses_it():
    at = open_app("Where in the model")
    at = click_cells(at, "where_heatmap", {("layer 1", "query"), ("layer 1", "key")})
    assert any(c.value.startswith("^bert") or "name(" in c.value for c in at.code)
    at.button(key="where_heatmap_pick_include").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    expr = expression(at)
    assert expr.startswith("name(") and "layer\\.1\\.attention\\.self\\.(?:" in expr
    counts = ref_param_counts(NUMBER)
    rule = r"bert\.encoder\.layer\.1\.attention\.self\.(query|key)\.(weight|bias)"
    picked = {n: c for n, c in counts.items() if re.fullmatch(rule, n)}
    assert len(picked) == 4
    kept = sum(picked.values())  # 2 x (64 x 64 + 64) = 8,320
    assert any(f"Keeps **{kept:,}**" in c.value for c in at.caption)
    # the panel's preview: kept dims per layer x component, before threshold and topk
    preview = spec(chart(at, "mask_preview"))["data"][0]
    z = np.nan_to_num(np.asarray(preview["z"], dtype=float))
    cells = {(y, x): z[i, j] for i, y in enumerate(preview["y"]) for j, x in enumerate(preview["x"]) if z[i, j]}
    per_cell = {("layer 1", c): sum(v for n, v in picked.items() if f".{c}." in n) for c in ("query", "key")}
    assert cells == per_cell
    # the sidebar topk (0.05) is a fraction of what the mask leaves
    assert metric(at, "Input dims kept") == f"{math.ceil(0.05 * kept):,}"
    assert at.query_params["mask_expr"] == expr  # a copied link carries it


def test_upset_bar_builds_the_exact_pattern_and_its_count():
    at = open_app("Compare parts")
    label = "encoder-weight & decoder-weight"
    at = click_bar(at, "parts_upset_fig", label)
    at.button(key="parts_upset_pick_intersect").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert expression(at) == (
        "top(encoder-weight, 0.05) & top(decoder-weight, 0.05) & ~top(decoder-bias, 0.05) & ~top(decoder-sum, 0.05)"
    )
    sets = {p: ref_topk(NUMBER, p, 0.05) for p in PARTS}
    exact = (sets["encoder-weight"] & sets["decoder-weight"]) - sets["decoder-bias"] - sets["decoder-sum"]
    assert exact
    assert any(f"Keeps **{len(exact):,}**" in c.value for c in at.caption)
    assert metric(at, "Input dims kept") == f"{math.ceil(0.05 * len(exact)):,}"


def test_table_rows_exclude_and_invert_are_one_click_each():
    at = open_app("Where in the model")
    table = next(d for d in at.dataframe if (d.key or "").startswith("where_table"))
    names = list(table.value["parameter"])
    rows = [names.index(f"bert.embeddings.{n}_embeddings.weight") for n in ("word", "position")]
    at = select(at, table, {"rows": rows, "columns": [], "cells": []})
    at.button(key="where_table_pick_exclude").click().run()
    counts = ref_param_counts(NUMBER)
    total = sum(counts.values())
    dropped = counts["bert.embeddings.word_embeddings.weight"] + counts["bert.embeddings.position_embeddings.weight"]
    assert expression(at).startswith("~name(")
    assert any(f"Keeps **{total - dropped:,}**" in c.value for c in at.caption)
    at.button(key="mask_invert").click().run()
    assert expression(at).startswith("name(")
    assert any(f"Keeps **{dropped:,}**" in c.value for c in at.caption)
    at.button(key="mask_invert").click().run()  # inverting twice gives the expression back
    assert expression(at).startswith("~name(")
    at.button(key="mask_clear").click().run()
    assert expression(at) is None and "mask_expr" not in at.query_params
    assert metric(at, "Input dims kept") == f"{math.ceil(0.05 * total):,}"


def test_typed_expression_error_points_and_keeps_the_last_valid_one():
    at = open_app()
    at.text_area(key="mask_expr_text").set_value("top(decoder-weight, 5%) & top(encoder-weight, 5%)").run()
    good = expression(at)
    assert good == "top(decoder-weight, 0.05) & top(encoder-weight, 0.05)"
    both = ref_topk(NUMBER, "decoder-weight", 0.05) & ref_topk(NUMBER, "encoder-weight", 0.05)
    assert any(f"Keeps **{len(both):,}**" in c.value for c in at.caption)
    at.text_area(key="mask_expr_text").set_value("top(decoder-weight, 5%) & top(encoder-weigth, 5%)").run()
    assert not at.exception
    message = "\n".join(e.value for e in at.error)
    assert "column 31: unknown part 'encoder-weigth'" in message
    caret_line = next(line for line in message.splitlines() if line.strip().startswith("^"))
    assert caret_line.index("^") - 4 == 30  # under column 31 of the expression shown below "    "
    assert expression(at) == good and "last valid expression stays applied" in message
    assert metric(at, "Input dims kept") == f"{math.ceil(0.05 * len(both)):,}"
    assert at.text_area(key="mask_expr_text").value.endswith("encoder-weigth, 5%)")  # the text stays to be fixed


def test_url_expression_applies_and_a_bad_one_names_the_parameter():
    both = ref_topk(NUMBER, "decoder-weight", 0.05) & ref_topk(NUMBER, "encoder-weight", 0.05)
    at = open_app(mask_expr="top(decoder-weight, 5%) & top(encoder-weight, 5%)", topk="1.0")
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Input dims kept") == f"{len(both):,}"
    at = open_app(mask_expr="top(decoder-weight, 5%) && top(encoder-weight, 5%)", topk="100")
    assert not at.exception
    message = "\n".join(e.value for e in at.error)
    assert "URL parameter mask_expr" in message and "column 26" in message and "^" in message
    assert expression(at) is None and metric(at, "Input dims kept") == "100"  # the page stays usable


def test_saved_masks_save_switch_delete_download_and_reload():
    from dashboard.state.masks import bundle_bytes
    from gradiend_core import read_checkpoint
    from gradiend_core.selection.expr.bundle import load_mask_bundle

    at = open_app()
    at.text_area(key="mask_expr_text").set_value("top(decoder-weight, 5%) & ~name('embeddings')").run()
    first = expression(at)
    at.text_input(key="mask_save_name").set_value("decoder, no embeddings").run()
    at.button(key="mask_save").click().run()
    at.text_area(key="mask_expr_text").set_value("top(encoder-weight, 100)").run()
    at.text_input(key="mask_save_name").set_value("encoder 100").run()
    at.button(key="mask_save").click().run()
    saved = {"decoder, no embeddings": first, "encoder 100": "top(encoder-weight, 100)"}
    assert at.session_state["saved_masks"] == saved
    at.button(key="mask_saved_apply_0").click().run()  # switch
    assert expression(at) == first
    buttons = {b.key: b for b in at.get("download_button")}
    assert buttons["mask_saved_download_0"].proto.deferred_file_id  # built on click, by bundle_bytes
    # the download: expression plus the bool mask over base-global indices
    counts = ref_param_counts(NUMBER)
    offsets = np.cumsum([0] + list(counts.values()))
    embeddings = {i for (n, c), o in zip(counts.items(), offsets) if "embeddings" in n for i in range(o, o + c)}
    expected = ref_topk(NUMBER, "decoder-weight", 0.05) - embeddings
    raw = bundle_bytes(str(NUMBER), read_checkpoint(NUMBER), "decoder, no embeddings", first)
    bundle = load_mask_bundle(raw)
    assert bundle.name == "decoder, no embeddings" and bundle.expression == first
    assert bundle.mask.dtype == np.bool_ and bundle.mask.shape == (int(offsets[-1]),)
    assert set(np.flatnonzero(bundle.mask).tolist()) == expected and embeddings
    at.button(key="mask_saved_delete_1").click().run()
    assert list(at.session_state["saved_masks"]) == ["decoder, no embeddings"]
    # reload by upload into a fresh session
    fresh = open_app()
    upload = ("decoder-no-embeddings.safetensors", raw, "application/octet-stream")
    fresh.file_uploader(key="mask_upload").set_value(upload).run()
    assert not fresh.exception and not fresh.error, [e.value for e in fresh.error]
    assert expression(fresh) == first and fresh.session_state["saved_masks"] == {"decoder, no embeddings": first}
    assert any(f"Keeps **{len(expected):,}**" in c.value for c in fresh.caption)


def test_compare_models_cell_builds_shared_dims_and_export_records_it(tmp_path, monkeypatch):
    """The dims the number and the gender GRADIEND share, picked on the Compare models matrix, exported."""
    import hashlib
    import shlex

    from gradiend_core.cli import main

    monkeypatch.chdir(REPO)  # expressions name samples relative to the working directory, as the page shows them
    at = open_app("Compare models")
    at.multiselect(key="models_samples").set_value(["gender-unpruned"]).run()
    el = chart(at, "models_heatmap")
    fig = spec(el)
    assert fig["layout"]["title"]["text"].startswith("Top-k overlap of models: |A∩B| (dims)")  # counts by default
    ticks = list(fig["layout"]["yaxis"]["ticktext"])
    number, gender = ref_topk(NUMBER, "decoder-weight", 0.05), ref_topk(GENDER, "decoder-weight", 0.05)
    assert f"|A| = {len(number):,} dims" in ticks[0] and f"|A| = {len(gender):,} dims" in ticks[1]
    z = np.asarray(fig["data"][0]["z"], dtype=float)
    assert z[0, 1] == len(number & gender)
    at = click_cells(at, "models_heatmap", {(fig["data"][0]["y"][0], fig["data"][0]["x"][1])})
    at.button(key="models_pick_include").click().run()
    assert not at.error, [e.value for e in at.error]
    expr = expression(at)
    assert expr == 'top(decoder-weight, 0.05) & model("sample_models/gender-unpruned", decoder-weight, 0.05)'
    shared = number & gender
    assert any(f"Keeps **{len(shared):,}**" in c.value for c in at.caption)
    at.text_input(key="topk").set_value("100").run()
    out = tmp_path / "shared"
    at.text_input(key="export_dir").set_value(str(out)).run()
    at.button(key="export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    record = json.loads((out / "pruning.json").read_text())
    mask = np.zeros(sum(ref_param_counts(NUMBER).values()), dtype=bool)
    mask[sorted(shared)] = True
    assert record["mask_expr"] == expr
    assert record["mask_expr_sha256"] == hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()
    assert record["kept_dims"] == 100
    imp = RefModel.from_pretrained(str(NUMBER)).get_weight_importance("decoder-weight").numpy()
    inside = np.array(sorted(shared))
    expected = np.sort(inside[np.argsort(-imp[inside], kind="stable")[:100]])
    kept = RefModel.from_pretrained(str(out))._get_base_global_index_map().numpy()
    assert np.array_equal(np.sort(kept), expected)
    # "Reproduce this export" shows the command with --mask-expr, and it writes the same bytes
    shown = [c.value for c in at.code]
    command = next(c for c in shown if c.startswith("gradiend-core prune"))
    assert "--mask-expr" in command and any("mask_expr=" in c for c in shown)
    assert main(shlex.split(command)[1:]) == 0
    cli_out = Path(shlex.split(command)[-1])
    for f in ("model.safetensors", "config.json"):
        assert (cli_out / f).read_bytes() == (out / f).read_bytes(), f


def test_compare_models_choices_survive_a_tab_switch(tmp_path):
    at = open_app("Compare models")
    at.multiselect(key="models_samples").set_value(["gender-unpruned"]).run()
    at.text_area(key="models_paths").set_value(str(REPO / "sample_models" / "number-post-pruned")).run()
    at.radio(key="models_value").set_value("Jaccard").run()
    at.tabs  # noqa: B018 - the tab bar is drawn
    at.query_params["view"] = "Selection"
    at.session_state["view"] = "Selection"
    at.run()
    assert not any((c.key or "").startswith("models_heatmap") for c in at.get("plotly_chart"))  # the view is closed
    at.session_state["view"] = "Compare models"
    at.run()
    assert at.multiselect(key="models_samples").value == ["gender-unpruned"]
    assert at.text_area(key="models_paths").value == str(REPO / "sample_models" / "number-post-pruned")
    assert at.radio(key="models_value").value == "Jaccard"


def test_uploading_a_mask_of_another_base_is_refused(tmp_path):
    import torch

    from gradiend_core import read_checkpoint
    from gradiend_core.selection.expr.bundle import make_mask_bundle
    from gradiend_core.selection.expr.evaluate import evaluate_mask_expr

    torch.manual_seed(0)
    other = tmp_path / "other"
    pm = {"layer.0.weight": {"shape": (8, 5), "repr": "all"}}
    RefModel(40, 1, pm, device=torch.device("cpu"), base_model="another-base").save_pretrained(str(other))
    data = read_checkpoint(other)
    raw = make_mask_bundle("theirs", evaluate_mask_expr("top(decoder-weight, 10)", data), "another-base").to_bytes()
    at = open_app()
    at.file_uploader(key="mask_upload").set_value(("theirs.safetensors", raw, "application/octet-stream")).run()
    assert not at.exception
    assert any("theirs.safetensors" in e.value and "mapped parameters" in e.value for e in at.error)
    assert expression(at) is None and at.session_state["saved_masks"] == {}
    assert metric(at, "Input dims kept") == "4,461"  # the page goes on with the sidebar selection
