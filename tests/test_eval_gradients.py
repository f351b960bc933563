"""Evaluation gradients for the pruning curve, against the reference's own trainer: the gradients
its encoder evaluation computes (bit for bit), its labels and order, its correlation; the cache,
progress and cancellation; errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gradiend import TextPredictionTrainer, TrainingArguments

from gradiend_core.checkpoint import read_checkpoint
from gradiend_core.checkpoint.records import load_validation_record
from gradiend_core.curve.checkpoint_curves import selection_quality
from gradiend_core.curve.measures import Encoder, cut_quality
from gradiend_core.errors import CheckpointError
from gradiend_core.gradients.eval_gradients import GradientsCancelled, compute_eval_gradients, eval_gradients
from gradiend_core.pruning.export import export_pruned

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
DATA = SAMPLES / "data"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)  # metadata.base_model is repo-relative, as the reference resolves it


def _reference(ckpt: Path, data, classes):
    """The reference trainer on a checkpoint: its validation eval rows (source gradients, labels)."""
    tr = TextPredictionTrainer(
        model=str(ckpt), data=data, target_classes=list(classes), args=TrainingArguments(train_batch_size=8, seed=0)
    )
    model = tr.get_model()
    rows = list(tr.create_eval_data(model, split="validation", source="alternative"))
    grads = torch.stack([r["source"].detach().float().cpu() for r in rows])
    labels = np.array([float(r["label"]) for r in rows])
    return tr, grads, labels


@pytest.mark.parametrize("name", ["number-unpruned", "number-pre-pruned"])
def test_gradients_and_labels_equal_the_reference_trainers(name):
    ckpt = SAMPLES / name
    _, ref_grads, ref_labels = _reference(ckpt, str(DATA / "number.csv"), ("singular", "plural"))
    data = read_checkpoint(ckpt)
    got = compute_eval_gradients(data, DATA / "number.csv")
    assert got.classes == ("singular", "plural") and got.source == "alternative" and got.split == "validation"
    assert torch.equal(got.gradients, ref_grads)
    np.testing.assert_array_equal(got.labels, ref_labels)  # a singular row's alternative gradient is labelled -1


def test_correlation_equals_the_references_evaluate_encoder_on_the_place_sample():
    ckpt = SAMPLES / "place-unpruned"
    tr = TextPredictionTrainer(
        model=str(ckpt),
        data=str(DATA / "place.csv"),
        target_classes=["farm", "town"],
        args=TrainingArguments(train_batch_size=8, seed=0),
    )
    expected = tr.evaluate_encoder(split="validation", use_cache=False)["correlation"]
    data = read_checkpoint(ckpt)
    grads = compute_eval_gradients(data, DATA / "place.csv")
    q = cut_quality(Encoder.of(data), grads.gradients, grads.labels, np.arange(data.architecture.input_dim))
    assert q["label_correlation"] == pytest.approx(expected, abs=1e-7)  # float64 sums vs its float32 F.linear
    assert 0.5 < expected < 0.95  # the sample is not trivially separable


def test_unbalanced_shuffled_data_follow_the_references_order_and_repeats(tmp_path):
    df = pd.read_csv(DATA / "number.csv")
    val = df[df.split == "validation"]
    drop = val[val.label_class == "plural"].index[:25]  # 40 singular vs 15 plural validation rows
    df = df.drop(index=drop).sample(frac=1.0, random_state=3).reset_index(drop=True)
    path = tmp_path / "unbalanced.csv"
    df.to_csv(path, index=False)
    _, ref_grads, ref_labels = _reference(SAMPLES / "number-unpruned", df, ("singular", "plural"))
    got = compute_eval_gradients(read_checkpoint(SAMPLES / "number-unpruned"), path)
    assert got.n_samples == ref_labels.size == 55
    np.testing.assert_array_equal(got.labels, ref_labels)
    assert torch.equal(got.gradients, ref_grads)


def test_cache_progress_and_cancel(tmp_path):
    data = read_checkpoint(SAMPLES / "number-unpruned")
    df = pd.read_csv(DATA / "number.csv")
    df = df[df.split == "validation"].head(12)
    path = tmp_path / "small.csv"
    df.to_csv(path, index=False)
    calls = []
    first = compute_eval_gradients(data, path, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 12) for i in range(1, 13)]
    assert first.cache_file is not None and first.cache_file.is_file()
    calls.clear()
    again = compute_eval_gradients(data, path, progress=lambda d, t: calls.append((d, t)))
    assert calls == [] and torch.equal(again.gradients, first.gradients)
    np.testing.assert_array_equal(again.labels, first.labels)
    # a changed data file is a new key: computed again
    df.iloc[::-1].to_csv(path, index=False)
    changed = compute_eval_gradients(data, path, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) == 12 and changed.cache_file != first.cache_file
    # cancelled part way: an exception, and nothing cached
    df.head(8).to_csv(path, index=False)
    stop = threading.Event()
    before = set(first.cache_file.parent.iterdir())

    def progress(done, total):
        if done == 3:
            stop.set()

    with pytest.raises(GradientsCancelled, match="after 3 of 8"):
        compute_eval_gradients(data, path, progress=progress, cancel=stop)
    assert set(first.cache_file.parent.iterdir()) == before
    with pytest.raises(GradientsCancelled):
        compute_eval_gradients(data, path, cancel=lambda: True)


def test_saved_record_is_aligned_and_labelled_as_the_reference_labels():
    data = read_checkpoint(SAMPLES / "own-pre-pruned")
    record = load_validation_record(SAMPLES / "own-pre-pruned")
    got = eval_gradients(data)
    cols = {int(g): i for i, g in enumerate(record.base_global_index)}
    want = record.gradients[:, [cols[int(g)] for g in data.param_map.base_global_index()]]
    assert torch.equal(got.gradients, want)
    assert record.source == "alternative"
    np.testing.assert_array_equal(
        got.labels, -record.labels.numpy()
    )  # the alternative gradient: the other class's label
    assert got.origin == "validation_gradients.safetensors"


def test_errors_say_what_to_give(tmp_path):
    data = read_checkpoint(SAMPLES / "number-unpruned")
    with pytest.raises(CheckpointError, match="--data"):
        eval_gradients(data)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["a"], "label": ["is"]}).to_csv(bad, index=False)
    with pytest.raises(CheckpointError, match=r"columns \['masked', 'label_class'\] are missing"):
        compute_eval_gradients(data, bad)
    with pytest.raises(CheckpointError, match="no such data file"):
        compute_eval_gradients(data, tmp_path / "missing.csv")
    with pytest.raises(CheckpointError, match="not a model directory"):
        compute_eval_gradients(data, DATA / "number.csv", base_model=tmp_path)
    gender = pd.read_csv(DATA / "gender.csv")
    classes, splits = sorted(set(gender["label_class"].astype(str))), sorted(set(gender["split"]))
    with pytest.raises(CheckpointError, match="no rows of classes") as e:  # classes of another feature
        compute_eval_gradients(data, DATA / "gender.csv")
    assert f"its classes are {', '.join(classes)} (splits {', '.join(splits)})" in str(e.value)
    with pytest.raises(CheckpointError, match=r"in split dev \(the rows of these classes are in splits test, train"):
        compute_eval_gradients(data, DATA / "number.csv", split="dev")


def test_base_model_from_metadata_is_found_from_the_checkpoints_parents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: found above the checkpoint instead
    data = read_checkpoint(SAMPLES / "number-post-pruned")
    df = pd.read_csv(DATA / "number.csv").query("split == 'validation'").head(4)
    df.to_csv(tmp_path / "four.csv", index=False)
    got = compute_eval_gradients(data, tmp_path / "four.csv")
    assert got.gradients.shape == (4, data.architecture.input_dim)


def test_export_records_the_cuts_quality_in_pruning_json(tmp_path):
    data = read_checkpoint(SAMPLES / "own-unpruned")
    grads = eval_gradients(data)
    from gradiend_core.ranking.importance import weight_importance
    from gradiend_core.selection.rule import select

    keep = select(weight_importance(data.state_dict, "decoder-weight"), topk=0.01).keep
    quality = selection_quality(data, keep, grads)
    out = export_pruned(data, tmp_path / "cut", part="decoder-weight", topk=0.01, cut_quality=quality)
    rec = json.loads((out.path / "pruning.json").read_text())["cut_quality"]
    assert rec["k"] == keep.size == out.selection.k
    assert rec["gradients"] == "validation_gradients.safetensors" and rec["source"] == "alternative"
    direct = cut_quality(Encoder.of(data), grads.gradients, grads.labels, keep)
    assert rec["label_correlation"] == pytest.approx(direct["label_correlation"], abs=1e-12)
