"""Pre- vs post-pruning recall and the combined reduction (gradiend_core.analysis.stages), and the
figures drawn from them, against hand computations and independent numpy on the own-* samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from safetensors.numpy import load_file

from dashboard.figures.stages import PANELS, recall_figure, reduction_figure
from gradiend_core.analysis import stages
from gradiend_core.analysis.stages import combined_reduction, curve_counts, membership, stage_recall
from gradiend_core.checkpoint import Architecture, read_checkpoint
from gradiend_core.ranking.importance import weight_importance
from gradiend_core.trainer import load_pre_prune_record

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


# ----------------------------------------------------------------------------- independent helpers
def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, ties by lower index, NaN last (sorted) - plain numpy."""
    v = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(v), -np.inf, v)
    order = np.lexsort((np.arange(v.size), np.isnan(v), -key))
    return np.sort(order[:k])


def sample_numbers(name_or_path) -> tuple:
    """(base-global index, decoder-weight importance, record importance over the model's dims,
    record kept base-global, dims the record measured) of a checkpoint, read without gradiend_core."""
    d = SAMPLES / name_or_path if isinstance(name_or_path, str) else Path(name_or_path)
    torch.manual_seed(0)
    g = Ref.from_pretrained(str(d))._get_base_global_index_map().numpy().astype(np.int64)
    w = load_file(str(d / "model.safetensors"))["decoder.0.linear.weight"]
    dec = np.abs(w).sum(axis=1)
    rec = load_file(str(d / "pre_prune.safetensors"))
    rec_g = rec.get("base_global_index", np.arange(rec["importance"].size, dtype=np.int64))
    pos = {int(b): i for i, b in enumerate(rec_g)}
    pre = np.array([rec["importance"][pos[int(b)]] for b in g], dtype=np.float32)
    return g, dec, pre, rec_g[rec["kept"]], rec["importance"].size


# ----------------------------------------------------------------------------- hand-computed recall
G = np.array([10, 11, 12, 13, 14, 15], dtype=np.int64)
POST = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3], dtype=np.float32)  # order: 10, 12, 13, 15, 14, 11
PRE = np.array([0.5, 0.9, 0.4, 0.1, np.nan, 0.8], dtype=np.float32)  # order: 11, 15, 10, 12, 13, then 14 (NaN)
KEPT = np.array([10, 11, 12, 99], dtype=np.int64)  # 99 is not a dim of this model
#: k -> (|P_k ∩ T_k|, |R ∩ T_k|), counted by hand from the orders above
HAND = {1: (0, 1), 2: (0, 2), 3: (1, 2), 4: (3, 2), 5: (4, 2), 6: (6, 3)}


def test_recall_by_hand():
    r = stage_recall(G, POST, PRE, KEPT, 3, n_pre_measured=7)
    assert r.k == 3 and r.n_dims == 6
    assert list(r.post_topk) == [10, 12, 13] and list(r.pre_topk) == [10, 11, 15]
    assert r.n_both == 1 and r.ranking_recall == pytest.approx(1 / 3)
    assert r.n_kept_in_post == 2 and r.kept_recall == pytest.approx(2 / 3)
    assert r.random_recall == pytest.approx(0.5)
    assert r.n_pre_kept == 4 and r.n_pre_kept_in_model == 3 and r.n_pre_measured == 7
    assert r.n_unmeasured == 1 and not r.pre_pruned
    assert list(r.curve_k) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(r.curve_ranking_recall, [HAND[k][0] / k for k in range(1, 7)])
    np.testing.assert_allclose(r.curve_kept_recall, [HAND[k][1] / k for k in range(1, 7)])


@pytest.mark.parametrize("k", [0, 1, 6, 50])
def test_recall_k_is_clipped_to_one_and_n(k):
    r = stage_recall(G, POST, PRE, KEPT, k)
    kk = min(max(k, 1), 6)
    assert r.k == kk and r.n_both == HAND[kk][0] and r.n_kept_in_post == HAND[kk][1]


def test_recall_of_a_model_trained_on_kept_dims_has_kept_recall_one():
    r = stage_recall(G, POST, PRE, np.array([15, 14, 13, 12, 11, 10, 3]), 2)
    assert r.pre_pruned and r.kept_recall == 1.0 and np.all(r.curve_kept_recall == 1.0)


def test_recall_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same"):
        stage_recall(G, POST[:5], PRE, KEPT, 3)


def test_membership_and_curve_counts(monkeypatch):
    assert list(membership(np.array([5, 0, 7, 3]), np.array([7, 5, 100]))) == [True, False, True, False]
    monkeypatch.setattr(stages, "MAX_TABLE", 4)  # the sorting path, for base models too large for a table
    assert list(membership(np.array([5, 0, 7, 3]), np.array([7, 5, 100]))) == [True, False, True, False]
    assert membership(np.array([1, 2]), np.array([], dtype=np.int64)).tolist() == [False, False]
    ks = curve_counts(10_000, 447, 20)
    assert ks[0] == 1 and ks[-1] == 10_000 and 447 in ks and np.all(np.diff(ks) > 0)


# ----------------------------------------------------------------------------- on the own-* samples
@pytest.mark.parametrize("name,k", [("own-pre-pruned", 447), ("own-pre-pruned", 2000), ("own-pre-post-pruned", 23)])
def test_recall_on_pre_pruned_samples_matches_numpy(name, k):
    g, dec, pre, kept, measured = sample_numbers(name)
    data = read_checkpoint(SAMPLES / name)
    record = load_pre_prune_record(data.path)
    gg = data.param_map.base_global_index()
    r = stage_recall(
        gg,
        weight_importance(data.state_dict, "decoder-weight"),
        record.importance_for(gg),
        record.kept_base_global(),
        k,
        n_pre_measured=record.importance.size,
    )
    t, p = g[top_k(dec, k)], g[top_k(pre, k)]
    assert np.array_equal(r.post_topk, np.sort(t)) and np.array_equal(r.pre_topk, np.sort(p))
    assert r.n_both == np.intersect1d(t, p).size
    assert r.ranking_recall == pytest.approx(np.intersect1d(t, p).size / k)
    assert r.pre_pruned and np.isin(g, kept).all()  # trained on pre-pruned dims: D ⊆ R
    assert r.kept_recall == 1.0
    assert r.n_pre_kept == kept.size and r.n_pre_measured == measured == data.param_map.unpruned_length
    assert r.n_dims == g.size and r.n_unmeasured == 0


def test_recall_of_unpruned_checkpoint_with_record_matches_numpy(tmp_path):
    """own-unpruned trained on all dims, with own-pre-pruned's record (over the unpruned space)
    beside it: the kept-set recall compares the record's kept set with the trained top-k."""
    d = tmp_path / "unpruned-with-record"
    shutil.copytree(SAMPLES / "own-unpruned", d)
    shutil.copy(SAMPLES / "own-pre-pruned" / "pre_prune.safetensors", d)
    g, dec, pre, kept, _ = sample_numbers(d)
    k = 4461
    data = read_checkpoint(d)
    record = load_pre_prune_record(d)
    gg = data.param_map.base_global_index()
    r = stage_recall(
        gg,
        weight_importance(data.state_dict, "decoder-weight"),
        record.importance_for(gg),
        record.kept_base_global(),
        k,
    )
    t = g[top_k(dec, k)]
    assert not r.pre_pruned
    assert r.n_pre_kept_in_model == kept.size
    assert r.n_kept_in_post == np.isin(t, kept).sum()
    assert r.kept_recall == pytest.approx(np.isin(t, kept).sum() / k)
    assert r.n_both == np.intersect1d(t, g[top_k(pre, k)]).size
    # the README's "of the 4,461 dims own-post-pruned keeps, x % are among the 8,922 pre-pruning keeps"
    post_pruned = Ref.from_pretrained(str(SAMPLES / "own-post-pruned"))._get_base_global_index_map().numpy()
    assert np.array_equal(np.sort(post_pruned), r.post_topk)


# ----------------------------------------------------------------------------- combined reduction
def test_combined_reduction_by_hand_pre_post():
    """latent 1, decoder bias, tanh, float32: 3n + 1 parameters of 4 bytes."""
    data = read_checkpoint(SAMPLES / "own-pre-post-pruned")
    stages = combined_reduction(data.architecture, 89_216, 23, pre_kept=8_922, dtypes=data.weight_dtypes())
    assert [s.name for s in stages] == [
        "unpruned",
        "after pre-pruning",
        "this checkpoint",
        "after the current selection",
    ]
    assert [s.input_dim for s in stages] == [89_216, 8_922, 447, 23]
    assert [s.params for s in stages] == [3 * n + 1 for n in (89_216, 8_922, 447, 23)]
    assert [s.memory_bytes for s in stages] == [4 * (3 * n + 1) for n in (89_216, 8_922, 447, 23)]
    assert [s.is_checkpoint for s in stages] == [False, False, True, False]


def test_combined_reduction_merges_the_checkpoint_stage():
    arch = Architecture(input_dim=8_922, latent_dim=1)
    pre = combined_reduction(arch, 89_216, 447, pre_kept=8_922)
    assert [(s.name, s.input_dim, s.is_checkpoint) for s in pre] == [
        ("unpruned", 89_216, False),
        ("after pre-pruning", 8_922, True),
        ("after the current selection", 447, False),
    ]
    unpruned = combined_reduction(Architecture(input_dim=1_000, latent_dim=1), 1_000, 50)
    assert [(s.name, s.is_checkpoint) for s in unpruned] == [("unpruned", True), ("after the current selection", False)]
    no_record = combined_reduction(Architecture(input_dim=4_461, latent_dim=1), 89_216, 100)
    assert [s.name for s in no_record] == ["unpruned", "this checkpoint", "after the current selection"]


def test_combined_reduction_latent3_layernorm_bf16_no_bias():
    """latent 3, no decoder bias, LayerNorm (2 parameters), bfloat16: 6n + 5 parameters of 2 bytes."""
    arch = Architecture(
        input_dim=300, latent_dim=3, activation_encoder="id", bias_decoder=False, torch_dtype="bfloat16"
    )
    stages = combined_reduction(arch, 1_808, 30, pre_kept=300)
    assert [s.params for s in stages] == [6 * n + 5 for n in (1_808, 300, 30)]
    assert [s.memory_bytes for s in stages] == [2 * (6 * n + 5) for n in (1_808, 300, 30)]


# ----------------------------------------------------------------------------- figures
def test_reduction_figure_has_three_labelled_log_panels():
    data = read_checkpoint(SAMPLES / "own-pre-post-pruned")
    stages = combined_reduction(data.architecture, 89_216, 23, pre_kept=8_922, dtypes=data.weight_dtypes())
    fig = reduction_figure(stages)
    names = ["unpruned", "after pre-pruning", "this checkpoint", "after the current selection"]
    assert len(fig.data) == len(PANELS) * len(stages) and len(PANELS) == 3
    for col, (attr, _) in enumerate(PANELS):
        traces = fig.data[col * len(stages) : (col + 1) * len(stages)]
        assert [t.y[0] for t in traces] == [getattr(s, attr) for s in stages]
        assert [t.name for t in traces] == names
        assert [t.showlegend for t in traces] == [col == 0] * len(stages)  # one legend entry per stage
    titles = [a.text for a in fig.layout.annotations][:3]
    assert all("log scale" in t for t in titles) and "bytes" in titles[2] and "count" in titles[0]
    assert all(fig.layout[f"yaxis{i}"].type == "log" for i in ("", "2", "3"))
    assert "89,216 -> 23 input dims" in fig.layout.title.text


def test_recall_figure_traces():
    r = stage_recall(G, POST, PRE, KEPT, 3)
    fig = recall_figure(r)
    names = [t.name for t in fig.data]
    assert names[0].startswith("ranking recall") and any(n.startswith("kept-set recall") for n in names)
    assert list(fig.data[0].y) == list(r.curve_ranking_recall)
    marker = fig.data[-1]
    assert list(marker.x) == [3] and list(marker.y) == [pytest.approx(1 / 3)]
    random = next(t for t in fig.data if t.name.startswith("random"))
    np.testing.assert_allclose(random.y, np.arange(1, 7) / 6)
    assert "count" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text
    trained_on_kept = recall_figure(stage_recall(G, POST, PRE, G, 3))
    assert not any(t.name.startswith("kept-set") for t in trained_on_kept.data)
