"""Catalogue of damaged checkpoints: each case is one line (a change to a good checkpoint and the
words the error must contain). Every case must raise CheckpointError, never another exception."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from gradiend_core import CheckpointError, ParamMappedGradiendModel, SelectionError, export_pruned, read_checkpoint
from gradiend_core.archive import extract_checkpoint_zip
from gradiend_core.checkpoint import SafetensorsFile
from gradiend_core.selection import Ranking, select


@pytest.fixture()
def good(tmp_path) -> Path:
    """A checkpoint written by gradiend with an `indices` parameter (after pruning) and an `all` one."""
    torch.manual_seed(0)
    pm = {"big.weight": {"shape": (40, 50), "repr": "all"}, "small.bias": {"shape": (30,), "repr": "all"}}
    ref = RefModel(2030, 1, pm, device=torch.device("cpu"), base_model="bad-input")
    ref.prune(topk=200).save_pretrained(str(tmp_path / "ck"))
    return tmp_path / "ck"


def _cfg(path: Path, change: Callable[[dict], None]) -> None:
    cfg = json.loads((path / "config.json").read_text())
    change(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def _weights(path: Path, change: Callable[[dict], None]) -> None:
    sd = load_file(str(path / "model.safetensors"))
    change(sd)
    save_file(sd, str(path / "model.safetensors"))


def _indices(path: Path, change: Callable[[dict], None]) -> None:
    sd = load_file(str(path / "mapping_indices.safetensors"))
    change(sd)
    save_file(sd, str(path / "mapping_indices.safetensors"))


def _arch(key, value):
    return lambda p: _cfg(p, lambda c: c["architecture"].__setitem__(key, value))


def _entry(i, key, value):
    return lambda p: _cfg(p, lambda c: c["mapping"]["param_map"][i].__setitem__(key, value))


def _first_indexed(c):
    return next(i for i, e in enumerate(c["mapping"]["param_map"]) if e["repr"] == "indices")


CASES = {
    "torch_dtype is a list": (_arch("torch_dtype", ["float32"]), "torch_dtype"),
    "unknown encoder activation": (_arch("activation_encoder", "swishy"), "activation_encoder 'swishy'"),
    "activation is a number": (_arch("activation_decoder", 5), "activation_decoder 5"),
    "bias_decoder is a string": (_arch("bias_decoder", "false"), "bias_decoder must be true or false"),
    "format_version false": (lambda p: _cfg(p, lambda c: c.__setitem__("format_version", False)), "format_version"),
    "negative shape": (_entry(1, "shape", [-5, -6]), "shape must be a list of non-negative integers"),
    "float shape": (_entry(1, "shape", [4.5, 5]), "shape must be a list of non-negative integers"),
    "string shape": (_entry(1, "shape", "45"), "shape must be a list"),
    "num_selected is text": (_entry(1, "num_selected", "abc"), "num_selected must be an integer"),
    "num_selected is a list": (_entry(1, "num_selected", [20]), "num_selected must be an integer"),
    "key is a list": (
        lambda p: _cfg(p, lambda c: c["mapping"]["param_map"][_first_indexed(c)].__setitem__("key", ["L0"])),
        "is not in mapping_indices",
    ),
    "config is not UTF-8": (lambda p: (p / "config.json").write_bytes(b"\xff\xfe\x00{"), "not valid UTF-8 JSON"),
    "unsorted indices": (
        lambda p: _indices(p, lambda sd: sd.__setitem__("L0", sd["L0"].flip(0).contiguous())),
        "not in increasing order",
    ),
    "float indices": (
        lambda p: _indices(p, lambda sd: sd.__setitem__("L0", sd["L0"].to(torch.float32))),
        "indices must be int32 or int64",
    ),
    "bool weights": (
        lambda p: _weights(p, lambda sd: sd.__setitem__("encoder.0.linear.weight", sd["encoder.0.linear.weight"] > 0)),
        "GRADIEND weights are floating point",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_damaged_checkpoint_gives_clear_error(good, name):
    change, words = CASES[name]
    change(good)
    with pytest.raises(CheckpointError, match=words.replace("(", r"\(").replace("[", r"\[")) as err:
        read_checkpoint(good)
    assert str(good) in str(err.value) or "config.json" in str(err.value)


@pytest.mark.parametrize(
    "header, words",
    [(b"null", "not a JSON object"), (b"[1,2,3]", "not a JSON object"), (b'"abc"', "not a JSON object"),
     (b'{"w":{"dtype":"F32","shape":[-1,-30],"data_offsets":[0,120]}}', "shape [-1, -30]"),
     (b'{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', "unsupported or missing dtype")],
)
def test_large_file_reader_rejects_corrupt_headers(tmp_path, header, words):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 120)
    with pytest.raises(CheckpointError, match=words.replace("[", r"\[")):
        SafetensorsFile(path).read_all()


def test_large_file_reader_rejects_trailing_junk(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(10)}, str(path))
    path.write_bytes(path.read_bytes() + b"junk" * 100)
    with pytest.raises(CheckpointError, match="data after the last tensor"):
        SafetensorsFile(path).read_all()


def test_float64_weights_are_cast_to_the_architecture_dtype_like_gradiend(good):
    _weights(good, lambda sd: sd.update({k: v.double() for k, v in sd.items()}))
    ours = ParamMappedGradiendModel.from_pretrained(good)
    ref = RefModel.from_pretrained(str(good))
    assert ours.decoder[0].linear.weight.dtype == torch.float32
    x = torch.randn(ours.input_dim)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)


def test_metadata_keys_never_collide_with_the_constructor(good):
    _cfg(good, lambda c: c["metadata"].update({"weights": 1, "input_dim": "x", "param_map": []}))
    m = ParamMappedGradiendModel.from_pretrained(good)
    assert m.kwargs["weights"] == 1 and m.input_dim == 200


def test_nan_weights_export_and_verify(good, tmp_path):
    _weights(good, lambda sd: sd["decoder.0.linear.weight"].__setitem__((slice(0, 3), 0), float("nan")))
    with pytest.warns(RuntimeWarning, match="NaN or Inf"):
        ParamMappedGradiendModel.from_pretrained(good).get_weight_importance()
    res = export_pruned(good, tmp_path / "out", topk=1.0)  # keeps the NaN dims, so verification must accept NaN
    assert res.selection.k == 200
    back = read_checkpoint(tmp_path / "out").state_dict["decoder.0.linear.weight"]
    assert int(torch.isnan(back).sum()) == 3


def test_overwrite_refuses_a_directory_that_is_not_a_checkpoint(good, tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a GRADIEND checkpoint"):
        export_pruned(good, target, topk=5, overwrite=True)
    assert (target / "notes.txt").read_text() == "precious"


def test_export_target_below_a_file_and_with_nul(good, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot create"):
        export_pruned(good, tmp_path / "file" / "sub", topk=5)
    with pytest.raises(CheckpointError, match="NUL"):
        export_pruned(good, str(tmp_path / "a\0b"), topk=5)


def _zip_with(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_with_dot_entry_and_corrupt_member(good, tmp_path):
    files = [(f"ck/{p.name}", p.read_bytes()) for p in good.iterdir()]
    ok = _zip_with([("./", b"")] + files)
    assert read_checkpoint(extract_checkpoint_zip(ok, tmp_path / "d1")).architecture.input_dim == 200
    data = bytearray(_zip_with(files))
    at = data.find(b'"format_version"')
    data[at + 1] ^= 0xFF  # flip a byte inside config.json's stored data: its CRC no longer matches
    with pytest.raises(CheckpointError, match="cannot be unpacked"):
        extract_checkpoint_zip(bytes(data), tmp_path / "d2")


@pytest.mark.parametrize("bad", [None, 3.0, "abc", [[1.0, 2.0]]])
def test_ranking_rejects_non_vectors(bad):
    with pytest.raises(SelectionError, match="importance must be"):
        Ranking(bad)


def test_threshold_on_all_nan_importance_says_so():
    with pytest.raises(SelectionError, match="every importance value in this part is NaN"):
        select(Ranking(np.full(5, np.nan, dtype=np.float32)), threshold=0.0)
