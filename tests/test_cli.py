"""The ``gradiend-core`` command line: info, prune, dry runs, errors, the installed script."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from refmodels import ref_global_index
from safetensors.torch import load_file, save_file

import gradiend_core
from gradiend_core import export_pruned, read_checkpoint, reduction_report, select, weight_importance
from gradiend_core.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str):
    """JSON as a browser or ``jq`` reads it: NaN and Infinity are not JSON."""

    def bad(const):
        raise ValueError(f"not JSON: {const}")

    return json.loads(text, parse_constant=bad)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ info
def test_info_json(ref_variants, capsys):
    for v in ref_variants.values():
        code, out, _ = run(capsys, "info", v.path, "--json")
        assert code == 0
        info = strict_json(out)
        cfg = json.loads((v.path / "config.json").read_text())
        a = cfg["architecture"]
        n, latent = a["input_dim"], a["latent_dim"]
        params = 2 * n * latent + latent + n + (2 if a["activation_encoder"] == "id" else 0)
        assert info["input_dim"] == n
        assert info["latent_dim"] == latent
        assert info["unpruned_length"] == 1808
        assert info["torch_dtype"] == a["torch_dtype"]
        assert info["base_model"] == "tiny-test"
        assert info["mapping_mode"] == cfg["mapping"]["mode"]
        assert info["mapped_parameters"] == 4
        assert info["gradiend_parameters"] == params
        assert info["memory_bytes"] == params * torch.empty(0, dtype=v.dtype).element_size()
        model_files = {"config.json", "model.safetensors", "pytorch_model.bin"} | {
            cfg["mapping"][f] for f in ("indices_file", "masks_file") if f in cfg["mapping"]
        }
        assert info["disk_bytes"] == sum(os.path.getsize(v.path / f) for f in model_files if (v.path / f).is_file())
        assert info["side_files"] == {p.name: os.path.getsize(p) for p in v.path.iterdir() if p.name not in model_files}
        assert info["weights_file"] == ("pytorch_model.bin" if v.name == "both_bin" else "model.safetensors")


def test_info_text(pruned_ckpt, capsys):
    code, out, err = run(capsys, "info", pruned_ckpt)
    assert code == 0
    n = json.loads((pruned_ckpt / "config.json").read_text())["architecture"]["input_dim"]
    assert "input_dim" in out and f"{n:,}" in out
    assert "tiny-test" in out


# ------------------------------------------------------------------------------ prune
def _mask_file(tmp_path: Path, n: int, kind: str) -> Path:
    m = np.random.default_rng(11).random(n) < 0.5
    m[0] = True
    if kind == "npy":
        p = tmp_path / "mask.npy"
        np.save(p, m)
    else:
        p = tmp_path / "mask.pt"
        torch.save(torch.from_numpy(m), p)
    return p


CASES = {
    "topk_float": (["--topk", "0.1"], {"topk": 0.1}),
    "topk_percent": (["--topk", "5%"], {"topk": 0.05}),
    "topk_int": (["--topk", "50"], {"topk": 50}),
    "topk_one_int": (["--topk", "1"], {"topk": 1}),
    "threshold": (["--threshold", "2.5"], {"threshold": 2.5}),
    "mask_npy": (["--mask", "npy"], {"mask": "npy"}),
    "mask_pt_threshold_topk": (
        ["--mask", "pt", "--threshold", "0.5", "--topk", "0.5"],
        {"mask": "pt", "threshold": 0.5, "topk": 0.5},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("part", ["decoder-weight", "decoder-sum"])
def test_prune_equals_export_pruned(ref_variants, tmp_path, capsys, case, part):
    src = ref_variants["post"].path
    n = read_checkpoint(src).architecture.input_dim
    argv, kwargs = CASES[case]
    argv = list(argv)
    if "mask" in kwargs:
        mpath = _mask_file(tmp_path, n, kwargs["mask"])
        argv[argv.index("--mask") + 1] = str(mpath)
        m = np.load(mpath) if kwargs["mask"] == "npy" else torch.load(mpath).numpy()
        kwargs = dict(kwargs, mask=m)
    cli_out = tmp_path / "cli"
    api_out = tmp_path / "api"
    code, out, err = run(capsys, "prune", src, "--part", part, *argv, "--out", cli_out)
    assert code == 0, err
    result = export_pruned(src, api_out, part=part, **kwargs)
    cli_files = sorted(p.name for p in cli_out.iterdir())
    assert cli_files == sorted(p.name for p in api_out.iterdir())
    assert "pruning.json" in cli_files and "training.json" in cli_files
    for name in cli_files:
        if name != "pruning.json":  # provenance holds a timestamp and the command line
            assert sha(cli_out / name) == sha(api_out / name), name
    prov = json.loads((cli_out / "pruning.json").read_text())
    assert prov["kept_dims"] == result.selection.k
    if result.selection.k >= 20:
        # (the reference's constructor draws its decoder from uniform(-max W_enc, max W_enc) of a
        # fresh random encoder and fails when all of a handful of those weights are negative)
        torch.manual_seed(0)
        assert Ref.from_pretrained(str(cli_out)).input_dim == result.selection.k
    assert "wrote" in out


def test_prune_json_output(pruned_ckpt, tmp_path, capsys):
    out_dir = tmp_path / "o"
    code, out, _ = run(capsys, "prune", pruned_ckpt, "--topk", "0.25", "--json", "--out", out_dir)
    assert code == 0
    doc = strict_json(out)
    n = read_checkpoint(pruned_ckpt).architecture.input_dim
    assert doc["report"]["input_dim_before"] == n
    assert doc["report"]["input_dim_after"] == math.ceil(0.25 * n)
    assert Path(doc["path"]) == out_dir.resolve()
    assert doc["file_sha256"] == {p.name: sha(p) for p in out_dir.iterdir()}
    assert doc["report"]["disk_files_after"] == {
        p.name: os.path.getsize(p) for p in out_dir.iterdir() if p.name != "pruning.json"
    }


def test_prune_bin_layout(pruned_ckpt, tmp_path, capsys):
    code, _, err = run(capsys, "prune", pruned_ckpt, "--topk", "30", "--bin", "--out", tmp_path / "b")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "b").iterdir()}
    assert "pytorch_model.bin" in names and not any(x.endswith(".safetensors") for x in names)
    ref = Ref.from_pretrained(str(tmp_path / "b"))
    expected = Ref.from_pretrained(str(pruned_ckpt)).prune(topk=30)
    np.testing.assert_array_equal(ref_global_index(ref), ref_global_index(expected))


def test_dry_run_writes_nothing(pruned_ckpt, tmp_path, capsys):
    out_dir = tmp_path / "never"
    before = sorted(tmp_path.iterdir())
    code, out, _ = run(capsys, "prune", pruned_ckpt, "--topk", "0.2", "--dry-run", "--out", out_dir)
    assert code == 0
    assert not out_dir.exists() and sorted(tmp_path.iterdir()) == before
    n = read_checkpoint(pruned_ckpt).architecture.input_dim
    assert "input dims" in out and str(math.ceil(0.2 * n)) in out
    # --json: the same numbers as reduction_report
    code, out, _ = run(capsys, "prune", pruned_ckpt, "--topk", "0.2", "--dry-run", "--json")
    assert code == 0
    data = read_checkpoint(pruned_ckpt)
    imp = weight_importance(data.state_dict, "decoder-weight")
    expected = reduction_report(data, select(imp, topk=0.2), imp, "decoder-weight").to_dict()
    got = strict_json(out)["report"]
    assert got["input_dim_after"] == expected["input_dim_after"] == math.ceil(0.2 * n)
    assert got["disk_files_after"] == expected["disk_files_after"]
    assert got["importance_kept"] == pytest.approx(expected["importance_kept"])


def test_dry_run_json_with_mask_only_is_valid_json(pruned_ckpt, tmp_path, capsys):
    """With only a mask the kept share is of the named part's importance (decoder-weight by default);
    a part whose total is 0 (no decoder bias values) leaves it undefined: JSON null, not Python's
    ``NaN`` token."""
    data = read_checkpoint(pruned_ckpt)
    mpath = _mask_file(tmp_path, data.architecture.input_dim, "npy")
    code, out, _ = run(capsys, "prune", pruned_ckpt, "--mask", mpath, "--dry-run", "--json")
    assert code == 0
    doc = strict_json(out)
    imp = data.state_dict["decoder.0.linear.weight"].double().abs().sum(1).numpy()
    assert doc["report"]["importance_kept"] == pytest.approx(imp[np.load(mpath)].sum() / imp.sum())
    assert doc["report"]["input_dim_after"] == int(np.load(mpath).sum())
    zero = tmp_path / "zero-bias"
    shutil.copytree(pruned_ckpt, zero)
    sd = load_file(str(zero / "model.safetensors"))
    sd["decoder.0.linear.bias"] = torch.zeros_like(sd["decoder.0.linear.bias"])
    save_file(sd, str(zero / "model.safetensors"))
    code, out, _ = run(capsys, "prune", zero, "--mask", mpath, "--importance", "decoder-bias", "--dry-run", "--json")
    assert code == 0 and strict_json(out)["report"]["importance_kept"] is None


# ------------------------------------------------------------------------------ errors
def test_bad_path_exits_2(tmp_path, capsys):
    for argv in (
        ["info", tmp_path / "missing"],
        ["prune", tmp_path / "missing", "--topk", "3", "--out", tmp_path / "o"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2
        assert "missing" in err and "no such" in err
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("topk", ["abc", "0", "-5", "1.5", "0.0", "150%", ""])
def test_bad_topk_exits_2(pruned_ckpt, tmp_path, capsys, topk):
    with pytest.raises(SystemExit) as e:  # argparse rejects it while parsing
        main(["prune", str(pruned_ckpt), "--topk", topk, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "--topk" in last and "topk" in last.split("--topk", 1)[1]
    assert not (tmp_path / "o").exists()


def test_bad_threshold_exits_2(pruned_ckpt, tmp_path, capsys):
    code, _, err = run(capsys, "prune", pruned_ckpt, "--threshold", "-1", "--out", tmp_path / "o")
    assert code == 2 and "threshold" in err
    code, _, err = run(capsys, "prune", pruned_ckpt, "--threshold", "1e9", "--out", tmp_path / "o")
    assert code == 2 and "largest importance" in err
    assert not (tmp_path / "o").exists()


def test_non_empty_out_exits_2(pruned_ckpt, tmp_path, capsys):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "precious.txt").write_text("keep me")
    code, _, err = run(capsys, "prune", pruned_ckpt, "--topk", "3", "--out", out_dir)
    assert code == 2
    assert "not empty" in err and "--overwrite" in err
    assert [p.name for p in out_dir.iterdir()] == ["precious.txt"]
    # --overwrite replaces checkpoint directories only; other files are never deleted
    code, _, err = run(capsys, "prune", pruned_ckpt, "--topk", "3", "--out", out_dir, "--overwrite")
    assert code == 2 and "not a GRADIEND checkpoint" in err
    assert [p.name for p in out_dir.iterdir()] == ["precious.txt"]
    ck = tmp_path / "ck"
    assert run(capsys, "prune", pruned_ckpt, "--topk", "5", "--out", ck)[0] == 0
    code, _, err = run(capsys, "prune", pruned_ckpt, "--topk", "3", "--out", ck, "--overwrite")
    assert code == 0, err
    assert read_checkpoint(ck).architecture.input_dim == 3


def test_out_inside_source_exits_2(fresh_copy, pruned_ckpt, capsys):
    src = fresh_copy(pruned_ckpt)
    before = {p.name: sha(p) for p in src.iterdir()}
    code, _, err = run(capsys, "prune", src, "--topk", "3", "--out", src / "pruned", "--overwrite")
    assert code == 2 and "source" in err
    assert {p.name: sha(p) for p in src.iterdir()} == before


def test_missing_selection_or_out_exits_2(pruned_ckpt, capsys):
    code, _, err = run(capsys, "prune", pruned_ckpt, "--out", "/nonexistent/x")
    assert code == 2 and "--topk" in err
    code, _, err = run(capsys, "prune", pruned_ckpt, "--topk", "3")
    assert code == 2 and "--out" in err


def test_bad_mask_file_exits_2(pruned_ckpt, tmp_path, capsys):
    p = tmp_path / "m.npy"
    np.save(p, np.ones(7, dtype=bool))
    code, _, err = run(capsys, "prune", pruned_ckpt, "--mask", p, "--out", tmp_path / "o")
    assert code == 2 and "m.npy" in err and "7" in err
    np.save(p, np.ones(read_checkpoint(pruned_ckpt).architecture.input_dim, dtype=np.int8))
    code, _, err = run(capsys, "prune", pruned_ckpt, "--mask", p, "--out", tmp_path / "o")
    assert code == 2 and "bool" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ installed script
def test_console_script_version():
    script = Path(sys.executable).parent / "gradiend-core"
    assert script.exists(), "the gradiend-core console script is not installed next to this Python"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gradiend-core {gradiend_core.__version__}"
