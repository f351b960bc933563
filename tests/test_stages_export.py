"""Exports ranked by the pre-prune record ("gradient-mean"): export_pruned, the CLI's
``--importance gradient-mean``, and the dashboard's "Reproduce this export" snippets."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from safetensors.numpy import load_file

from gradiend_core.checkpoint import read_checkpoint
from gradiend_core.cli import main
from gradiend_core.errors import SelectionError
from gradiend_core.pruning.export import export_pruned
from gradiend_core.pruning.plan import plan_pruning
from gradiend_core.pruning.reproduce import cli_command, python_snippet
from gradiend_core.ranking.importance import GRADIENT_MEAN, gradient_mean_importance
from gradiend_core.ranking.ranking import Ranking

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
PRE = SAMPLES / "own-pre-pruned"
PRE_POST = SAMPLES / "own-pre-post-pruned"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def ref_global(path: Path) -> np.ndarray:
    torch.manual_seed(0)  # the reference's constructor draws random weights before loading
    return Ref.from_pretrained(str(path))._get_base_global_index_map().numpy().astype(np.int64)


def record_importance(ckpt: Path) -> np.ndarray:
    """The record's importance of each of the checkpoint's dims, matched by base-global index with numpy."""
    rec = load_file(str(ckpt / "pre_prune.safetensors"))
    rec_g = rec.get("base_global_index", np.arange(rec["importance"].size, dtype=np.int64))
    g = ref_global(ckpt)
    order = np.argsort(rec_g)
    return rec["importance"][order[np.searchsorted(rec_g[order], g)]]


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((np.arange(values.size), -values.astype(np.float64)))
    return np.sort(order[:k])


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert "model.safetensors" in names and any(n.startswith("mapping") for n in names)
    for name in names:
        if name != "pruning.json":  # holds a timestamp and the output path
            assert sha(a / name) == sha(b / name), name


@pytest.mark.parametrize("ckpt,topk", [(PRE, 0.05), (PRE, 1000), (PRE_POST, 0.1)])
def test_gradient_mean_export_keeps_top_k_of_the_record(ckpt, topk, tmp_path):
    data = read_checkpoint(ckpt)
    out = tmp_path / "gm"
    res = export_pruned(
        data, out, importance=Ranking(gradient_mean_importance(data)), importance_label=GRADIENT_MEAN, topk=topk
    )
    n = data.architecture.input_dim
    k = math.ceil(topk * n) if isinstance(topk, float) else topk
    imp = record_importance(ckpt)
    expected_local = top_k(imp, k)
    src_global = ref_global(ckpt)
    assert res.selection.k == k and np.array_equal(res.selection.keep, expected_local)
    # the reference package loads it, with exactly those base-global dims and the source's rows
    torch.manual_seed(0)
    loaded = Ref.from_pretrained(str(out))
    assert loaded.input_dim == k
    assert np.array_equal(loaded._get_base_global_index_map().numpy(), src_global[expected_local])
    src_w = load_file(str(ckpt / "model.safetensors"))
    out_w = load_file(str(out / "model.safetensors"))
    assert np.array_equal(out_w["decoder.0.linear.weight"], src_w["decoder.0.linear.weight"][expected_local])
    assert np.array_equal(out_w["encoder.0.linear.weight"], src_w["encoder.0.linear.weight"][:, expected_local])
    prov = json.loads((out / "pruning.json").read_text())
    assert prov["importance"] == GRADIENT_MEAN and "part" not in prov
    assert (
        prov["kept_dims"] == k and "--importance gradient-mean" in prov["command"] and "--part" not in prov["command"]
    )
    assert res.report.source == GRADIENT_MEAN
    assert res.report.importance_kept == pytest.approx(
        imp[expected_local].astype(np.float64).sum() / imp.astype(np.float64).sum()
    )


def test_gradient_mean_threshold(tmp_path):
    data = read_checkpoint(PRE)
    imp = record_importance(PRE)
    thr = float(np.quantile(imp, 0.97))
    res = export_pruned(
        data, tmp_path / "thr", importance=gradient_mean_importance(data), importance_label=GRADIENT_MEAN, threshold=thr
    )
    assert np.array_equal(res.selection.keep, np.flatnonzero(imp >= np.float32(thr)))


def test_importance_label_needs_importance_and_sources_stay_validated(tmp_path):
    with pytest.raises(SelectionError, match="importance="):
        export_pruned(PRE, tmp_path / "a", importance_label=GRADIENT_MEAN, topk=10)
    with pytest.raises(ValueError, match="importance source must be one of"):
        export_pruned(PRE, tmp_path / "b", part="gradient-man", topk=10)
    # gradient-mean is a source like the parts: named directly, it ranks as the labelled vector does
    direct = export_pruned(PRE, tmp_path / "b", part=GRADIENT_MEAN, topk=10)
    data = read_checkpoint(PRE)
    labelled = export_pruned(
        data, tmp_path / "b2", importance=gradient_mean_importance(data), importance_label=GRADIENT_MEAN, topk=10
    )
    assert direct.selection.keep.tolist() == labelled.selection.keep.tolist()
    assert direct.provenance["command"] == labelled.provenance["command"].replace("b2", "b")
    # custom importance without a label: recorded as "custom", and no command claims to reproduce it
    res = export_pruned(PRE, tmp_path / "c", importance=np.arange(8922, dtype=np.float32), topk=10)
    assert res.provenance["importance"] == "custom" and res.provenance["command"] is None
    assert list(res.selection.keep) == list(range(8912, 8922))


def test_gradient_mean_without_record_is_a_clear_error():
    with pytest.raises(Exception, match="pre_prune.safetensors"):
        gradient_mean_importance(read_checkpoint(SAMPLES / "own-unpruned"))


# ----------------------------------------------------------------------------- CLI
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv,kwargs",
    [
        (["--topk", "0.05"], {"topk": 0.05}),
        (["--topk", "300", "--threshold", "1e-5"], {"topk": 300, "threshold": 1e-5}),
    ],
)
def test_cli_importance_gradient_mean_is_byte_identical_to_export_pruned(argv, kwargs, tmp_path, capsys):
    code, out, err = run(capsys, "prune", PRE, "--importance", "gradient-mean", *argv, "--out", tmp_path / "cli")
    assert code == 0, err
    data = read_checkpoint(PRE)
    res = export_pruned(
        data, tmp_path / "api", importance=gradient_mean_importance(data), importance_label=GRADIENT_MEAN, **kwargs
    )
    same_files(tmp_path / "cli", tmp_path / "api")
    prov = json.loads((tmp_path / "cli" / "pruning.json").read_text())
    assert prov["importance"] == GRADIENT_MEAN and "part" not in prov and prov["kept_dims"] == res.selection.k
    assert "gradient-mean importance" in err and "wrote" in out


def test_cli_gradient_mean_dry_run_json(capsys, tmp_path):
    code, out, err = run(capsys, "prune", PRE, "--importance", "gradient-mean", "--topk", "0.05", "--dry-run", "--json")
    assert code == 0, err
    report = json.loads(out)["report"]
    assert report["source"] == GRADIENT_MEAN and report["input_dim_after"] == math.ceil(0.05 * 8922)


def test_cli_gradient_mean_errors(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "prune",
        SAMPLES / "own-unpruned",
        "--importance",
        "gradient-mean",
        "--topk",
        "10",
        "--out",
        tmp_path / "x",
    )
    assert code == 2 and "pre_prune.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    code, _, err = run(
        capsys,
        "prune",
        PRE,
        "--importance",
        "gradient-mean",
        "--part",
        "decoder-weight",
        "--topk",
        "10",
        "--out",
        tmp_path / "y",
    )
    assert code == 2 and "either --part" in err


def test_cli_part_still_works_and_defaults_to_decoder_weight(capsys, tmp_path):
    code, _, err = run(capsys, "prune", PRE, "--topk", "50", "--out", tmp_path / "dflt")
    assert code == 0, err
    run(capsys, "prune", PRE, "--part", "decoder-weight", "--topk", "50", "--out", tmp_path / "dw")
    same_files(tmp_path / "dflt", tmp_path / "dw")
    assert json.loads((tmp_path / "dflt" / "pruning.json").read_text())["importance"] == "decoder-weight"


# ----------------------------------------------------------------------------- reproduce snippets
def test_reproduce_command_and_python_snippet_give_the_same_files(tmp_path, capsys):
    data = read_checkpoint(PRE)
    res = export_pruned(
        data,
        tmp_path / "dash",
        importance=Ranking(gradient_mean_importance(data)),
        importance_label=GRADIENT_MEAN,
        topk=0.05,
    )
    cmd = cli_command(data.path, tmp_path / "from-cmd", GRADIENT_MEAN, 0.05, None, None)
    argv = shlex.split(cmd)
    assert argv[:2] == ["gradiend-core", "prune"] and "--importance" in argv and "--part" not in argv
    assert main(argv[1:]) == 0
    capsys.readouterr()
    same_files(res.path, tmp_path / "from-cmd")
    code = python_snippet(plan_pruning(data, source=GRADIENT_MEAN, topk=0.05), str(tmp_path / "from-py"))
    assert "load_pre_prune_record" in code and "importance=importance" in code
    exec(compile(code, "<snippet>", "exec"), {})
    for name in ("model.safetensors", "mapping_indices.safetensors", "mapping_masks.safetensors"):
        if (res.path / name).exists():
            assert sha(res.path / name) == sha(tmp_path / "from-py" / name), name
