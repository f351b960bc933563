"""The benchmark harness's own pieces: the streamed checkpoint writer against the reference's
save_pretrained, LLaMA shapes against transformers, the memory-limit helper on real processes,
and the table renderer on a hand-made result."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from safetensors.torch import load_file

from benchmarks.llama_shapes import LLAMA_3_2_1B_ENTRIES, llama_shapes
from benchmarks.memlimit import CGROUP_ROOT, cgroup_available, parse_bytes, run_limited
from benchmarks.render_table import load_json_line, render
from benchmarks.runner import parse_steps
from benchmarks.streaming_checkpoint import expected_weights_bytes, write_streamed_checkpoint

SMALL = dict(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=50)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("latent_dim,bias", [(1, True), (3, False)])
def test_streamed_checkpoint_is_byte_identical_to_reference_save_pretrained(tmp_path, dtype, latent_dim, bias):
    shapes = llama_shapes(**SMALL)
    ours = write_streamed_checkpoint(
        tmp_path / "streamed",
        shapes,
        latent_dim=latent_dim,
        dtype=dtype,
        bias_decoder=bias,
        metadata={"base_model": "tiny-llama"},
        chunk=37,
    )
    tensors = load_file(str(ours / "model.safetensors"))
    n = sum(math.prod(s) for _, s in shapes)
    ref = Ref(
        n,
        latent_dim,
        {k: {"shape": s, "repr": "all"} for k, s in shapes},
        torch_dtype=DTYPES[dtype],
        bias_decoder=bias,
        device=torch.device("cpu"),
        base_model="tiny-llama",
    )
    ref.load_state_dict(tensors)
    ref.save_pretrained(str(tmp_path / "reference"))
    for name in ("config.json", "model.safetensors"):
        assert (ours / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert (ours / "model.safetensors").stat().st_size == expected_weights_bytes(n, latent_dim, dtype, bias)
    assert sorted(p.name for p in ours.iterdir()) == ["config.json", "model.safetensors"]


def test_streamed_values_do_not_depend_on_chunking_and_follow_the_reference_scale(tmp_path):
    shapes = llama_shapes(**SMALL)
    a = write_streamed_checkpoint(tmp_path / "a", shapes, chunk=7, seed=3)
    b = write_streamed_checkpoint(tmp_path / "b", shapes, chunk=1 << 20, seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    t = load_file(str(a / "model.safetensors"))
    n = sum(math.prod(s) for _, s in shapes)
    bound = 1 / math.sqrt(n)  # nn.Linear's default bound for the encoder, the reference's for the decoder
    assert t["encoder.0.linear.weight"].abs().max() <= bound
    assert t["decoder.0.linear.bias"].abs().max() <= bound
    # Decoder weights are uniform times Exp(1)**3: heavy-tailed, far beyond the uniform bound.
    assert t["decoder.0.linear.weight"].abs().max() > 3 * bound


def test_streamed_writer_refuses_an_existing_directory(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError):
        write_streamed_checkpoint(tmp_path / "x", llama_shapes(**SMALL))


def test_llama_shapes_match_transformers_llama_3_2_1b():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=128_256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    expected = [(n, tuple(p.shape)) for n, p in model.named_parameters()]  # the tied lm_head is listed once
    assert llama_shapes() == expected
    assert sum(math.prod(s) for _, s in expected) == LLAMA_3_2_1B_ENTRIES


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes(123) == 123
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_parse_steps_names_the_step_a_killed_child_was_in():
    out = "\n".join(json.dumps(m) for m in [{"begin": "a"}, {"end": "a", "s": 1.5}, {"begin": "b"}])
    assert parse_steps(out) == ({"a": 1.5}, "b", None)
    done = out + "\n" + json.dumps({"end": "b", "s": 2.0}) + "\n" + json.dumps({"result": {"k": 1}})
    assert parse_steps(done) == ({"a": 1.5, "b": 2.0}, None, {"k": 1})


needs_cgroup = pytest.mark.skipif(not cgroup_available(), reason="needs root and a cgroup v1 memory hierarchy")
MIB = 2**20


@needs_cgroup
def test_run_limited_reports_the_peak_of_a_small_allocation():
    code = "import time; x = b'a' * (200 * 2**20); time.sleep(0.3); print(len(x))"
    run = run_limited([sys.executable, "-c", code], 1024 * MIB)
    assert run.ok and run.stdout.strip() == str(200 * MIB)
    # The process's own peak: the 200 MiB buffer plus an interpreter (tens of MiB), never less than the buffer.
    assert 200 * MIB <= run.peak_rss_bytes < 300 * MIB
    assert 200 * MIB <= run.cgroup_peak_bytes < 300 * MIB
    assert 150 * MIB <= run.cgroup_peak_anon_bytes <= run.cgroup_peak_bytes
    group = run.extra["cgroup"]
    assert group.startswith(str(CGROUP_ROOT)) and not os.path.exists(group)  # the group was removed


@needs_cgroup
def test_run_limited_reports_an_oom_kill_at_the_limit():
    run = run_limited([sys.executable, "-c", "x = b'a' * (300 * 2**20)"], 100 * MIB)
    assert not run.ok and run.oom_killed and run.returncode == -9
    assert run.cgroup_peak_bytes <= 100 * MIB
    assert "100.0 MiB" in run.failure()


def _run(ok, wall, peak, steps=None, failed=None, failure=None, result=None):
    return {
        "ok": ok,
        "wall_s": wall,
        "steps": steps or {},
        "failed_step": failed,
        "failure": failure,
        "limit_bytes": 4 * 2**30,
        "peak_rss_bytes": peak,
        "result": result,
    }


def test_render_table_shows_the_numbers_of_the_json_line():
    results = {
        "machine": {"cpu": "X", "cores": 2, "mem_total_bytes": 24 * 2**30},
        "settings": {"export_topk": "0.05", "llama_topk": "0.01"},
        "scenarios": {
            "bert": {
                "checkpoint": {"input_dim": 109_482_240, "dtype": "float32", "bytes": 1_313_790_000},
                "ours": {"export": _run(True, 5.0, 3 * 2**30, {"export_pruned": 2.0})},
                "reference": {"export": _run(True, 40.0, 6 * 2**30, {"load_prune_save": 38.0})},
            },
            "llama-float32": {
                "checkpoint": {"input_dim": 1_235_814_400, "dtype": "float32", "bytes": 14_829_772_800},
                "limit_bytes": 4 * 2**30,
                "cli": {
                    "info": _run(
                        False,
                        7.5,
                        4 * 2**30,
                        failed="info (... reading weights 20 %)",
                        failure="killed by the OOM killer at the 4.0 GiB limit",
                    )
                },
            },
        },
    }
    lines = ["progress", json.dumps(results)]
    text = render(load_json_line(lines))
    row = next(line for line in text.splitlines() if line.startswith("| export at topk 0.05"))
    assert row.split(" | ")[1:] == ["38.0", "2.00", "19.0x |"]  # 38 / 2 = 19
    info = next(line for line in text.splitlines() if line.startswith("| `gradiend-core info`"))
    assert "killed by the OOM killer at the 4.0 GiB limit" in info and "reading weights 20 %" in info
    assert "1,235,814,400-dim" in text and "4.00 GiB memory limit" in text


def test_median_record_picks_the_middle_run_and_keeps_every_time():
    from benchmarks.scenarios import median_record

    runs = [
        _run(True, 9, 1, {"x": 3.0}),
        _run(False, 1, 1, failure="boom"),
        _run(True, 9, 1, {"x": 1.0}),
        _run(True, 9, 1, {"x": 2.0}),
    ]
    chosen = median_record(runs, "x")
    assert chosen["steps"]["x"] == 2.0 and chosen["repeats_s"] == [3.0, None, 1.0, 2.0]
    assert median_record([runs[1]], "x")["failure"] == "boom"
