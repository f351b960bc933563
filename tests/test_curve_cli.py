"""``gradiend-core curve``: the CSV against an independent evaluation of the pruned encoder,
gradients from the saved record and computed from a data file, the output file, bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradiend_core.checkpoint.records import load_validation_record
from gradiend_core.cli import main
from gradiend_core.model import ParamMappedGradiendModel
from gradiend_core.ranking.importance import PARTS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
DATA = SAMPLES / "data"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _label_corr_of_pruned(path: Path, part: str, k: int, x: torch.Tensor, labels: np.ndarray) -> float:
    """Prune with the model API and run the pruned encoder on the kept gradient entries."""
    model = ParamMappedGradiendModel.from_pretrained(path)
    keep = torch.from_numpy(model.select(part=part, topk=k).keep)
    with torch.no_grad():
        enc = model.prune(topk=k, part=part).forward_encoder(x[:, keep])[:, 0].double().numpy()
    return float(np.corrcoef(labels, enc)[0, 1])


def test_curve_csv_from_saved_gradients(capsys):
    path = SAMPLES / "own-unpruned"
    code, out, err = run(capsys, "curve", path, "--points", "6", "--topk", "5%")
    assert code == 0, err
    assert "validation_gradients.safetensors" in err
    df = pd.read_csv(io.StringIO(out))
    assert list(df.part.unique()) == list(PARTS)
    rec = load_validation_record(path)
    labels = -rec.labels.numpy().astype(np.float64)  # alternative source: the reference labels the other class
    n = 89216
    for part in ("decoder-weight", "encoder-weight"):
        rows = df[df.part == part]
        assert rows.k.iloc[0] == 1 and rows.k.iloc[-1] == n
        assert rows[rows.selection == 1].k.tolist() == [4461]  # ceil(0.05 * 89216)
        for k in (1, 4461):
            got = float(rows[rows.k == k].label_correlation.iloc[0])
            assert got == pytest.approx(_label_corr_of_pruned(path, part, k, rec.gradients, labels), abs=2e-6)


def test_curve_from_a_data_file_to_an_out_file(capsys, tmp_path):
    out_file = tmp_path / "curve.csv"
    code, out, err = run(
        capsys,
        "curve",
        SAMPLES / "place-unpruned",
        "--data",
        DATA / "place.csv",
        "--part",
        "decoder-weight",
        "--part",
        "decoder-sum",
        "--points",
        "5",
        "--topk",
        "90",
        "--out",
        out_file,
    )
    assert code == 0, err
    assert out == "" and "gradients 104 of 104 examples" in err and f"wrote {out_file}" in err
    df = pd.read_csv(out_file)
    assert set(df.part) == {"decoder-weight", "decoder-sum"}
    row = df[(df.part == "decoder-weight") & (df.k == 90)]
    assert row.selection.tolist() == [1]
    # independent: the pruned encoder on gradients computed again (now from the cache)
    from gradiend_core.checkpoint import read_checkpoint
    from gradiend_core.gradients.eval_gradients import compute_eval_gradients

    g = compute_eval_gradients(read_checkpoint(SAMPLES / "place-unpruned"), DATA / "place.csv")
    assert float(row.label_correlation.iloc[0]) == pytest.approx(
        _label_corr_of_pruned(SAMPLES / "place-unpruned", "decoder-weight", 90, g.gradients, g.labels), abs=2e-6
    )
    # the full model keeps more than the 90-dim cut: a visible cost
    full = float(df[(df.part == "decoder-weight") & (df.k == df.k.max())].label_correlation.iloc[0])
    assert float(row.label_correlation.iloc[0]) < full - 0.1


def test_gradient_mean_part_on_a_pre_pruned_checkpoint(capsys):
    code, out, err = run(capsys, "curve", SAMPLES / "own-pre-pruned", "--part", "gradient-mean", "--points", "4")
    assert code == 0, err
    assert set(pd.read_csv(io.StringIO(out)).part) == {"gradient-mean"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["curve", SAMPLES / "number-unpruned"], "no saved validation gradients"),
        (["curve", SAMPLES / "own-unpruned", "--part", "decoder"], "--part 'decoder' is not an importance source"),
        (["curve", SAMPLES / "own-unpruned", "--points", "1"], "--points must be >= 2"),
        (["curve", SAMPLES / "own-unpruned", "--topk", "0"], "topk as a count must be >= 1"),
        (["curve", SAMPLES / "own-unpruned", "--split", "test"], "apply to gradients computed from --data"),
        (["curve", SAMPLES / "own-unpruned", "--part", "gradient-mean"], "pre_prune.safetensors"),
        (["curve", SAMPLES / "number-unpruned", "--data", "nope.csv"], "no such data file"),
        (
            ["curve", SAMPLES / "number-unpruned", "--data", DATA / "number.csv", "--base-model", SAMPLES],
            "not a model directory",
        ),
        (["curve", SAMPLES / "number-unpruned", "--data", DATA / "number.csv", "--split", "dev"], "split dev"),
        (["curve", SAMPLES / "nope"], "no such file or directory"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_bad_classes_and_out_directory(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["curve", str(SAMPLES / "own-unpruned"), "--data", str(DATA / "number.csv"), "--classes", "singular"])
    assert e.value.code == 2
    assert "--classes takes two different class names" in capsys.readouterr().err
    code, _, err = run(capsys, "curve", SAMPLES / "own-unpruned", "--points", "3", "--out", tmp_path)
    assert code == 2 and "is a directory" in err


def test_installed_script(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRADIEND_CORE_CACHE=str(tmp_path))
    script = Path(sys.executable).with_name("gradiend-core")
    res = subprocess.run(
        [str(script), "curve", str(SAMPLES / "own-post-pruned"), "--points", "3", "--part", "decoder-weight"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("part,k,share,exact_k,selection,label_correlation")
    assert len(res.stdout.splitlines()) == 1 + 3  # header + 1 dim, sqrt(input_dim) dims, all dims
