"""The pruning curve's math: bucket sums against direct sums over the exactly sorted order
(hypothesis), points against brute-force pruning (our prune, the reference's from_pretrained),
latent_dim > 1 against the reference's metrics code, and acting on a curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gradiend.evaluator.encoder_metrics import get_correlation, get_encoder_metrics_from_dataframe
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from hypothesis import given, settings
from hypothesis import strategies as st

from gradiend_core.checkpoint import read_checkpoint
from gradiend_core.checkpoint.records import load_validation_record
from gradiend_core.curve.measures import Encoder, curve_csv, cut_quality, smallest_topk_for
from gradiend_core.curve.sums import BucketSums, bucket_counts, log_grid, plan_curve, pruning_curves
from gradiend_core.errors import SelectionError
from gradiend_core.gradients.eval_gradients import from_validation_record
from gradiend_core.model import ParamMappedGradiendModel
from gradiend_core.pruning.export import export_pruned
from gradiend_core.ranking.importance import PARTS, weight_importance
from gradiend_core.ranking.keys import bucket_of, ranked_order

ROOT = Path(__file__).resolve().parent.parent
OWN = ROOT / "sample_models" / "own-unpruned"


def _python_order(values: np.ndarray) -> list:
    """The selection rule by plain Python sorting: larger first, NaN last, ties by lower index."""
    return sorted(
        range(values.size),
        key=lambda i: (math.isnan(values[i]), -float(values[i]) if not math.isnan(values[i]) else 0.0, i),
    )


values_st = st.lists(
    st.sampled_from([0.0, -0.0, 1.0, 1.0001, 2.5, 3.0, 1e-30, 7e8, float("nan"), float("inf")])
    | st.floats(min_value=0, max_value=1e6, width=32, allow_nan=False),
    min_size=1,
    max_size=120,
)


@settings(max_examples=120, deadline=None)
@given(
    values=values_st,
    m=st.integers(1, 4),
    latent=st.integers(1, 2),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_bucket_sums_equal_direct_cumulative_sums_at_every_boundary(values, m, latent, chunk, seed, data):
    imp = np.array(values, dtype=np.float32)
    n = imp.size
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(latent, n, generator=g, dtype=torch.float64)
    x = torch.randn(m, n, generator=g, dtype=torch.float64)
    bias = np.arange(latent, dtype=np.float64) * 0.5
    counts = bucket_counts(imp)
    bucket = bucket_of(imp)
    boundaries = sorted({int((bucket >= b).sum()) for b in np.unique(bucket)})
    inside = data.draw(st.lists(st.integers(1, n), max_size=5))
    plan = plan_curve(counts, boundaries, exact=inside, member_cap=n)
    acc = BucketSums(plan, m, latent)
    starts = list(range(0, n, chunk))
    for s in data.draw(st.permutations(starts)):  # chunks in any order
        acc.add(s, imp[s : s + chunk], w[:, s : s + chunk], x[:, s : s + chunk])
    pre = acc.pre_activations(bias)
    order = _python_order(imp)
    contrib = w.numpy()[:, order][:, :, None] * x.numpy()[:, order].T[None, :, :]  # (latent, n, m)
    direct = np.cumsum(contrib, axis=1) + bias[:, None, None]
    assert set(boundaries + inside) <= set(plan.ks.tolist())
    for p, k in enumerate(plan.ks):
        np.testing.assert_allclose(pre[p], direct[:, k - 1, :], rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(values=values_st)
def test_ranked_order_is_the_selection_rule(values):
    imp = np.array(values, dtype=np.float32)
    idx = np.arange(imp.size, dtype=np.int64)[::-1].copy()  # members given in any order
    order = ranked_order(imp[idx], idx)
    assert idx[order].tolist() == _python_order(imp)


def test_plan_snaps_large_buckets_to_boundaries_and_keeps_asked_points_exact():
    imp = np.concatenate([np.full(1000, 1.0, np.float32), np.linspace(2, 3, 50, dtype=np.float32)])
    counts = bucket_counts(imp)
    plan = plan_curve(counts, [10, 500, 900], exact=[700], member_cap=100)
    ks = plan.ks.tolist()
    assert 10 in ks and 700 in ks and 1050 in ks
    assert 500 not in ks and 900 not in ks  # inside the 1000-member bucket of 1.0: moved to a boundary
    assert plan.requested[ks.index(700)] and not plan.requested[ks.index(50)]
    with pytest.raises(SelectionError, match=r"k must be in \[1, 1050\]"):
        plan_curve(counts, [0])
    with pytest.raises(SelectionError, match="points must be"):
        log_grid(10, 1)


def test_chunks_must_cover_the_input_space_once():
    imp = np.arange(10, dtype=np.float32)
    plan = plan_curve(bucket_counts(imp), [3])
    acc = BucketSums(plan, 2, 1)
    acc.add(0, imp[:6], torch.ones(1, 6), torch.ones(2, 6))
    with pytest.raises(SelectionError, match="cover"):
        acc.pre_activations(np.zeros(1))
    acc.add(5, imp[5:], torch.ones(1, 5), torch.ones(2, 5))
    with pytest.raises(SelectionError, match="overlap"):
        acc.pre_activations(np.zeros(1))
    with pytest.raises(SelectionError, match="gradients must be"):
        acc.add(0, imp[:3], torch.ones(1, 3), torch.ones(3, 3))


def _brute(model: ParamMappedGradiendModel, x: torch.Tensor, labels: np.ndarray, keep: np.ndarray, full: np.ndarray):
    """label correlation, Cohen's d of pre-activations and agreement of a pruned model, by hand."""
    with torch.no_grad():
        pre = model.encoder[0](x[:, torch.from_numpy(keep)])[:, 0].double().numpy()
        enc = model.forward_encoder(x[:, torch.from_numpy(keep)])[:, 0].double().numpy()
    a, b = pre[labels > 0], pre[labels < 0]
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    return np.corrcoef(labels, enc)[0, 1], abs(a.mean() - b.mean()) / pooled, np.corrcoef(full, enc)[0, 1], enc


@pytest.mark.parametrize("part", PARTS)
def test_points_match_brute_force_pruning_on_a_sample(part, tmp_path):
    data = read_checkpoint(OWN)
    grads = from_validation_record(data, load_validation_record(OWN))
    imp = weight_importance(data.state_dict, part)
    n = data.architecture.input_dim
    ks = [1, 7, 100, 4461, 30000, n]
    curve = pruning_curves(Encoder.of(data), grads.gradients, grads.labels, {part: imp}, points=16, selection_k=4461)[
        part
    ]
    model = ParamMappedGradiendModel.from_pretrained(OWN)
    with torch.no_grad():
        full = model.forward_encoder(grads.gradients)[:, 0].double().numpy()
    for k in ks:
        if k not in curve.ks:
            curve = pruning_curves(
                Encoder.of(data), grads.gradients, grads.labels, {part: imp}, points=16, selection_k=k
            )[part]
        pruned = model.prune(topk=k, part=part)
        keep = model.select(part=part, topk=k).keep
        corr, sep, agree, enc = _brute(pruned, grads.gradients, grads.labels, keep, full)
        got = curve.at(k)
        assert got["label_correlation"] == pytest.approx(corr, abs=2e-6)
        assert got["separation"] == pytest.approx(sep, rel=1e-5)
        assert got["agreement"] == pytest.approx(agree if k < n else 1.0, abs=2e-6)
        if k in (7, 4461):  # the pruned export, loaded and run by the reference package
            out = export_pruned(data, tmp_path / f"{part}-{k}", part=part, topk=k)
            # The reference initialises the decoder with uniform(-x, x), x = the largest *random* encoder
            # weight, before loading; for a few dims x can be negative and it raises. Seed that draw.
            torch.manual_seed(0)
            ref = Ref.from_pretrained(str(out.path))
            with torch.no_grad():
                ref_enc = ref.encoder(grads.gradients[:, torch.from_numpy(keep)])[:, 0].double().numpy()
            assert get_correlation(pd.DataFrame({"encoded": ref_enc, "label": grads.labels})) == pytest.approx(
                got["label_correlation"], abs=2e-6
            )


def test_latent_dim_3_per_unit_and_unit_0_is_the_references_correlation(ref_variants):
    path = ref_variants["latent3"].path
    data = read_checkpoint(path)
    n = data.architecture.input_dim
    g = torch.Generator().manual_seed(5)
    labels = np.where(np.arange(24) % 2 == 0, 1.0, -1.0)
    x = torch.randn(24, n, generator=g) + torch.from_numpy(labels[:, None] * 0.3).float()
    imp = weight_importance(data.state_dict, "decoder-weight")
    curve = pruning_curves(Encoder.of(data), x, labels, {"decoder-weight": imp}, points=6, chunk=37)["decoder-weight"]
    ref = Ref.from_pretrained(str(path))
    for p, k in enumerate(curve.ks):
        pruned = ref.prune(topk=int(k), part="decoder-weight", inplace=False)
        keep = np.sort(np.argsort(-imp.astype(np.float64), kind="stable")[:k])
        with torch.no_grad():
            enc = pruned.encoder(x[:, torch.from_numpy(keep)]).double().numpy()
        for u in range(3):
            ref_corr = get_correlation(pd.DataFrame({"encoded": enc[:, u], "label": labels}))
            assert curve.label_correlation[p, u] == pytest.approx(ref_corr, abs=2e-6)
    # The reference's own metrics code cannot take several units: its training-only correlation
    # takes the std of the list-valued column, so unit 0 per get_correlation is what it means.
    df = pd.DataFrame({"encoded": [json.dumps(r.tolist()) for r in enc], "label": labels, "type": "training"})
    with pytest.raises(TypeError):
        get_encoder_metrics_from_dataframe(df)


def test_layernorm_activation_is_applied_over_the_latent_units(ref_variants):
    path = ref_variants["id_ln"].path
    data = read_checkpoint(path)
    x = torch.randn(6, data.architecture.input_dim, generator=torch.Generator().manual_seed(1))
    labels = np.array([1.0, -1, 1, -1, 1, -1])
    q = cut_quality(Encoder.of(data), x, labels, np.arange(data.architecture.input_dim))
    with torch.no_grad():
        enc = Ref.from_pretrained(str(path)).encoder(x)[:, 0].double().numpy()
    expected = 0.0 if np.ptp(enc) == 0 else np.corrcoef(labels, enc)[0, 1]  # LayerNorm(1) outputs its bias: constant
    assert q["label_correlation"] == pytest.approx(expected, abs=1e-9)


def test_smallest_topk_for_is_the_first_point_that_keeps_the_share():
    data = read_checkpoint(OWN)
    grads = from_validation_record(data, load_validation_record(OWN))
    curve = pruning_curves(
        Encoder.of(data),
        grads.gradients,
        grads.labels,
        {"encoder-weight": weight_importance(data.state_dict, "encoder-weight")},
        points=40,
    )["encoder-weight"]
    values = curve.label_correlation[:, 0]
    full = values[-1]
    for fraction in (0.5, 0.9, 0.99, 0.999, 1.0):
        k = smallest_topk_for(curve, fraction)
        first = next(
            int(kk) for kk, v in zip(curve.ks, values) if abs(v) >= fraction * abs(full) and np.sign(v) == np.sign(full)
        )
        assert k == first
        assert abs(curve.at(k)["label_correlation"]) >= fraction * abs(full)
    assert smallest_topk_for(curve, 1.0) <= curve.input_dim
    for bad in (0, 1.5, float("nan"), True):
        with pytest.raises(SelectionError, match="fraction"):
            smallest_topk_for(curve, bad)
    with pytest.raises(SelectionError, match="measure"):
        smallest_topk_for(curve, 0.5, measure="accuracy")


def test_cut_quality_matches_the_curve_and_validates_keep():
    data = read_checkpoint(OWN)
    grads = from_validation_record(data, load_validation_record(OWN))
    enc = Encoder.of(data)
    imp = weight_importance(data.state_dict, "decoder-weight")
    curve = pruning_curves(enc, grads.gradients, grads.labels, {"decoder-weight": imp}, points=8, selection_k=500)[
        "decoder-weight"
    ]
    keep = np.sort(np.argsort(-imp.astype(np.float64), kind="stable")[:500])
    q = cut_quality(enc, grads.gradients, grads.labels, keep)
    for name in ("label_correlation", "separation", "agreement"):
        assert q[name] == pytest.approx(curve.at(500)[name], rel=1e-6, abs=1e-9)
    assert q["label_correlation_full"] == pytest.approx(curve.full["label_correlation"], abs=1e-9)
    json.dumps(q, allow_nan=False)
    for bad in ([], [0, 0], [-1], [data.architecture.input_dim]):
        with pytest.raises(SelectionError):
            cut_quality(enc, grads.gradients, grads.labels, np.array(bad, dtype=np.int64))


def test_curve_csv_rows_and_columns():
    data = read_checkpoint(OWN)
    grads = from_validation_record(data, load_validation_record(OWN))
    imps = {p: weight_importance(data.state_dict, p) for p in ("decoder-weight", "encoder-weight")}
    curves = pruning_curves(Encoder.of(data), grads.gradients, grads.labels, imps, points=5, selection_k=123)
    df = pd.read_csv(__import__("io").StringIO(curve_csv(list(curves.values()))))
    assert list(df.columns) == [
        "part",
        "k",
        "share",
        "exact_k",
        "selection",
        "label_correlation",
        "separation",
        "agreement",
    ]
    for part, c in curves.items():
        rows = df[df.part == part]
        assert rows.k.tolist() == c.ks.tolist()
        np.testing.assert_allclose(rows.label_correlation, c.label_correlation[:, 0], rtol=0, atol=0)
        assert rows[rows.selection == 1].k.tolist() == [123]
        np.testing.assert_allclose(rows.share, c.ks / data.architecture.input_dim)
