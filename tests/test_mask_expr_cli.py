"""--mask-expr on the command line, mask_expr= in the API: previews equal the API's numbers, an
export equals the export of the same mask given as a file, the recorded command reproduces it,
and the model API agrees with the reference package given the same mask."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from refmodels import ref_global_index

from gradiend_core import ParamMappedGradiendModel, export_pruned, read_checkpoint, reduction_report, select
from gradiend_core.cli import main
from gradiend_core.ranking.importance import weight_importance
from gradiend_core.selection.expr.evaluate import evaluate_mask_expr

EXPR = "top(decoder-weight, 0.5) & ~top(encoder-weight, 40) | name('query\\.bias')"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def same_files(a: Path, b: Path, skip=("pruning.json",)) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        if n not in skip:
            assert sha(a / n) == sha(b / n), n


@pytest.mark.parametrize("variant", ["unpruned", "both"])
def test_dry_run_json_equals_the_api(ref_variants, capsys, variant):
    src = ref_variants[variant].path
    code, out, err = run(
        capsys,
        "prune",
        src,
        "--part",
        "decoder-sum",
        "--mask-expr",
        EXPR,
        "--topk",
        "0.5",
        "--threshold",
        "0.1",
        "--dry-run",
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    data = read_checkpoint(src)
    result = evaluate_mask_expr(EXPR, data)
    assert doc["mask_expr"] == result.to_dict()
    imp = weight_importance(data.state_dict, "decoder-sum")
    sel = select(imp, mask=result.mask, threshold=0.1, topk=0.5)
    assert doc["report"] == json.loads(json.dumps(reduction_report(data, sel, imp, "decoder-sum").to_dict()))
    assert doc["report"]["input_dim_after"] == sel.k
    # text output lists every term with its count
    code, out, _ = run(capsys, "prune", src, "--mask-expr", EXPR, "--dry-run")
    assert code == 0
    assert f"mask expression: {result.expression}" in out
    for term, n in result.term_counts.items():
        assert term in out and f"{n:,}" in out


def test_export_equals_the_same_mask_given_as_a_file(ref_variants, tmp_path, capsys):
    src = ref_variants["both"].path
    data = read_checkpoint(src)
    result = evaluate_mask_expr(EXPR, data)
    np.save(tmp_path / "m.npy", result.mask)
    code, _, err = run(capsys, "prune", src, "--mask-expr", EXPR, "--topk", "0.5", "--out", tmp_path / "expr")
    assert code == 0, err
    code, _, err = run(capsys, "prune", src, "--mask", tmp_path / "m.npy", "--topk", "0.5", "--out", tmp_path / "file")
    assert code == 0, err
    same_files(tmp_path / "expr", tmp_path / "file")
    prov = json.loads((tmp_path / "expr" / "pruning.json").read_text())
    assert prov["mask_expr"] == result.expression
    assert prov["mask_expr_sha256"] == prov["mask_sha256"] == result.sha256
    assert json.loads((tmp_path / "file" / "pruning.json").read_text())["mask_sha256"] == result.sha256
    assert "--mask-expr" in shlex.split(prov["command"])
    # the API gives the same files
    api = export_pruned(src, tmp_path / "api", topk=0.5, mask_expr=EXPR)
    same_files(tmp_path / "expr", tmp_path / "api")
    assert api.provenance["mask_expr"] == result.expression and api.provenance["command"] == prov["command"].replace(
        str(tmp_path / "expr"), str(tmp_path / "api")
    )
    # the recorded command reproduces the export
    argv = shlex.split(prov["command"])
    assert argv[:2] == ["gradiend-core", "prune"]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    code, _, err = run(capsys, *argv[1:])
    assert code == 0, err
    same_files(tmp_path / "expr", tmp_path / "again")


def test_expression_combined_with_mask_file_and_name_filters(ref_variants, tmp_path, capsys):
    src = ref_variants["post"].path
    data = read_checkpoint(src)
    n = data.architecture.input_dim
    m = np.random.default_rng(3).random(n) < 0.7
    np.save(tmp_path / "m.npy", m)
    expr = "top(decoder-weight, 0.6)"
    code, _, err = run(
        capsys,
        "prune",
        src,
        "--mask-expr",
        expr,
        "--mask",
        tmp_path / "m.npy",
        "--exclude",
        "bias",
        "--out",
        tmp_path / "a",
    )
    assert code == 0, err
    names = np.repeat(["bias" not in e.name for e in data.param_map], data.param_map.per_param_counts())
    want = evaluate_mask_expr(expr, data).mask & m & names
    back = read_checkpoint(tmp_path / "a")
    g = ref_global_index(Ref.from_pretrained(str(src)))
    np.testing.assert_array_equal(back.param_map.base_global_index(), g[want])
    prov = json.loads((tmp_path / "a" / "pruning.json").read_text())
    argv = shlex.split(prov["command"])
    assert {"--mask-expr", "--mask", "--exclude"} <= set(argv)
    argv[argv.index("--out") + 1] = str(tmp_path / "b")
    assert run(capsys, *argv[1:])[0] == 0
    same_files(tmp_path / "a", tmp_path / "b")


def test_bad_expression_exits_2_with_the_pointed_message(ref_variants, tmp_path, capsys):
    # a syntax error is reported before the checkpoint is read
    code, out, err = run(
        capsys, "prune", tmp_path / "missing", "--mask-expr", "top(decoder-weight, 5) & tpo(x, 1)", "--dry-run"
    )
    assert code == 2 and out == ""
    assert "column 26: unknown function 'tpo'" in err and "\n" + " " * (4 + 25) + "^" in err
    assert "Traceback" not in err
    # evaluation errors too, and nothing is written
    src = ref_variants["post"].path
    for expr, words in [
        ("top(decoder-weight, 5) & ~top(decoder-weight, 5)", "keeps none"),
        ("file('nowhere.npy')", "cannot read the mask file"),
    ]:
        code, _, err = run(capsys, "prune", src, "--mask-expr", expr, "--out", tmp_path / "o")
        assert code == 2 and words in err and "Traceback" not in err
        assert not (tmp_path / "o").exists()


def test_model_api_prune_with_mask_expr(ref_variants):
    src = ref_variants["both"].path
    model = ParamMappedGradiendModel.from_pretrained(src)
    result = evaluate_mask_expr(EXPR, read_checkpoint(src))
    pruned = model.prune(mask_expr=EXPR)
    same = model.prune(mask=torch.from_numpy(result.mask))
    assert pruned.input_dim == result.kept
    np.testing.assert_array_equal(pruned.mapping.base_global_index(), same.mapping.base_global_index())
    # the reference package, given the same mask, keeps the same base-model entries
    ref = Ref.from_pretrained(str(src)).prune(mask=torch.from_numpy(result.mask))
    np.testing.assert_array_equal(pruned.mapping.base_global_index(), ref_global_index(ref))
    # mask_expr is the mask step: topk then acts on what it kept
    both = model.prune(mask_expr=EXPR, topk=3, part="decoder-sum")
    imp = weight_importance(read_checkpoint(src).state_dict, "decoder-sum")
    keep = select(imp, mask=result.mask, topk=3).keep
    np.testing.assert_array_equal(both.mapping.base_global_index(), model.mapping.base_global_index()[keep])


def test_recorded_command_names_the_mask_inputs_unless_they_will_be_gone(tmp_path):
    """pruning.json's command repeats the user's own mask inputs (it must not read the export
    folder it would replace); only inputs that will be gone are replaced by the saved mask."""
    import shlex

    from gradiend_core.pruning.plan import plan_pruning
    from gradiend_core.pruning.reproduce import reproduce_command

    src = Path(__file__).resolve().parent.parent / "sample_models" / "number-unpruned"
    expr = "top(decoder-weight, 5%) & top(encoder-weight, 5%)"
    res = export_pruned(src, tmp_path / "both", mask_expr=expr, topk=500)
    argv = shlex.split(res.provenance["command"])
    assert (
        "--mask" not in argv
        and argv[argv.index("--mask-expr") + 1] == "top(decoder-weight, 0.05) & top(encoder-weight, 0.05)"
    )
    assert (tmp_path / "both" / "mask.safetensors").is_file()  # still saved, as a record
    # a mask file in a directory that will be gone (a session's uploads): the saved copy stands for every input
    session = tmp_path / "session"
    session.mkdir()
    m = np.zeros(89216, dtype=bool)
    m[::2] = True
    np.save(session / "upload.npy", m)
    plan = plan_pruning(
        read_checkpoint(src), mask_file=str(session / "upload.npy"), name_include="layer", mask_expr=expr, topk=10
    )
    cmd = shlex.split(reproduce_command(plan, tmp_path / "o", str(tmp_path / "saved.safetensors"), [session]))
    assert cmd[cmd.index("--mask") + 1] == str(tmp_path / "saved.safetensors")
    assert "--mask-expr" not in cmd and "--include" not in cmd
    stable = shlex.split(reproduce_command(plan, tmp_path / "o", str(tmp_path / "saved.safetensors"), []))
    assert (
        stable[stable.index("--mask") + 1] == str(session / "upload.npy")
        and "--include" in stable
        and "--mask-expr" in stable
    )


def test_nesting_too_deep_is_a_pointed_error_not_a_crash(ref_variants, capsys):
    src = ref_variants["post"].path
    deep_not = "~" * 1000 + "name('x')"
    deep_paren = "(" * 1000 + "name('x')" + ")" * 1000
    for expr in (deep_not, deep_paren):
        code, out, err = run(capsys, "prune", src, "--mask-expr", expr, "--dry-run")
        assert code == 2 and out == "" and "Traceback" not in err
        assert "column 101: the expression nests '(' and '~' more than 100 levels deep" in err
    from gradiend_core.selection.expr.syntax import parse, to_text

    assert to_text(parse("~" * 100 + "name('x')")) == to_text(parse("name('x')"))  # 100 levels: legal
    assert to_text(parse("(" * 100 + "name('x')" + ")" * 100)) == to_text(parse("name('x')"))


def test_a_backtracking_name_pattern_ends_with_a_message(ref_variants, tmp_path):
    """A pattern that backtracks catastrophically with Python's re (hours on one name) is matched
    by the regex package in time, in the CLI (a separate process: a regression hangs, then fails)."""
    import subprocess
    import sys

    src = ref_variants["post"].path
    for args in (["--mask-expr", r"name('^(\w+\.?)*$x')"], ["--include", r"^(\w+\.?)*$x", "--topk", "5"]):
        run_ = subprocess.run(
            [sys.executable, "-m", "gradiend_core.cli", "prune", str(src), *args, "--dry-run"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run_.returncode == 2 and "Traceback" not in run_.stderr, run_.stderr
        assert "keep" in run_.stderr  # the pattern matches no name: the mask keeps nothing


def test_a_name_pattern_that_takes_too_long_is_refused():
    from gradiend_core.errors import SelectionError
    from gradiend_core.selection.masks import search_names

    name = "bert.encoder.layer.10.attention.output.dense.weight" * 4  # about 0.1 s per search here
    assert not search_names(r"(\w+?\.?)*(?<!t)$", [name]).any()
    with pytest.raises(SelectionError, match=r"takes more than 0.001 s to match the parameter names"):
        search_names(r"(\w+?\.?)*(?<!t)$", [name] * 3, seconds=0.001)
