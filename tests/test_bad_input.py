"""Catalogue of damaged checkpoints: each case is one line (a change to a good checkpoint and the
words the error must contain). Every case must raise CheckpointError, never another exception."""

from __future__ import annotations

import io
import json
import shlex
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from safetensors.torch import load_file, save_file

from gradiend_core import CheckpointError, ParamMappedGradiendModel, SelectionError, export_pruned, read_checkpoint
from gradiend_core.checkpoint import SafetensorsFile
from gradiend_core.checkpoint.archive import extract_checkpoint_zip
from gradiend_core.pruning.verify import same_bits
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.masks import sha256_mask
from gradiend_core.selection.rule import select


@pytest.fixture(scope="module", autouse=True)
def _no_ranking_work_left_behind():
    """The pages opened here queue background ranking builds and leave checkpoints open (some with
    their weights loaded); let the builds finish and close the checkpoints before other modules,
    some of which count passes over weights and weight loads."""
    yield
    from dashboard.services.loading import STORE
    from gradiend_core.ranking import store

    store.wait_for_layouts(timeout=600)
    STORE.discard(Path(os.sep))


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
    [
        (b"null", "not a JSON object"),
        (b"[1,2,3]", "not a JSON object"),
        (b'"abc"', "not a JSON object"),
        (b'{"w":{"dtype":"F32","shape":[-1,-30],"data_offsets":[0,120]}}', "shape [-1, -30]"),
        (b'{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', "unsupported or missing dtype"),
    ],
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


def test_overwrite_replaces_only_a_gradiend_checkpoint_and_only_its_own_files(good, tmp_path):
    """A base model's folder has a config.json too; replacing it would delete its tokenizer. And a
    checkpoint folder holding other files is not replaced: the message names what would go."""
    base = tmp_path / "base"
    shutil.copytree(REPO / "sample_models" / "base" / "tiny-bert", base)
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="not a GRADIEND checkpoint"):
        export_pruned(good, base, topk=5, overwrite=True)
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before
    (tmp_path / "empty-config").mkdir()
    (tmp_path / "empty-config" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a GRADIEND checkpoint"):
        export_pruned(good, tmp_path / "empty-config", topk=5, overwrite=True)

    out = tmp_path / "out"
    export_pruned(good, out, topk=5)
    (out / "notes.txt").write_text("precious")
    (out / "plots").mkdir()
    with pytest.raises(CheckpointError, match=r"also holds notes\.txt, plots/, which replacing it would delete"):
        export_pruned(good, out, topk=7, overwrite=True)
    assert (out / "notes.txt").read_text() == "precious" and read_checkpoint(out).architecture.input_dim == 5
    (out / "notes.txt").unlink(), (out / "plots").rmdir()
    export_pruned(good, out, topk=7, overwrite=True)  # a checkpoint's own files (mask, records) are replaced
    assert read_checkpoint(out).architecture.input_dim == 7


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


# ===================================================================================================
# Exports that never lose data. Every case below is a class of fault; the test is one instance.
# ===================================================================================================
import hashlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import gradiend_core.checkpoint.writer as writer  # noqa: E402
import gradiend_core.pruning.export as export_module  # noqa: E402
import gradiend_core.pruning.verify as verify_module  # noqa: E402
from gradiend_core import write_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _digests(path: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def _hidden(parent: Path) -> list:
    """Staging or replaced directories left beside an export."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_overwrite_whose_verification_fails_keeps_the_old_export(good, tmp_path, monkeypatch):
    target = tmp_path / "out"
    export_pruned(good, target, topk=10)
    before = _digests(target)
    real = writer._save_tensors

    def corrupting(path, tensors, use_safetensors, header=None):  # a write that does not store what it was given
        if path.name == "model.safetensors":
            tensors = {k: (v + 1 if k == "decoder.0.linear.weight" else v) for k, v in tensors.items()}
        real(path, tensors, use_safetensors, header)

    monkeypatch.setattr(writer, "_save_tensors", corrupting)
    words = "verification of the export failed: tensor decoder.0.linear.weight differs"
    with pytest.raises(CheckpointError, match=words):
        export_pruned(good, target, topk=20, overwrite=True)
    assert _digests(target) == before and _hidden(tmp_path) == []
    assert RefModel.from_pretrained(str(target)).input_dim == 10


@pytest.mark.parametrize("existing", [True, False])
def test_ctrl_c_during_verification_leaves_no_unverified_export(good, tmp_path, monkeypatch, existing):
    target = tmp_path / "out"
    if existing:
        export_pruned(good, target, topk=10)
    before = _digests(target) if existing else None

    def interrupted(path, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_module, "read_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_pruned(good, target, topk=20, overwrite=True)
    assert (_digests(target) if existing else target.exists()) == (before if existing else False)
    assert _hidden(tmp_path) == []


def test_write_checkpoint_runs_verify_on_the_staging_directory_before_the_swap(good, tmp_path):
    data = read_checkpoint(good)
    target = tmp_path / "out"
    seen = []

    def verify(staged: Path) -> None:
        seen.append(
            (
                staged.parent == tmp_path,
                staged.name.startswith(".out.tmp-"),
                target.exists(),
                read_checkpoint(staged).architecture.input_dim,
            )
        )

    kw = dict(architecture=data.architecture, param_map=data.param_map, state_dict=data.state_dict, metadata={})
    write_checkpoint(target, verify=verify, **kw)
    assert seen == [(True, True, False, 200)] and _hidden(tmp_path) == []


_UNPRIVILEGED_EXPORT = """
import sys
from gradiend_core import CheckpointError, export_pruned
try:
    export_pruned(sys.argv[1], sys.argv[2], topk=20, overwrite=True)
    print("OK")
except CheckpointError as e:
    print("CheckpointError:", e)
"""


def _export_without_override(src: Path, target: Path) -> str:
    """Export with overwrite in a process that file permissions apply to (root's capabilities to
    override them are dropped with util-linux's setpriv)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-c", _UNPRIVILEGED_EXPORT, str(src), str(target)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "this test needs setpriv (util-linux) when run as root"
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--", *cmd]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


@pytest.mark.parametrize("read_only", ["old export", "parent"])
def test_overwrite_of_a_read_only_export_leaves_no_hidden_copy(good, tmp_path, read_only):
    parent = tmp_path / "exports"
    target = parent / "out"
    export_pruned(good, target, topk=10)
    before = _digests(target)
    os.chmod(target if read_only == "old export" else parent, 0o555)
    try:
        out = _export_without_override(good, target)
    finally:
        os.chmod(target, 0o755)
        os.chmod(parent, 0o755)
    words = "is read-only" if read_only == "old export" else "cannot create"
    assert out.startswith("CheckpointError:") and words in out, out
    assert _digests(target) == before and _hidden(parent) == []


def test_writer_reads_no_umask_and_gives_the_usual_modes(good, tmp_path, monkeypatch):
    """Setting the umask (to read it) is process-wide: a file another thread creates meanwhile
    would get mode 0666. The writer must not touch it and still give 0666/0777 less the umask."""
    calls = []
    real = os.umask
    old = real(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
        export_pruned(good, tmp_path / "out", topk=5)
    finally:
        real(old)
    assert calls == []
    assert {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "out").iterdir()} == {
        f.name: 0o640 for f in (tmp_path / "out").iterdir()
    }
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


def test_a_killed_writers_staging_directory_is_removed_by_the_next_write(good, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    stale = tmp_path / f".out.tmp-{pid}-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".out.tmp-{os.getppid()}-abcd1234"  # a running process's: kept
    live.mkdir()
    export_pruned(good, tmp_path / "out", topk=5)
    assert _hidden(tmp_path) == [live.name]


# ===================================================================================================
# Archives: zip bombs, disk filling, links. Only CheckpointError escapes; a refusal leaves nothing.
# ===================================================================================================
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gradiend_core.checkpoint.archive import DEFAULT_MAX_ENTRIES, zip_directory  # noqa: E402

MB = 1024**2


def _files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def _zeros_zip(entries) -> bytes:
    """A deflated zip of ``(name, number of zero bytes)`` entries, written in 1 MiB steps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, size in entries:
            with zf.open(name, "w", force_zip64=size > 2**31 - 1) as f:
                for start in range(0, size, MB):
                    f.write(bytes(min(MB, size - start)))
    return buf.getvalue()


@pytest.mark.parametrize("shape", ["one big entry", "many smaller entries"])
def test_zip_bomb_is_refused_on_its_ratio_before_anything_is_written(tmp_path, shape):
    # 0.26 MB that expands to 256 MiB: a ratio of ~1000 (deflate's limit, what zip bombs use)
    big = [("ck/model.safetensors", 256 * MB)]
    parts = [(f"ck/p{i}.bin", 32 * MB) for i in range(8)]
    entries = [("ck/config.json", 2)] + (big if shape == "one big entry" else parts)
    data = _zeros_zip(entries)
    assert len(data) < 0.3 * MB
    with pytest.raises(CheckpointError, match="zip bomb"):
        extract_checkpoint_zip(data, tmp_path / "dest", max_bytes=1024**4)
    assert _files_under(tmp_path / "dest") == []


def test_zip_of_100000_empty_entries_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ck/config.json", "{}")
        for i in range(100_000):
            zf.writestr(f"ck/e{i}", b"")
    with pytest.raises(CheckpointError, match=f"holds 100,001 entries.*at most {DEFAULT_MAX_ENTRIES:,}"):
        extract_checkpoint_zip(buf.getvalue(), tmp_path / "dest")
    assert _files_under(tmp_path / "dest") == []


def _understate(data: bytes, name: str, size: int) -> bytes:
    """Make the central directory claim ``size`` bytes (compressed and uncompressed) for ``name``."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        n = struct.unpack("<H", out[at + 28 : at + 30])[0]
        if out[at + 46 : at + 46 + n].decode() == name:
            out[at + 20 : at + 28] = struct.pack("<II", size, size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


def test_zip_whose_headers_understate_sizes_is_refused_and_leaves_no_partial_files(good, tmp_path):
    files = sorted(((f"ck/{p.name}", p.read_bytes()) for p in good.iterdir()), key=lambda f: f[0] != "ck/config.json")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files:  # config.json first: it is written before the lie is found
            zf.writestr(name, data)
    lying = _understate(buf.getvalue(), "ck/model.safetensors", 100)
    with pytest.raises(CheckpointError, match="cannot be unpacked"):
        extract_checkpoint_zip(lying, tmp_path / "dest")
    assert _files_under(tmp_path / "dest") == []


def test_extraction_through_a_link_in_the_target_directory_is_refused(good, tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "ck").symlink_to(Path("..") / "outside")
    data = zip_directory(good)  # entries ck/...: they would land in outside/
    with pytest.raises(CheckpointError, match="outside the target directory"):
        extract_checkpoint_zip(data, dest)
    assert _files_under(outside) == []


def test_extraction_byte_limit_is_exact(good, tmp_path):
    data = zip_directory(good)
    total = sum(p.stat().st_size for p in good.iterdir())
    with pytest.raises(CheckpointError, match="exceeds the limit of"):
        extract_checkpoint_zip(data, tmp_path / "d1", max_bytes=total - 1)
    assert _files_under(tmp_path / "d1") == []
    ck = extract_checkpoint_zip(data, tmp_path / "d2", max_bytes=total)
    assert read_checkpoint(ck).architecture.input_dim == 200


def test_zip_needing_a_newer_zip_version_is_refused(good, tmp_path):
    data = bytearray(zip_directory(good))
    at = data.find(b"PK\x01\x02")
    data[at + 6 : at + 8] = struct.pack("<H", 84)  # "version needed to extract" 8.4
    with pytest.raises(CheckpointError, match="not a readable .zip archive.*zip file version 8.4"):
        extract_checkpoint_zip(bytes(data), tmp_path / "dest")
    assert _files_under(tmp_path / "dest") == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=6))
def test_damaged_archives_raise_only_checkpoint_error_and_leave_nothing(good, tmp_path_factory, flips):
    data = bytearray(zip_directory(good))
    for at, xor in flips:
        data[at % len(data)] ^= xor
    dest = tmp_path_factory.mktemp("fuzz")
    try:
        ck = extract_checkpoint_zip(bytes(data), dest)
    except CheckpointError:
        assert _files_under(dest) == []
    else:
        assert (ck / "config.json").is_file() and str(ck).startswith(str(dest.resolve()))


# ===================================================================================================
# The dashboard's disk: per-session and global budgets, one shared copy per upload, cleanup.
# ===================================================================================================
import fcntl  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard.server import sessions  # noqa: E402
from dashboard.server.sessions import Budgets, SessionRegistry, size_setting  # noqa: E402
from dashboard.services.loading import STORE  # noqa: E402

APP = str(REPO / "dashboard" / "app.py")


def _registry(tmp_path, session_bytes=10 * MB, upload_bytes=100 * MB, **kw) -> SessionRegistry:
    return SessionRegistry(
        tmp_path / "root", Budgets(session_bytes, upload_bytes), grace_seconds=0, is_active=lambda sid: False, **kw
    )


def _disk(reg: SessionRegistry) -> int:
    return sum(p.stat().st_size for p in reg.folder.rglob("*") if p.is_file() and p.name != ".lock")


def test_same_upload_from_two_sessions_is_one_copy_until_the_last_ends(good, tmp_path):
    removed = []
    reg = _registry(tmp_path, on_upload_removed=removed.append)
    data = memoryview(zip_directory(good))
    a, b = reg.session("a"), reg.session("b")
    ck_a, ck_b = reg.open_upload(a, data, "ck.zip"), reg.open_upload(b, data, "ck.zip")
    assert ck_a == ck_b and len(list((reg.folder / "uploads").iterdir())) == 1
    size = sum(p.stat().st_size for p in good.iterdir())
    assert reg.upload_bytes() == size == reg.session_bytes(a) == reg.session_bytes(b)
    reg.end("a")
    assert ck_b.is_dir() and removed == []
    reg.end("b")
    assert not ck_b.exists() and removed == [ck_b] and _disk(reg) == 0


def test_a_session_that_ended_unserved_lets_streamlit_drop_its_uploaded_bytes(tmp_path, monkeypatch):
    """A disconnected session whose reconnect window expired is never shut down by Streamlit, so
    its uploader would keep every uploaded byte; the registry drops them when the session ends."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFileRec

    uploads = MemoryUploadedFileManager("/upload")
    for sid in ("st-a", "st-b"):
        uploads.add_file(sid, UploadedFileRec(f"{sid}-file", "ck.zip", "application/zip", b"x" * 1000))
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: True))
    monkeypatch.setattr(Runtime, "instance", classmethod(lambda cls: type("R", (), {"uploaded_file_mgr": uploads})()))
    active = {"st-b"}
    reg = SessionRegistry(
        tmp_path / "root", Budgets(10 * MB, 100 * MB), grace_seconds=0, is_active=lambda sid: sid in active
    )
    reg.session("a", "st-a"), reg.session("b", "st-b")
    reg.detach("a"), reg.detach("b")
    assert reg.sweep() == ["a"]  # b is still served: it stays, and so do its bytes
    assert "st-a" not in uploads.file_storage and uploads._total_bytes == 1000
    assert [f.file_id for f in uploads.get_files("st-b", ["st-b-file"])] == ["st-b-file"]
    active.clear()
    reg.end("b")
    assert uploads.file_storage == {} and uploads._total_bytes == 0


def test_bombs_and_broken_uploads_are_deleted_at_once_and_not_retried(good, tmp_path, monkeypatch):
    reg = _registry(tmp_path, session_bytes=1024**4, upload_bytes=1024**4)
    s = reg.session("a")
    bomb = memoryview(_zeros_zip([("ck/config.json", 2), ("ck/model.safetensors", 128 * MB)]))
    broken = bytearray(zip_directory(good))
    broken[broken.find(b'"format_version"') + 1] ^= 0xFF
    for data, words in ((bomb, "zip bomb"), (memoryview(bytes(broken)), "cannot be unpacked")):
        with pytest.raises(CheckpointError, match=words):
            reg.open_upload(s, data, "x.zip")
        assert _disk(reg) == 0 and list((reg.folder / "uploads").iterdir()) == []
    calls = []
    monkeypatch.setattr(sessions, "extract_checkpoint_zip", lambda *a, **k: calls.append(a))
    with pytest.raises(CheckpointError, match="zip bomb"):  # remembered: not unpacked again on a rerun
        reg.open_upload(s, bomb, "x.zip")
    assert calls == []


def test_session_and_server_budgets_refuse_before_writing(good, tmp_path):
    data = memoryview(zip_directory(good))
    size = sum(p.stat().st_size for p in good.iterdir())
    reg = _registry(tmp_path, session_bytes=size - 1, upload_bytes=10 * size)
    with pytest.raises(CheckpointError, match="GRADIEND_DASHBOARD_SESSION_BYTES"):
        reg.open_upload(reg.session("a"), data, "ck.zip")
    assert _disk(reg) == 0
    reg = _registry(tmp_path / "2", session_bytes=10 * size, upload_bytes=size + size // 2)
    reg.open_upload(reg.session("a"), data, "ck.zip")
    other = memoryview(zip_directory(_copy_with_other_weights(good, tmp_path / "other")))
    with pytest.raises(CheckpointError, match="GRADIEND_DASHBOARD_UPLOAD_BYTES"):
        reg.open_upload(reg.session("b"), other, "other.zip")
    assert reg.upload_bytes() == size == _disk(reg)
    with pytest.raises(CheckpointError, match="GRADIEND_DASHBOARD_SESSION_BYTES"):
        reg.store(reg.session("a"), "masks/m.npy", bytes(10 * size))


def _copy_with_other_weights(good: Path, dst: Path) -> Path:
    shutil.copytree(good, dst)
    _weights(dst, lambda sd: sd.update({k: v * 2 for k, v in sd.items()}))
    return dst


def test_budgets_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRADIEND_DASHBOARD_SESSION_BYTES", "1.5G")
    monkeypatch.setenv("GRADIEND_DASHBOARD_UPLOAD_BYTES", "512MiB")
    assert Budgets.from_env() == Budgets(3 * 1024**3 // 2, 512 * 1024**2)
    assert size_setting("4096", "X") == 4096
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="X="):
            size_setting(bad, "X")


def test_a_new_server_deletes_what_ended_servers_left(tmp_path):
    root = tmp_path / "root"
    dead, live = root / "server-1-dead", root / "server-2-live"
    for d in (dead, live):
        (d / "uploads" / "abc").mkdir(parents=True)
        (d / "uploads" / "abc" / "model.safetensors").write_bytes(b"x" * 100)
        (d / ".lock").touch()
    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a running server holds its lock
    try:
        reg = SessionRegistry(root, Budgets(), grace_seconds=0)
        assert not dead.exists() and live.exists() and reg.folder.is_dir()
        reg.close()
        assert not reg.folder.exists()
    finally:
        os.close(fd)


@pytest.fixture()
def fresh_registry(tmp_path, monkeypatch):
    """The dashboard's registry, replaced for one test by one in ``tmp_path`` with no grace period."""
    reg = SessionRegistry(
        tmp_path / "sessions-root",
        Budgets(64 * MB, 64 * MB),
        grace_seconds=0,
        on_upload_removed=sessions._forget_cached,
    )
    monkeypatch.setattr(sessions, "_REGISTRY", reg)
    yield reg
    reg.close()


def _upload_session(data: bytes) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.radio(key="model_source").set_value("Upload .zip").run()
    at.file_uploader(key="model_zip").set_value(("ck.zip", data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def test_uploads_in_the_app_are_shared_and_released_when_sessions_end(good, fresh_registry):
    from streamlit.runtime import caching

    data = zip_directory(good)
    a, b = _upload_session(data), _upload_session(data)
    for at in (a, b):
        assert not at.error, [e.value for e in at.error]
        assert any(m.label == "input_dim (dims)" and m.value == "200" for m in at.metric)
    copies = list((fresh_registry.folder / "uploads").iterdir())
    assert len(copies) == 1 and len(fresh_registry.sessions()) == 2
    from gradiend_core.checkpoint.weights import file_identity
    from gradiend_core.util.cache import cache_dir

    weights = copies[0] / "ck" / "model.safetensors"
    ranked = Path(os.environ["GRADIEND_CORE_CACHE"]) / "rankings" / file_identity(weights)
    assert ranked.is_dir() and cache_dir("rankings") == ranked.parent  # the page ranked the upload
    # Streamlit releases a session's session-scoped resources when it disconnects or closes
    # (AppTest's sessions share one id, so this releases both); the sweep then ends them.
    keys = sorted(at.session_state["_session_files"].key for at in (a, b))
    assert fresh_registry.sweep() == []  # connected sessions are never swept
    caching.clear_session_resource_cache("test session id")
    assert sorted(fresh_registry.sweep()) == keys
    assert not copies[0].exists() and _disk(fresh_registry) == 0
    assert list((fresh_registry.folder / "sessions").iterdir()) == []
    assert STORE.discard(copies[0]) == []  # the open checkpoint went with the files
    assert not ranked.exists()  # and so did its rankings on disk


def test_three_zip_bombs_in_one_session_write_nothing(fresh_registry):
    fresh_registry.budgets = Budgets(1024**4, 1024**4)  # no budget stops them: the archive check must
    at = _upload_session(_zeros_zip([("ck/config.json", 2), ("ck/model.safetensors", 80 * MB)]))
    for i in (1, 2):
        bomb = _zeros_zip([("ck/config.json", 2 + i), ("ck/model.safetensors", 80 * MB)])
        at.file_uploader(key="model_zip").set_value((f"bomb{i}.zip", bomb, "application/zip")).run()
        assert any("zip bomb" in e.value for e in at.error), [e.value for e in at.error]
        assert _disk(fresh_registry) == 0
    at.run()  # a rerun does not unpack the refused archive again
    assert any("zip bomb" in e.value for e in at.error) and _disk(fresh_registry) == 0


def test_a_failed_upload_is_gone_before_the_session_ends(good, fresh_registry):
    cfg = json.loads((good / "config.json").read_text())
    cfg["architecture"]["input_dim"] = 7  # unpacks, but does not open
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in good.iterdir():
            zf.writestr(f"ck/{p.name}", json.dumps(cfg) if p.name == "config.json" else p.read_bytes())
    at = _upload_session(buf.getvalue())
    assert [e.value for e in at.error] == [
        "ck.zip/config.json: the mapping selects 200 entries in total but architecture.input_dim is 7; config and "
        "mapping files do not belong together."
    ]
    assert _disk(fresh_registry) == 0 and list((fresh_registry.folder / "uploads").iterdir()) == []


# ===================================================================================================
# The page: URL values, what an export banner refers to, the export directory's name, downloads.
# ===================================================================================================
import math  # noqa: E402

from dashboard.views.sidebar import export as export_view  # noqa: E402

SAMPLES = REPO / "sample_models"


def _page(model: Path, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["model"] = str(model)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _kept(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label == "Input dims kept")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "abc", "1e400"])
def test_url_threshold_the_input_cannot_hold_is_named_and_the_page_stays_usable(good, value):
    at = _page(good, threshold=value, topk="10")
    assert not at.error, [e.value for e in at.error]
    assert any(f"URL parameter ?threshold={value} " in w.value and "ignored" in w.value for w in at.warning), [
        w.value for w in at.warning
    ]
    assert at.number_input(key="threshold").value is None and _kept(at) == "10"
    assert "threshold" not in at.query_params
    imp = RefModel.from_pretrained(str(good)).get_weight_importance("decoder-weight").numpy()
    thr = float(np.sort(imp)[-50])
    at.number_input(key="threshold").set_value(thr).run()  # the input works, and the message goes
    assert _kept(at) == "10" and not at.warning and not at.error
    at.text_input(key="topk").set_value("").run()
    assert _kept(at) == f"{int((imp >= np.float32(thr)).sum()):,}"


def test_url_part_and_topk_the_inputs_cannot_hold_are_named(good):
    at = _page(good, part="bogus")
    assert any("URL parameter ?part=bogus" in w.value for w in at.warning) and not at.error
    assert at.selectbox(key="part").value == "decoder-weight"
    at = _page(good, topk="abc")
    # a link the input cannot hold opens the page with the default topk and says which value was dropped
    assert [w.value for w in at.warning] == [
        "URL parameter ?topk=abc was ignored (topk must be a count (e.g. 5000), a fraction (e.g. 0.05 or 1e-4) or a "
        "percentage (e.g. 5%); got 'abc'); topk 0.05 is used."
    ]
    assert not at.error and at.text_input(key="topk").value == "0.05"
    at.text_input(key="topk").set_value("7").run()
    assert not at.error and _kept(at) == "7"


def _export(at: AppTest, out: Path, overwrite: bool = False) -> None:
    at.text_input(key="export_dir").set_value(str(out)).run()
    if overwrite:
        at.checkbox(key="export_overwrite").check().run()
    at.button(key="export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def _zip_checkpoint(archive: str, into: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)
    return next(into.iterdir())


def test_download_is_what_this_session_verified_even_after_another_replaced_it(good, tmp_path, monkeypatch):
    packs = []
    real = export_view.zip_verified
    monkeypatch.setattr(export_view, "zip_verified", lambda *a, **k: packs.append(a[0]) or real(*a, **k))
    a, b = _page(good, topk="100"), _page(good, topk="150")
    shared = tmp_path / "shared"
    _export(a, shared)
    assert any("Exported 100 input dims" in s.value and "verified" in s.value for s in a.success)
    for _ in range(3):
        a.run()
    assert len(packs) == 1  # packed once per export, not on every rerun
    _export(b, shared, overwrite=True)
    a.run()
    assert any("but the directory has changed since" in w.value for w in a.warning) and not a.success
    assert [b.label for b in a.get("download_button")] == ["Download this session's export (.zip)"]
    got = RefModel.from_pretrained(str(_zip_checkpoint(a.session_state["last_export"]["archive"], tmp_path / "a-zip")))
    want = RefModel.from_pretrained(str(good)).prune(topk=100)
    assert got.input_dim == 100 and RefModel.from_pretrained(str(shared)).input_dim == 150
    assert all(torch.equal(x, y) for x, y in zip(got.state_dict().values(), want.state_dict().values(), strict=True))
    assert not any(w.value.startswith("`") for w in b.warning)  # B's page: its export is what the directory holds


def test_export_banner_is_an_earlier_export_once_the_selection_changes(good, tmp_path):
    at = _page(good, topk="100")
    _export(at, tmp_path / "out")
    assert [b.label for b in at.get("download_button")] == ["Download .zip"]
    for change in (
        lambda: at.text_input(key="topk").set_value("20"),
        lambda: at.selectbox(key="part").set_value("encoder-weight"),
        lambda: at.number_input(key="threshold").set_value(0.0),
    ):
        change().run()
        assert not at.success, [s.value for s in at.success]
        assert any(
            i.value.startswith("Earlier export in this session, not the current selection: 100 input dims")
            for i in at.info
        )
        assert [b.label for b in at.get("download_button")] == ["Download the earlier export (.zip)"]
    at.number_input(key="threshold").set_value(None).run()
    at.selectbox(key="part").set_value("decoder-weight").run()
    at.text_input(key="topk").set_value("100").run()
    assert any("Exported 100 input dims" in s.value for s in at.success) and not at.info
    buf = io.BytesIO()
    np.save(buf, np.arange(200) % 2 == 0)
    at.file_uploader(key="mask_file").set_value(("even.npy", buf.getvalue(), "application/octet-stream")).run()
    assert not at.success and any("Earlier export" in i.value for i in at.info)


def test_export_banner_names_the_earlier_model_after_switching_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(export_view, "EXPORT_ROOT", tmp_path)
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.selectbox(key="sample").set_value("number-unpruned").run()
    at.button(key="export").click().run()
    at.selectbox(key="sample").set_value("own-unpruned").run()
    assert not at.success
    assert any("earlier export" in i.value.lower() and "number-unpruned" in i.value for i in at.info)


def test_auto_named_export_directory_follows_the_model_until_one_is_typed(tmp_path, monkeypatch):
    monkeypatch.setattr(export_view, "EXPORT_ROOT", tmp_path)
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    for sample in ("number-unpruned", "own-pre-pruned", "gender-unpruned", "number-unpruned"):
        at.selectbox(key="sample").set_value(sample).run()
        assert at.text_input(key="export_dir").value == str(tmp_path / f"{sample}-decoder-weight-top0.05")
    at.selectbox(key="sample").set_value("own-unpruned").run()
    at.button(key="export").click().run()
    assert not at.error, [e.value for e in at.error]
    written = tmp_path / "own-unpruned-decoder-weight-top0.05"
    assert json.loads((written / "pruning.json").read_text())["source_path"] == str(SAMPLES / "own-unpruned")
    mine = str(tmp_path / "mine")
    at.text_input(key="export_dir").set_value(mine).run()
    at.selectbox(key="sample").set_value("number-unpruned").run()
    assert at.text_input(key="export_dir").value == mine  # typed: kept
    at.text_input(key="export_dir").set_value("").run()  # cleared: follows again
    assert at.text_input(key="export_dir").value == str(tmp_path / "number-unpruned-decoder-weight-top0.05")


def test_reproduce_command_reads_the_mask_kept_in_the_export(good, tmp_path, fresh_registry, capsys):
    from gradiend_core.cli import main

    n = 200
    mask = np.zeros(n, dtype=bool)
    mask[::3] = True
    buf = io.BytesIO()
    np.save(buf, mask)
    at = _page(good, topk="30")
    at.file_uploader(key="mask_file").set_value(("keep.npy", buf.getvalue(), "application/octet-stream")).run()
    out = tmp_path / "out"
    _export(at, out)
    command = next(c.value for c in at.code if c.value.startswith("gradiend-core prune"))
    snippet = next(c.value for c in at.code if c.value.startswith("from gradiend_core"))
    saved = str(out / "mask.safetensors")
    assert f"--mask {saved}" in command and repr(saved) in snippet
    # the session ends: its copy of the upload is deleted, the commands still work
    fresh_registry.end(at.session_state["_session_files"].key)
    assert not any(fresh_registry.folder.rglob("*.npy"))
    from gradiend_core.selection.masks import read_mask_file

    g = read_checkpoint(good).param_map.base_global_index()
    assert np.array_equal(np.flatnonzero(read_mask_file(saved)), g[mask])  # bool over base-global indices
    prov = json.loads((out / "pruning.json").read_text())
    assert prov["mask_saved"] == "mask.safetensors" and prov["mask_sha256"] == sha256_mask(mask)
    argv = shlex.split(command)
    assert main(argv[1:]) == 0
    capsys.readouterr()
    exec(compile(snippet, "snippet", "exec"), {})
    for again in (Path(f"{out}-cli"), Path(f"{out}-py")):
        for name in ("model.safetensors", "mapping_indices.safetensors", "config.json"):
            if (out / name).exists():
                assert (again / name).read_bytes() == (out / name).read_bytes(), (again, name)
    want = RefModel.from_pretrained(str(good)).prune(topk=30, mask=torch.from_numpy(mask))
    assert torch.equal(
        RefModel.from_pretrained(str(out))._get_base_global_index_map(), want._get_base_global_index_map()
    )


def test_recorded_command_does_not_need_the_files_an_expression_read(good, tmp_path, capsys):
    from gradiend_core.cli import main

    session = tmp_path / "session"  # e.g. a dashboard session's folder, deleted when it ends
    session.mkdir()
    temporary = session / "upload-copy.npy"
    np.save(temporary, np.arange(200) % 4 != 0)
    expr = f"file({str(temporary)!r}) & top(decoder-weight, 0.5)"
    plan = plan_pruning(read_checkpoint(good), topk=40, mask_expr=expr)
    res = export_module.export_plan(plan, tmp_path / "out", transient=[session])
    stays = export_module.export_plan(plan, tmp_path / "stays")
    assert "--mask-expr" in shlex.split(stays.provenance["command"])  # its file is not a transient one
    shutil.rmtree(session)
    argv = shlex.split(res.provenance["command"])
    assert "--mask-expr" not in argv and argv[argv.index("--mask") + 1] == str(tmp_path / "out" / "mask.safetensors")
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv[1:]) == 0
    capsys.readouterr()
    for name in ("model.safetensors", "mapping_indices.safetensors", "config.json", "mask.safetensors"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name


def test_export_of_a_pre_pruned_checkpoint_keeps_its_pruning_stages(tmp_path):
    pre = SAMPLES / "own-pre-pruned"
    k = math.ceil(0.05 * 8922)
    src = _page(pre, view="Pruning stages")
    out = tmp_path / "out"
    _export(src, out)
    exp = _page(out, view="Pruning stages", topk="1.0")

    def stages(at):
        table = next(df.value for df in at.dataframe if {"stage", "GRADIEND parameters"} <= set(df.value.columns))
        return [tuple(r) for r in table[["stage", "input dims", "GRADIEND parameters", "memory (bytes)"]].values]

    # the source's chain (unpruned -> pre-pruned -> the cut) is the export's chain up to the export itself
    assert [r[1] for r in stages(src)] == [89_216, 8_922, k]
    assert [r[1:] for r in stages(exp)[:3]] == [r[1:] for r in stages(src)] and stages(exp)[3][1] == k
    metric = {m.label: m.value for m in exp.metric}
    assert metric["Pre-pruning kept"] == "8,922" and metric["Kept-set recall at k"] == "100.0 %"
    assert float(metric["Encoder output correlation"]) == pytest.approx(1.0)  # cut cost on the export's own dims

    def cut_table(at):
        return next(df.value for df in at.dataframe if "measure" in df.value.columns).set_index("measure")

    # the export's validation gradients are the source's on the kept dims: the export as saved
    # measures what the source measured after the cut that made the export
    assert list(cut_table(exp)[f"as saved ({k:,} dims)"]) == list(cut_table(src)[f"after the cut ({k:,} dims)"])
    val = read_checkpoint(out).param_map.base_global_index()
    from safetensors.numpy import load_file as load_np

    rec = load_np(str(out / "validation_gradients.safetensors"))
    full = load_np(str(pre / "validation_gradients.safetensors"))
    cols = {int(b): i for i, b in enumerate(full["base_global_index"])}
    assert np.array_equal(rec["base_global_index"], val)
    assert np.array_equal(rec["gradients"], full["gradients"][:, [cols[int(b)] for b in val]])
    from safetensors import safe_open

    def whole(path):
        with safe_open(str(path), framework="np") as f:
            return f.metadata(), {key: f.get_tensor(key).tolist() for key in f.keys()}

    assert whole(out / "pre_prune.safetensors") == whole(pre / "pre_prune.safetensors")  # carried whole


# ===================================================================================================
# Dtypes the reference writes: float16, bfloat16, float32, float64 end to end, at every file size.
# ===================================================================================================
import gradiend_core.checkpoint.tensor_files as tensor_files  # noqa: E402
from gradiend_core.pruning.plan import plan_pruning  # noqa: E402
from gradiend_core.ranking.importance import weight_importance  # noqa: E402

DTYPES = {
    "float16": (torch.float16, torch.int16),
    "bfloat16": (torch.bfloat16, torch.int16),
    "float32": (torch.float32, torch.int32),
    "float64": (torch.float64, torch.int64),
}


def _reference_in(dtype_name: str, path: Path) -> RefModel:
    """A reference model in ``dtype`` whose decoder rows are distinct numbers (bit patterns of the
    dtype counted up from 0.5's, float32's for float64, whose numbers then get float64 low bits),
    so that both packages must pick the same top-k.

    Importance is ranked at float32 resolution (``gradiend_core.ranking.ranking``): float64 numbers that
    differ by less than that tie and rank by index, where the reference ranks them in float64.
    """
    dtype, as_int = DTYPES[dtype_name]
    torch.manual_seed(1)
    pm = {"big.weight": {"shape": (40, 30), "repr": "all"}, "small.bias": {"shape": (100,), "repr": "all"}}
    ref = RefModel(1300, 1, pm, device=torch.device("cpu"), torch_dtype=dtype, base_model="dtypes")
    grid, grid_int = (torch.float32, torch.int32) if dtype == torch.float64 else (dtype, as_int)
    start = torch.tensor([0.5], dtype=grid).view(grid_int)
    rows = (start + torch.randperm(1300).to(grid_int)).view(grid).to(dtype)
    if dtype == torch.float64:
        rows = rows * (1 + 1e-12 * torch.rand(1300, dtype=torch.float64))  # not representable in float32
        assert not torch.equal(rows, rows.float().double())
    with torch.no_grad():
        ref.decoder[0].linear.weight.copy_(rows.reshape(1300, 1))
    ref.save_pretrained(str(path))
    return ref


@pytest.mark.parametrize("read_block", [64 * 1024**2, 4096], ids=["one read", "many reads"])
@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_every_dtype_the_reference_writes_opens_ranks_previews_and_exports(
    tmp_path, monkeypatch, dtype_name, read_block
):
    monkeypatch.setattr(tensor_files, "READ_BLOCK", read_block)  # the same reader at every file size
    src = tmp_path / "src"
    ref = _reference_in(dtype_name, src)
    data = read_checkpoint(src)
    assert data.architecture.torch_dtype == dtype_name
    assert all(same_bits(data.state_dict[k], v) for k, v in ref.state_dict().items())
    for part in ("decoder-weight", "encoder-weight", "decoder-sum"):  # the reference's importance, then float32
        want = ref.get_weight_importance(part).to(torch.float32).numpy()
        assert np.array_equal(weight_importance(data.state_dict, part), want), part
    plan = plan_pruning(data, topk=100)
    theirs = RefModel.from_pretrained(str(src)).prune(topk=100)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    for name, size in plan.report.disk_files_after.items():  # the preview's sizes are the reference's files'
        if name != "config.json":
            assert size == (tmp_path / "theirs" / name).stat().st_size, name
    res = export_pruned(src, tmp_path / "ours", topk=100)
    assert res.report.disk_files_after == plan.report.disk_files_after
    ours = RefModel.from_pretrained(str(tmp_path / "ours"))
    assert ours.torch_dtype == DTYPES[dtype_name][0] and ours.input_dim == 100
    assert torch.equal(ours._get_base_global_index_map(), theirs._get_base_global_index_map())
    assert all(same_bits(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True))


def test_float64_checkpoint_opens_in_the_dashboard(tmp_path):
    _reference_in("float64", tmp_path / "f64")
    at = _page(tmp_path / "f64", topk="100")
    assert not at.error and _kept(at) == "100"
    assert any("dtype **float64**" in c.value for c in at.caption)
