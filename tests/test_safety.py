"""Nothing runs that should not, nothing is lost, and sessions do not see each other's state."""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from streamlit.testing.v1 import AppTest

from gradiend_core import CheckpointError, export_pruned, read_checkpoint
from gradiend_core.checkpoint.archive import extract_checkpoint_zip, zip_directory

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def _ref_checkpoint(path: Path, seed: int = 0, use_safetensors: bool = True) -> Path:
    torch.manual_seed(seed)
    pm = {"enc.weight": {"shape": (30, 20), "repr": "all"}, "enc.bias": {"shape": (30,), "repr": "all"}}
    RefModel(630, 1, pm, device=torch.device("cpu"), base_model="safety").save_pretrained(
        str(path), use_safetensors=use_safetensors
    )
    return path


class _RunsCode:
    """Unpickling this would create the file named in ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_crafted_to_run_code_is_refused_and_code_does_not_run(tmp_path):
    ckpt = _ref_checkpoint(tmp_path / "ck", use_safetensors=False)
    marker = tmp_path / "pwned"
    weights = ckpt / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    state["evil"] = _RunsCode(str(marker))
    torch.save(state, weights)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_checkpoint(ckpt)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    ckpt = _ref_checkpoint(tmp_path / "ck", use_safetensors=False)
    marker = tmp_path / "pwned2"
    with open(ckpt / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _RunsCode(str(marker))}, f)
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        read_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        ("../escape/config.json", "outside the target directory"),
        ("/abs/config.json", "outside the target directory"),
    ],
)
def test_zip_entries_escaping_target_are_refused(tmp_path, entry, message):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(entry, "{}")
    with pytest.raises(CheckpointError, match=message):
        extract_checkpoint_zip(buf.getvalue(), tmp_path / "dest")
    assert not (tmp_path / "escape").exists()


def test_zip_symlink_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("ck/config.json")
        info.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(CheckpointError, match="symbolic link"):
        extract_checkpoint_zip(buf.getvalue(), tmp_path / "dest")


def test_zip_over_size_limit_and_without_checkpoint(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ck/big.bin", b"\0" * 5000)
    with pytest.raises(CheckpointError, match="exceeds the limit of 1,000 bytes"):
        extract_checkpoint_zip(buf.getvalue(), tmp_path / "d1", max_bytes=1000)
    with pytest.raises(CheckpointError, match="holds no config.json"):
        extract_checkpoint_zip(buf.getvalue(), tmp_path / "d2")
    with pytest.raises(CheckpointError, match="not a readable .zip"):
        extract_checkpoint_zip(b"not a zip", tmp_path / "d3")


def test_zip_round_trip_opens_same_checkpoint(tmp_path):
    ckpt = _ref_checkpoint(tmp_path / "ck")
    out = extract_checkpoint_zip(zip_directory(ckpt), tmp_path / "dest")
    a, b = read_checkpoint(ckpt), read_checkpoint(out)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def _tree_digest(path: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_concurrent_exports_from_one_shared_checkpoint(tmp_path):
    ckpt = _ref_checkpoint(tmp_path / "ck")
    before = _tree_digest(ckpt)
    data = read_checkpoint(ckpt)  # one shared object, as the dashboard's cache holds it
    snapshot = {k: v.clone() for k, v in data.state_dict.items()}
    settings = [dict(topk=k) for k in (5, 50, 0.1, 0.5)] + [dict(threshold=0.0, topk=7)]
    errors = []

    def work(i, kw):
        try:
            export_pruned(data, tmp_path / f"out{i}", part="decoder-weight", **kw)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, kw)) for i, kw in enumerate(settings)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ref = RefModel.from_pretrained(str(ckpt))
    for i, kw in enumerate(settings):
        expected = ref.prune(part="decoder-weight", **kw)
        got = RefModel.from_pretrained(str(tmp_path / f"out{i}"))
        assert torch.equal(got._get_base_global_index_map(), expected._get_base_global_index_map()), kw
    assert all(torch.equal(snapshot[k], v) for k, v in data.state_dict.items())
    assert _tree_digest(ckpt) == before


def test_two_app_sessions_keep_their_own_selection(tmp_path):
    ckpt = _ref_checkpoint(tmp_path / "ck")
    a = AppTest.from_file(APP, default_timeout=120)
    b = AppTest.from_file(APP, default_timeout=120)
    for at in (a, b):
        at.query_params["model"] = str(ckpt)
        at.run()
    a.text_input(key="topk").set_value("10").run()
    b.text_input(key="topk").set_value("100").run()
    a.text_input(key="export_dir").set_value(str(tmp_path / "a")).run()
    b.text_input(key="export_dir").set_value(str(tmp_path / "b")).run()
    a.button(key="export").click().run()
    b.button(key="export").click().run()
    assert RefModel.from_pretrained(str(tmp_path / "a")).input_dim == 10
    assert RefModel.from_pretrained(str(tmp_path / "b")).input_dim == 100


def test_allowed_roots_restrict_paths(tmp_path, monkeypatch):
    ckpt = _ref_checkpoint(tmp_path / "outside" / "ck")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("GRADIEND_DASHBOARD_ROOTS", str(allowed))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = str(ckpt)
    at.run()
    assert any("outside the directories this dashboard may use" in e.value for e in at.error)
