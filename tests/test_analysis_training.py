"""The training record: training.json as the reference trainer writes it, partial and absent
records, pruning configs, and the training figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradiend.trainer.core.arguments import TrainingArguments
from gradiend.trainer.core.pruning import PostPruneConfig, PrePruneConfig
from gradiend.trainer.core.stats import write_training_stats

from dashboard.figures.training import training_figure
from gradiend_core.analysis.training import moving_average, parse_config_repr, step_series, training_record

LOSSES = [1.0, 0.8, 0.9, 0.5, 0.4, 0.45, 0.3, 0.2]


@pytest.fixture(scope="module")
def trainer_record(tmp_path_factory) -> dict:
    """A training.json written by the reference's own writer (gradiend.trainer.core.stats)."""
    out = tmp_path_factory.mktemp("run")
    args = TrainingArguments(
        output_dir=str(out),
        learning_rate=1e-4,
        eval_steps=4,
        pre_prune_config=PrePruneConfig(n_samples=16, topk=0.1, seed=0),
        post_prune_config=PostPruneConfig(topk=0.05, part="decoder-weight"),
    )
    stats = {
        "global_step": 8,
        "correlation": 0.91,
        "scores": {0: 0.05, 4: 0.62, 8: 0.91},  # int keys in memory, strings on disk
        "mean_by_class": {4: {"1": 0.3, "-1": -0.2}},
        "encoder_norms": {8: 2.0},
        "decoder_norms": {8: 3.0},
    }
    path = write_training_stats(
        str(out),
        training_stats=stats,
        best_score_checkpoint={"correlation": 0.91, "global_step": 8, "epoch": 1},
        training_args=args.to_dict(),
        time_stats={"total": 12.5, "eval": 2.0},
        losses=LOSSES,
        convergence_info={"converged": True, "convergence_metric": "correlation", "threshold": 0.5},
    )
    with open(path) as f:
        return json.load(f)


def test_record_from_the_reference_writer(trainer_record):
    rec = training_record(trainer_record)
    assert rec.eval_steps.tolist() == [0, 4, 8] and rec.scores.tolist() == [0.05, 0.62, 0.91]
    assert rec.loss_steps.tolist() == list(range(1, 9)) and rec.losses.tolist() == LOSSES
    assert (rec.best_step, rec.best_epoch, rec.best_score, rec.final_step) == (8, 1, 0.91, 8)
    assert rec.convergence == {"converged": True, "convergence_metric": "correlation", "threshold": 0.5}
    assert rec.settings["learning_rate"] == 1e-4 and rec.settings["eval_steps"] == 4
    stages = {p.stage: p for p in rec.pruning}
    pre, post = stages["pre-pruning (before training)"], stages["post-pruning (after training)"]
    assert pre.source == post.source == "training.json"
    assert pre.settings["n_samples"] == 16 and pre.settings["topk"] == 0.1 and "dataset" not in pre.settings
    assert post.settings == {"topk": 0.05, "part": "decoder-weight"}
    assert rec.time_seconds == {"total": 12.5, "eval": 2.0}
    assert rec.notes == []


def test_training_figure_shows_the_record(trainer_record):
    rec = training_record(trainer_record)
    fig = training_figure(rec, smooth=3)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["score"].x) == [0, 4, 8] and list(by_name["score"].y) == [0.05, 0.62, 0.91]
    assert list(by_name["loss"].x) == list(range(1, 9)) and list(by_name["loss"].y) == LOSSES
    brute = [np.mean(LOSSES[max(0, i - 2) : i + 1]) for i in range(len(LOSSES))]
    np.testing.assert_allclose(by_name["loss (mean of 3 steps)"].y, brute)
    assert any(s.x0 == 8 and s.line.dash == "dash" for s in fig.layout.shapes)
    assert any("best step 8" in (a.text or "") for a in fig.layout.annotations)
    assert fig.layout.xaxis2.title.text == "training step"
    assert "correlation" in fig.layout.yaxis.title.text and "loss" in fig.layout.yaxis2.title.text


def test_partial_record_from_save_pretrained_training_kwarg():
    rec = training_record({"epochs": 3, "lr": 1e-5})  # what Ref.save_pretrained(training=...) writes
    assert not rec.has_curves and rec.best_step is None and rec.pruning == []
    assert any("no evaluation scores" in n for n in rec.notes)
    assert any("no per-step losses" in n for n in rec.notes)
    fig = training_figure(rec)
    assert [a.text for a in fig.layout.annotations].count("not recorded") == 2


def test_absent_record_still_lists_pruning_from_metadata_context_and_provenance():
    meta = {
        "pre_prune_config": {
            "_type": "PrePruneConfig",
            "_repr": (
                "PrePruneConfig(n_samples=16, topk=0.1, threshold=None, source='alternative', seed=0, "
                "use_streaming=auto)"
            ),
        }
    }
    ctx = {
        "post_prune_config": {
            "_type": "PostPruneConfig",
            "_repr": "PostPruneConfig(topk=0.05, threshold=None, part='decoder-weight', inplace=True)",
        }
    }
    prov = {"part": "decoder-weight", "topk": 200, "threshold": None, "kept_dims": 200, "input_dim_before": 1000}
    rec = training_record(None, meta, prov, ctx)
    assert rec.notes == ["This checkpoint has no training.json."]
    assert [(p.stage, p.source) for p in rec.pruning] == [
        ("pre-pruning (before training)", "config.json metadata"),
        ("post-pruning (after training)", "gradiend_context.json"),
        ("export (gradiend_core)", "pruning.json"),
    ]
    assert rec.pruning[0].settings == {
        "n_samples": 16,
        "topk": 0.1,
        "threshold": None,
        "source": "alternative",
        "seed": 0,
        "use_streaming": "auto",
    }
    assert rec.pruning[1].settings["part"] == "decoder-weight"
    assert rec.pruning[2].settings == {
        "part": "decoder-weight",
        "topk": 200,
        "kept_dims": 200,
        "input_dim_before": 1000,
    }


def test_repr_cut_at_120_characters_keeps_the_fields_before_the_cut():
    full = "PrePruneConfig(n_samples=16, topk=0.1, threshold=None, source='alternative', seed=0, use_streaming=auto)"
    assert parse_config_repr(full[:68]) == {"n_samples": 16, "topk": 0.1, "threshold": None}  # cut inside source=
    assert parse_config_repr(full[:84]) == {
        "n_samples": 16,
        "topk": 0.1,
        "threshold": None,
        "source": "alternative",
        "seed": 0,
    }
    assert parse_config_repr("not a repr") == {}


def test_malformed_pieces_are_skipped():
    steps, vals = step_series({"10": 0.5, "x": 0.1, "3": "nan?", "2": None, "1": 0.25, "4": True})
    assert steps.tolist() == [1, 10] and vals.tolist() == [0.25, 0.5]
    rec = training_record(
        {"training_stats": "broken", "losses": [1, None, 0.5], "best_score_checkpoint": {"global_step": "7"}}
    )
    assert np.isnan(rec.losses[1]) and rec.best_step == 7
    assert training_record(["not", "a", "dict"]).notes[0] == "training.json is not a JSON object; it was ignored."


def test_moving_average_equals_brute_force():
    v = np.array([1.0, np.nan, 3.0, 4.0, 10.0])
    got = moving_average(v, 2)
    np.testing.assert_allclose(got, [1.0, 1.0, 3.0, 3.5, 7.0])
    with pytest.raises(ValueError):
        moving_average(v, 0)


def test_bundled_sample_records_are_read_fully():
    """The bundled samples (written by a real trainer run) give curves, a best step and pruning."""
    from dashboard.services.loading import sample_models
    from gradiend_core.checkpoint import read_checkpoint

    samples = [p for _, p in sample_models()]
    if not samples:
        pytest.fail("no bundled samples: run the sample build script (sample_models/)")
    for path in samples:
        data = read_checkpoint(path)
        rec = training_record(
            data.side_files.get("training.json"),
            data.metadata,
            data.side_files.get("pruning.json"),
            data.side_files.get("gradiend_context.json"),
        )
        raw = data.side_files["training.json"]
        assert rec.eval_steps.size == len(raw["training_stats"]["scores"]) > 1
        assert rec.losses.size == len(raw["losses"]) > 1
        assert rec.best_step == raw["best_score_checkpoint"]["global_step"]
        stages = {p.stage for p in rec.pruning}
        args = raw["training_args"]
        assert ("pre-pruning (before training)" in stages) == bool(args.get("pre_prune_config"))
        assert ("post-pruning (after training)" in stages) == bool(args.get("post_prune_config"))
