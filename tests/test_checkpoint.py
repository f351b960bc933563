"""Reading and writing checkpoint directories: sizes, round trips, safety of writes, errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refmodels import ref_global_index
from safetensors.torch import load_file, save_file

import gradiend_core.checkpoint.writer as ckpt_writer
from gradiend_core import CheckpointError, ParamMappedGradiendModel, export_pruned, read_checkpoint, write_checkpoint
from gradiend_core.checkpoint import Architecture, safetensors_size
from gradiend_core.space.param_map import ParamEntry, ParamMap

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool]


def real_safetensors_size(tensors) -> int:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        save_file(tensors, p)
        return os.path.getsize(p)


def specs(tensors):
    return {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}


shapes = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)
ascii_names = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)


def tensor_dicts(names, dtypes):
    return st.dictionaries(names, st.tuples(dtypes, shapes), min_size=1, max_size=6).map(
        lambda d: {k: torch.zeros(s, dtype=dt) for k, (dt, s) in d.items()}
    )


# ---------------------------------------------------------------------------- safetensors_size
@settings(max_examples=150, deadline=None)
@given(st.sampled_from(DTYPES).flatmap(lambda dt: tensor_dicts(ascii_names, st.just(dt))))
def test_safetensors_size_one_dtype(tensors):
    """The case of every GRADIEND file: one dtype per file, ASCII names, empty tensors allowed."""
    assert safetensors_size(specs(tensors)) == real_safetensors_size(tensors)


@settings(max_examples=150, deadline=None)
@given(tensor_dicts(ascii_names, st.sampled_from(DTYPES)))
def test_safetensors_size_mixed_dtypes(tensors):
    assert safetensors_size(specs(tensors)) == real_safetensors_size(tensors)


def test_safetensors_size_same_width_dtypes():
    """safetensors orders data by dtype (F32 before I32, BF16 before F16), not by name; the order
    changes the offsets written in the header and with them the header's length."""
    t = {"a": torch.zeros(1, dtype=torch.int32), "b": torch.zeros(100_000, dtype=torch.float32)}
    assert safetensors_size(specs(t)) == real_safetensors_size(t)


unicode_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=32), min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(tensor_dicts(unicode_names, st.just(torch.float32)))
def test_safetensors_size_unicode_names(tensors):
    assert safetensors_size(specs(tensors)) == real_safetensors_size(tensors)


def test_safetensors_size_non_ascii_name():
    """safetensors writes names as raw UTF-8 in its JSON header, not as \\u escapes."""
    t = {"gewicht_é": torch.zeros(3)}
    assert safetensors_size(specs(t)) == real_safetensors_size(t)


# ---------------------------------------------------------------------------- round trip
@st.composite
def checkpoints(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_params = draw(st.integers(1, 4))
    entries = []
    for i in range(n_params):
        shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=2)))
        numel = int(np.prod(shape))
        how = draw(st.sampled_from(["all", "few", "many", "none"]))
        if how == "all":
            pos = None
        else:
            k = {"few": max(1, numel // 10), "many": max(1, (numel * 3) // 4), "none": 0}[how]
            pos = np.sort(rng.choice(numel, size=min(k, numel), replace=False)).astype(np.int64)
        entries.append(ParamEntry(f"model.layer.{i}.weight", shape, pos))
    # One fully selected parameter of 24 entries: the reference's constructor draws the decoder
    # from uniform(-max(W_enc), max(W_enc)) and fails when every encoder weight is negative, which
    # is likely for a handful of input dims.
    pmap = ParamMap([ParamEntry("model.embed.bias", (24,))] + entries)
    n = pmap.input_dim
    latent = draw(st.integers(1, 3))
    act = draw(st.sampled_from(["tanh", "id", "relu"]))
    bias_dec = draw(st.booleans())
    dtype_name = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    dt = getattr(torch, dtype_name)
    arch = Architecture(n, latent, act, "id", bias_dec, dtype_name)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    state = {
        "encoder.0.linear.weight": torch.randn(latent, n, generator=g).to(dt),
        "encoder.0.linear.bias": torch.randn(latent, generator=g).to(dt),
        "decoder.0.linear.weight": torch.randn(n, latent, generator=g).to(dt),
    }
    if bias_dec:
        state["decoder.0.linear.bias"] = torch.randn(n, generator=g).to(dt)
    if act == "id":
        state["encoder.1.weight"] = torch.randn(1, generator=g).to(dt)
        state["encoder.1.bias"] = torch.randn(1, generator=g).to(dt)
    meta = {"base_model": "tiny-test", "note": draw(st.text(max_size=10)), "n": draw(st.integers(-5, 5))}
    side = {"training.json": {"epochs": draw(st.integers(0, 9))}} if draw(st.booleans()) else {}
    return arch, pmap, state, meta, side, draw(st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(checkpoints())
def test_write_read_round_trip(c):
    arch, pmap, state, meta, side, use_st = c
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "ckpt"
        write_checkpoint(
            target,
            architecture=arch,
            param_map=pmap,
            state_dict=state,
            metadata=meta,
            side_files=side,
            use_safetensors=use_st,
        )
        back = read_checkpoint(target)
        assert back.architecture == arch
        assert [e.name for e in back.param_map] == [e.name for e in pmap]
        assert [e.shape for e in back.param_map] == [e.shape for e in pmap]
        for a, b in zip(back.param_map, pmap):
            np.testing.assert_array_equal(a.selected_positions(), b.selected_positions())
        np.testing.assert_array_equal(back.param_map.base_global_index(), pmap.base_global_index())
        assert sorted(back.state_dict) == sorted(state)
        for k, t in state.items():
            assert back.state_dict[k].dtype == t.dtype and torch.equal(back.state_dict[k], t), k
        assert back.metadata == meta
        for name, obj in side.items():
            assert back.side_files[name] == obj
        names = {p.name for p in target.iterdir()}
        assert ("model.safetensors" if use_st else "pytorch_model.bin") in names
        # and the reference reads the same map (a parameter may select nothing: repr "indices", empty)
        torch.manual_seed(0)
        ref = Ref.from_pretrained(str(target))
        np.testing.assert_array_equal(ref_global_index(ref), pmap.base_global_index())
        assert ref.input_dim == arch.input_dim


# ---------------------------------------------------------------------------- write safety
def _write_from(src: Path, target: Path, **kw):
    data = read_checkpoint(src)
    return write_checkpoint(
        target,
        architecture=data.architecture,
        param_map=data.param_map,
        state_dict=data.state_dict,
        metadata=data.metadata,
        **kw,
    )


def tree_hashes(root: Path):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_refuses_non_empty_target_without_overwrite(pruned_ckpt, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not empty"):
        _write_from(pruned_ckpt, target)
    assert (target / "keep.txt").read_text() == "precious"
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    # an empty existing directory is fine; overwrite replaces the old content entirely
    empty = tmp_path / "empty"
    empty.mkdir()
    _write_from(pruned_ckpt, empty)
    # overwrite replaces checkpoint directories only: a directory of other files is never deleted
    with pytest.raises(CheckpointError, match="not a GRADIEND checkpoint"):
        _write_from(pruned_ckpt, target, overwrite=True)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    (empty / "stray.txt").write_text("notes kept next to an export")
    with pytest.raises(CheckpointError, match="also holds stray.txt"):  # a replace would delete them
        _write_from(pruned_ckpt, empty, overwrite=True)
    assert (empty / "stray.txt").read_text() == "notes kept next to an export"
    (empty / "stray.txt").unlink()
    _write_from(pruned_ckpt, empty, overwrite=True)
    assert read_checkpoint(empty).architecture.input_dim == read_checkpoint(pruned_ckpt).architecture.input_dim


def test_refuses_target_that_is_a_file(pruned_ckpt, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="file"):
        _write_from(pruned_ckpt, f, overwrite=True)
    assert f.read_text() == "x"


@pytest.mark.parametrize("where", ["same", "inside", "deep_inside", "parent", "same_via_dotdot"])
def test_refuses_target_equal_to_inside_or_containing_the_source(pruned_ckpt, fresh_copy, where):
    src = fresh_copy(pruned_ckpt)
    target = {
        "same": src,
        "inside": src / "sub",
        "deep_inside": src / "a" / "b",
        "parent": src.parent,
        "same_via_dotdot": src / ".." / src.name,
    }[where]
    before = tree_hashes(src)
    for overwrite in (False, True):
        with pytest.raises(CheckpointError):
            _write_from(src, target, source=src, overwrite=overwrite)
        with pytest.raises(CheckpointError):
            export_pruned(src, target, topk=10, overwrite=overwrite)
    assert tree_hashes(src) == before
    assert sorted(p.name for p in src.iterdir()) == sorted(before)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), RuntimeError("boom")])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing_behind(pruned_ckpt, tmp_path, monkeypatch, exc, existing):
    parent = tmp_path / "parent"
    parent.mkdir()
    target = parent / "out"
    if existing:
        _write_from(pruned_ckpt, target)
    before_names = sorted(p.name for p in parent.iterdir())
    before = tree_hashes(parent)
    real = ckpt_writer._save_tensors
    calls = []

    def flaky(path, tensors, use_safetensors, header=None):
        calls.append(path)
        if len(calls) == 2:  # the weights are written, the first mapping file fails
            raise exc
        return real(path, tensors, use_safetensors, header)

    monkeypatch.setattr(ckpt_writer, "_save_tensors", flaky)
    # torch.save reports a full disk as RuntimeError; both become a CheckpointError that says nothing was written
    with pytest.raises(CheckpointError, match="nothing was written"):
        _write_from(pruned_ckpt, target, overwrite=True)
    assert len(calls) == 2
    assert sorted(p.name for p in parent.iterdir()) == before_names  # no leftover temp directory
    assert tree_hashes(parent) == before  # old content, if any, untouched


def test_export_leaves_source_byte_identical(ref_variants, tmp_path):
    for v in ref_variants.values():
        before = tree_hashes(v.path)
        stats = {p.name: p.stat().st_mtime_ns for p in v.path.iterdir()}
        export_pruned(v.path, tmp_path / v.name, part="decoder-sum", topk=0.25)
        m = ParamMappedGradiendModel.from_pretrained(v.path)
        m.prune(topk=3, inplace=True)
        m.save_pretrained(tmp_path / (v.name + "_saved"))
        assert tree_hashes(v.path) == before, v.name
        assert {p.name: p.stat().st_mtime_ns for p in v.path.iterdir()} == stats, v.name


# ---------------------------------------------------------------------------- bad inputs
def _cfg(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _set_cfg(path: Path, cfg: dict) -> None:
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


CONFIG, WEIGHTS = "config.json", "model.safetensors"
INDICES, MASKS = "mapping_indices.safetensors", "mapping_masks.safetensors"


def _unlink(fname: str) -> Callable[[Path], None]:
    return lambda d: (d / fname).unlink()


def _write(fname: str, content: str | bytes) -> Callable[[Path], None]:
    if isinstance(content, str):
        return lambda d: (d / fname).write_text(content)
    return lambda d: (d / fname).write_bytes(content)


def _truncate(fname: str, length: Callable[[int], int]) -> Callable[[Path], None]:
    """Keep the first ``length(size)`` bytes of the file."""

    def damage(d: Path) -> None:
        data = (d / fname).read_bytes()
        (d / fname).write_bytes(data[: length(len(data))])

    return damage


def _edit_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Load config.json, ``edit`` it in place, write it back."""

    def damage(d: Path) -> None:
        cfg = _cfg(d)
        edit(cfg)
        _set_cfg(d, cfg)

    return damage


def _change_config(keys: tuple[str | int, ...], change: Callable[[object], object]) -> Callable[[Path], None]:
    """Replace the config value at ``keys`` (a path of keys and list positions) by ``change(old value)``."""

    def edit(cfg: dict) -> None:
        *outer, last = keys
        for k in outer:
            cfg = cfg[k]
        cfg[last] = change(cfg[last])

    return _edit_config(edit)


def _edit_tensors(fname: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Load a safetensors file, ``edit`` its dict of tensors in place, save it back."""

    def damage(d: Path) -> None:
        t = load_file(str(d / fname))
        edit(t)
        save_file(t, str(d / fname))

    return damage


def _drop_architecture(cfg: dict) -> None:
    del cfg["architecture"]


def _first_mask_entry_names_missing_key(cfg: dict) -> None:
    e = next(e for e in cfg["mapping"]["param_map"] if e["repr"] == "mask")
    e["key"] = "L99"


def _shorten_decoder_weight(sd: dict) -> None:
    sd["decoder.0.linear.weight"] = sd["decoder.0.linear.weight"][:-1].contiguous()


def _drop_encoder_bias(sd: dict) -> None:
    del sd["encoder.0.linear.bias"]


def _drop_first_tensor(t: dict) -> None:
    t.pop(sorted(t)[0])


def _first_indices_out_of_range(t: dict) -> None:
    k = sorted(t)[0]
    t[k] = t[k].clone()
    t[k][-1] = 10**6


def _first_indices_duplicate(t: dict) -> None:
    k = sorted(t)[0]
    t[k] = t[k].clone()
    t[k][1] = t[k][0]


def _first_mask_shorter(t: dict) -> None:
    k = sorted(t)[0]
    t[k] = t[k].reshape(-1)[:-3].contiguous()


#: kind -> (how it damages a checkpoint directory, the file the error message must name)
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_config": (_unlink(CONFIG), CONFIG),
    "invalid_json": (_write(CONFIG, '{"format_version": 0, "architecture": '), CONFIG),
    "config_not_object": (_write(CONFIG, "[1, 2]"), CONFIG),
    "format_version": (_change_config(("format_version",), lambda _: 1), CONFIG),
    "no_architecture": (_edit_config(_drop_architecture), CONFIG),
    "input_dim_zero": (_change_config(("architecture", "input_dim"), lambda _: 0), CONFIG),
    "input_dim_string": (_change_config(("architecture", "input_dim"), lambda _: "365"), CONFIG),
    "latent_dim_bool": (_change_config(("architecture", "latent_dim"), lambda _: True), CONFIG),
    "bad_dtype": (_change_config(("architecture", "torch_dtype"), lambda _: "float64x"), CONFIG),
    # what the weights-only GradiendModel writes
    "no_mapping": (_change_config(("mapping",), lambda _: None), CONFIG),
    "unknown_repr": (_change_config(("mapping", "param_map", 0, "repr"), lambda _: "bitset"), CONFIG),
    "missing_weights": (_unlink(WEIGHTS), WEIGHTS),
    "truncated_weights": (_truncate(WEIGHTS, lambda n: n // 2), WEIGHTS),
    "garbage_weights": (_write(WEIGHTS, b"\x00" * 7), WEIGHTS),
    "weight_shape": (_edit_tensors(WEIGHTS, _shorten_decoder_weight), WEIGHTS),
    "weight_missing_key": (_edit_tensors(WEIGHTS, _drop_encoder_bias), WEIGHTS),
    "num_selected": (_change_config(("mapping", "param_map", 0, "num_selected"), lambda n: n + 1), CONFIG),
    "input_dim_disagrees": (_change_config(("architecture", "input_dim"), lambda n: n + 1), CONFIG),
    "missing_indices_file": (_unlink(INDICES), INDICES),
    "missing_masks_file": (_unlink(MASKS), MASKS),
    "truncated_indices_file": (_truncate(INDICES, lambda _: 20), INDICES),
    "missing_mapping_key": (_edit_tensors(INDICES, _drop_first_tensor), INDICES),
    "wrong_mapping_key": (_edit_config(_first_mask_entry_names_missing_key), MASKS),
    "indices_out_of_range": (_edit_tensors(INDICES, _first_indices_out_of_range), CONFIG),
    "indices_duplicate": (_edit_tensors(INDICES, _first_indices_duplicate), CONFIG),
    "mask_shape": (_edit_tensors(MASKS, _first_mask_shorter), CONFIG),
}
DAMAGES = list(DAMAGE)


def _damage(kind: str, d: Path) -> str:
    """Damage checkpoint ``d``; return the file name the error message must name."""
    damage, named = DAMAGE[kind]
    damage(d)
    return named


@pytest.mark.parametrize("kind", DAMAGES)
def test_bad_checkpoint_raises_checkpoint_error_naming_the_file(pruned_ckpt, fresh_copy, kind):
    d = fresh_copy(pruned_ckpt)
    fname = _damage(kind, d)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(d)
    assert fname in str(e.value)
    assert isinstance(e.value, ValueError)
    with pytest.raises(CheckpointError):
        ParamMappedGradiendModel.from_pretrained(d)


def test_truncated_bin_raises(ref_variants, fresh_copy):
    d = fresh_copy(ref_variants["both_bin"].path)
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_checkpoint(d)


class _Evil:
    def __reduce__(self):
        return (os.mkdir, (os.environ["GRADIEND_TEST_PWNED"],))


def test_pickle_with_code_is_refused_not_run(ref_variants, fresh_copy, tmp_path, monkeypatch):
    d = fresh_copy(ref_variants["both_bin"].path)
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("GRADIEND_TEST_PWNED", str(pwned))
    torch.save({"encoder.0.linear.weight": _Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_checkpoint(d)
    assert not pwned.exists()


def test_bin_with_non_tensor_values_is_refused(ref_variants, fresh_copy):
    d = fresh_copy(ref_variants["both_bin"].path)
    torch.save({"encoder.0.linear.weight": [1, 2, 3]}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_checkpoint(d)


def test_missing_mapping_pth_file(ref_variants, fresh_copy):
    d = fresh_copy(ref_variants["both_bin"].path)
    (d / "mapping_masks.pth").unlink()
    with pytest.raises(CheckpointError, match="mapping_masks.pth"):
        read_checkpoint(d)


def test_empty_missing_and_file_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match="no such"):
        read_checkpoint(tmp_path / "nope")
    f = tmp_path / "f.zip"
    f.write_bytes(b"PK")
    with pytest.raises(CheckpointError, match="is a file"):
        read_checkpoint(f)
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="config.json"):
        read_checkpoint(other)


def test_nested_experiment_directory_loads(pruned_ckpt, tmp_path):
    exp = tmp_path / "runs" / "experiment"
    shutil.copytree(pruned_ckpt, exp / "model")
    (exp / "log.txt").write_text("training log")
    data = read_checkpoint(exp)
    assert data.path == exp / "model"
    ref = Ref.from_pretrained(str(pruned_ckpt))
    m = ParamMappedGradiendModel.from_pretrained(exp)
    assert m.input_dim == ref.input_dim
    np.testing.assert_array_equal(m.base_global_index().numpy(), ref_global_index(ref))
    for k, t in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], t)
