"""The dashboard page driven by Streamlit's AppTest: open, change the selection, export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


@pytest.fixture(scope="module")
def app_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written by the reference package: 2 parameters, 1,300 input dims."""
    torch.manual_seed(7)
    pm = {"layer.0.weight": {"shape": (40, 30), "repr": "all"}, "layer.0.bias": {"shape": (100,), "repr": "all"}}
    ref = RefModel(1300, 1, pm, device=torch.device("cpu"), base_model="app-test-base")
    d = tmp_path_factory.mktemp("app") / "ckpt"
    ref.save_pretrained(str(d))
    return d


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _open(path: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = str(path)
    at.run()
    assert not at.exception, at.exception
    return at


def test_opens_checkpoint_and_shows_summary(app_checkpoint):
    at = _open(app_checkpoint)
    assert not at.error
    assert any("base model **app-test-base**" in c.value for c in at.caption)
    assert _metric(at, "input_dim (dims)") == "1,300"
    # default selection: decoder-weight, topk=0.05 -> ceil(0.05 * 1300) = 65 dims
    assert _metric(at, "Input dims kept") == "65"


def test_changing_topk_changes_preview(app_checkpoint, tmp_path):
    at = _open(app_checkpoint)
    at.text_input(key="topk").set_value("200").run()
    assert _metric(at, "Input dims kept") == "200"
    # 3 * 200 + 1 GRADIEND parameters after (encoder weight + decoder weight + decoder bias + encoder bias)
    assert _metric(at, "GRADIEND parameters") == f"{3 * 200 + 1:,}"
    at.text_input(key="topk").set_value("1%").run()
    assert _metric(at, "Input dims kept") == str(math.ceil(0.01 * 1300))


def test_threshold_and_part(app_checkpoint):
    ref = RefModel.from_pretrained(str(app_checkpoint))
    imp = ref.get_weight_importance("encoder-weight").float().numpy()
    thr = float(np.quantile(imp, 0.9))
    at = _open(app_checkpoint)
    at.selectbox(key="part").set_value("encoder-weight").run()
    at.text_input(key="topk").set_value("").run()
    at.number_input(key="threshold").set_value(thr).run()
    assert _metric(at, "Input dims kept") == f"{int((imp >= thr).sum()):,}"


def test_invalid_topk_shows_error_not_traceback(app_checkpoint):
    at = _open(app_checkpoint)
    at.text_input(key="topk").set_value("2.5").run()
    assert not at.exception
    assert any("(0, 1]" in e.value for e in at.error)


def test_export_writes_model_the_reference_loads(app_checkpoint, tmp_path):
    at = _open(app_checkpoint)
    at.text_input(key="topk").set_value("0.1").run()
    out = tmp_path / "exported"
    at.text_input(key="export_dir").set_value(str(out)).run()
    at.button(key="export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    loaded = RefModel.from_pretrained(str(out))
    expected = RefModel.from_pretrained(str(app_checkpoint)).prune(topk=0.1, part="decoder-weight")
    assert loaded.input_dim == expected.input_dim == math.ceil(0.1 * 1300)
    assert torch.equal(loaded._get_base_global_index_map(), expected._get_base_global_index_map())
    x = torch.randn(loaded.input_dim)
    torch.testing.assert_close(loaded(x), expected(x), atol=1e-6, rtol=0)
    assert any(getattr(b, "key", None) == "download_export" for b in at.get("download_button"))


def test_bad_path_shows_clear_error(tmp_path):
    at = _open(tmp_path / "does-not-exist")
    assert any("no such file or directory" in e.value for e in at.error)


def test_opens_bundled_sample_by_default():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and not at.error
    assert int(_metric(at, "latent_dim")) >= 1


def test_name_filter_composes_with_topk_and_reproduces_via_cli(app_checkpoint, tmp_path):
    from gradiend_core import read_checkpoint
    from gradiend_core.cli import main

    at = _open(app_checkpoint)
    at.session_state["name_include"] = r"weight$"
    at.text_input(key="topk").set_value("0.5").run()
    # the filter keeps the 1,200 entries of layer.0.weight; topk 0.5 of those -> 600
    assert _metric(at, "Input dims kept") == "600"
    out = tmp_path / "filtered"
    at.text_input(key="export_dir").set_value(str(out)).run()
    at.button(key="export").click().run()
    assert not at.error, [e.value for e in at.error]
    data = read_checkpoint(out)
    assert [e.name for e in data.param_map if e.num_selected] == ["layer.0.weight"]
    assert data.side_files["pruning.json"]["name_include"] == r"weight$"
    cli_out = tmp_path / "cli"
    assert main(["prune", str(app_checkpoint), "--topk", "0.5", "--include", r"weight$", "--out", str(cli_out)]) == 0
    for f in ("model.safetensors", "config.json"):
        assert (cli_out / f).read_bytes() == (out / f).read_bytes(), f


def test_weights_stay_in_their_file_and_sessions_share_one_summary(app_checkpoint, tmp_path, monkeypatch):
    """The page never loads the weights whole; two sessions share one summary pass over them."""
    import shutil

    import gradiend_core.ranking.importance as importance
    from gradiend_core.checkpoint import CheckpointData

    ck = tmp_path / "big"
    shutil.copytree(app_checkpoint, ck)
    passes = []
    real = importance.iter_part_importance

    def counting(data, part, block_dims=None):
        if Path(data.path).resolve() == ck.resolve():  # other tests' background builds do not count
            passes.append(part)
        return real(data, part, block_dims)

    monkeypatch.setattr(importance, "iter_part_importance", counting)
    monkeypatch.setattr("gradiend_core.ranking.store.disk.iter_part_importance", counting)
    loads = []
    real_state = CheckpointData.state_dict.fget
    monkeypatch.setattr(
        CheckpointData, "state_dict", property(lambda self: loads.append(self.path) or real_state(self))
    )
    first, second = _open(ck), _open(ck)
    for at in (first, second):
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert _metric(at, "Input dims kept") == "65"
    assert passes.count("decoder-weight") >= 1 and not loads
    from gradiend_core.ranking import store

    assert store.wait_for_layouts(timeout=300)  # the layouts the first sessions queued are built
    summaries = passes.count("decoder-weight")
    _open(ck)
    assert passes.count("decoder-weight") == summaries  # a third session streams nothing new
