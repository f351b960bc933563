"""One size on disk: the checkpoint header (summary, ``info``), the preview (page and ``prune``) and
the files of an actual export agree, counted from the files themselves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradiend_core import read_checkpoint
from gradiend_core.checkpoint.overview import checkpoint_overview
from gradiend_core.checkpoint.sizes import directory_disk_size
from gradiend_core.cli import main
from gradiend_core.pruning.export import export_plan
from gradiend_core.pruning.plan import plan_pruning
from gradiend_core.pruning.reduction import preview_disk_sizes
from gradiend_core.util.units import format_bytes, format_change

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def model_file_bytes(directory: Path) -> int:
    """Bytes of config.json, the weight file and the mapping files config.json names (by hand)."""
    cfg = json.loads((directory / "config.json").read_text())
    names = {"config.json", "model.safetensors", "pytorch_model.bin"}
    names |= {cfg["mapping"][k] for k in ("indices_file", "masks_file") if k in cfg["mapping"]}
    return sum(os.path.getsize(directory / n) for n in names if (directory / n).is_file())


@pytest.mark.parametrize("source", [SAMPLES / "number-unpruned", SAMPLES / "own-pre-pruned", "both_bin", "post"])
def test_header_preview_and_export_agree(source, ref_variants, tmp_path, capsys):
    path = Path(ref_variants[source].path) if isinstance(source, str) else source
    data = read_checkpoint(path)
    header = checkpoint_overview(data)
    assert header["disk_bytes"] == model_file_bytes(path)
    assert set(header["side_files"]) == {f.name for f in path.iterdir()} - set(directory_disk_size(path).model_files)
    plan = plan_pruning(data, topk=0.3)
    before, after = preview_disk_sizes(data, plan.report)
    assert before.model_bytes == header["disk_bytes"]  # the preview's "before" is the header's number
    out = export_plan(plan, tmp_path / "export").path
    assert after.model_bytes == model_file_bytes(out)  # the preview's "after" is what the export wrote
    assert checkpoint_overview(read_checkpoint(out))["disk_bytes"] == after.model_bytes  # and its own header
    assert "pruning.json" in directory_disk_size(out).side_files
    # the CLI prints the same two sizes and the same signed change
    assert main(["prune", str(path), "--topk", "0.3", "--dry-run"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("size on disk"))
    change = format_change(after.model_bytes, before.model_bytes)
    expected = f"{format_bytes(before.model_bytes)} {format_bytes(after.model_bytes)} {change}"
    assert " ".join(row.split()).endswith(expected)


def test_info_prints_the_header_size(capsys):
    assert main(["info", str(SAMPLES / "number-unpruned")]) == 0
    out = capsys.readouterr().out
    size = model_file_bytes(SAMPLES / "number-unpruned")
    assert f"({size:,} B; model files: config, weights, mapping)" in out
    assert "training.json" in next(line for line in out.splitlines() if line.startswith("side_files"))


def test_a_disk_increase_is_signed_plus(capsys):
    """Keeping all but 3 of 89,216 dims adds mapping files: the model files grow, and the preview says so."""
    data = read_checkpoint(SAMPLES / "number-unpruned")
    plan = plan_pruning(data, topk=89_213)
    before, after = preview_disk_sizes(data, plan.report)
    assert after.model_bytes > before.model_bytes
    assert format_change(after.model_bytes, before.model_bytes).startswith("+")
    assert main(["prune", str(SAMPLES / "number-unpruned"), "--topk", "89213", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "kept 99.997 % of input dims" in out
    assert "--" not in next(line for line in out.splitlines() if line.startswith("size on disk"))
