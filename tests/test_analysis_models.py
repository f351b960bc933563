"""Model against model in base-global space, for differently pruned versions of one model built,
pruned and saved by the reference package."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

from dashboard.figures.compare_models import model_overlap_heatmap
from gradiend_core.analysis.models import global_topk, model_overlap
from gradiend_core.checkpoint import read_checkpoint
from gradiend_core.ranking.importance import source_importance as importance_for
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.space.signature import base_signature, compatibility_problems

PARAMS = {
    "bert.encoder.layer.0.attention.self.query.weight": (12, 10),
    "bert.encoder.layer.0.attention.self.query.bias": (12,),
    "bert.encoder.layer.0.output.dense.weight": (10, 30),
}
N = sum(int(np.prod(s)) for s in PARAMS.values())  # 432


def reference_model(seed: int = 0, base: str = "x", params=PARAMS) -> Ref:
    torch.manual_seed(seed)
    n = sum(int(np.prod(s)) for s in params.values())
    return Ref(
        n,
        1,
        {name: {"shape": shape, "repr": "all"} for name, shape in params.items()},
        device=torch.device("cpu"),
        base_model=base,
    )


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """One model saved unpruned, pruned to 200 and pruned to 0.3 then again to 50 (all by the reference)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    m = reference_model()
    m.save_pretrained(str(root / "full"))
    out["full"] = root / "full"
    reference_model().prune(topk=200, part="decoder-weight").save_pretrained(str(root / "top200"))
    out["top200"] = root / "top200"
    twice = reference_model().prune(topk=0.3, part="encoder-weight").prune(topk=50, part="decoder-weight")
    twice.save_pretrained(str(root / "twice"))
    out["twice"] = root / "twice"
    return out


def reference_global_topk(path, part, topk) -> set:
    """What the reference's plot_topk_overlap_heatmap takes per model (comparison.common.topk_base_indices)."""
    ref = Ref.from_pretrained(str(path))
    local = ref.get_topk_weights(part=part, topk=topk)
    return set(ref._get_base_global_index_map()[torch.as_tensor(local, dtype=torch.long)].tolist())


@pytest.mark.parametrize("part", ["decoder-weight", "encoder-weight", "decoder-sum"])
@pytest.mark.parametrize("topk", [30, 0.25])
def test_overlap_in_base_global_space_equals_reference(versions, part, topk):
    datas = {k: read_checkpoint(p) for k, p in versions.items()}
    assert [d.architecture.input_dim for d in datas.values()] == [N, 200, 50]
    models = {k: (d.param_map, Ranking(importance_for(d, part))) for k, d in datas.items()}
    result = model_overlap(models, topk)
    py = {k: reference_global_topk(p, part, topk) for k, p in versions.items()}
    names = list(versions)
    for k in names:
        assert set(global_topk(*models[k], topk).tolist()) == py[k]
    for (i, a), (j, b) in itertools.product(enumerate(names), repeat=2):
        assert result.overlap.intersection[i, j] == len(py[a] & py[b])
    fig = model_overlap_heatmap(result, part, "overlap")
    expected = [[100 * len(py[a] & py[b]) / min(len(py[a]), len(py[b])) for b in names] for a in names]
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), expected)
    assert list(fig.data[0].x) == names
    assert result.input_dims.tolist() == [N, 200, 50]


def test_local_indices_would_be_wrong(versions):
    """The point of base-global space: the pruned model's local indices mean other entries."""
    full, pruned = read_checkpoint(versions["full"]), read_checkpoint(versions["top200"])
    r_full = Ranking(importance_for(full, "decoder-weight"))
    r_pruned = Ranking(importance_for(pruned, "decoder-weight"))
    g_full, g_pruned = (
        set(global_topk(full.param_map, r_full, 20).tolist()),
        set(global_topk(pruned.param_map, r_pruned, 20).tolist()),
    )
    assert g_full == g_pruned  # pruning by decoder-weight keeps the top 20 in place
    local_pruned = set(r_pruned.dims().ranked(20).tolist())
    assert local_pruned != g_pruned


def test_compatibility_of_different_bases(tmp_path):
    other = dict(PARAMS)
    other["bert.encoder.layer.0.output.dense.weight"] = (10, 31)
    a, b, c = reference_model(), reference_model(base="y"), reference_model(params=other)
    for name, m in (("a", a), ("b", b), ("c", c)):
        m.save_pretrained(str(tmp_path / name))
    d = {k: read_checkpoint(tmp_path / k) for k in "abc"}
    sigs = {k: base_signature(v.param_map, v.metadata) for k, v in d.items()}
    problems = compatibility_problems(sigs)
    kinds = {(p.model, p.kind) for p in problems}
    assert kinds == {("b", "base_model"), ("c", "params")}
    msg = next(p.message for p in problems if p.kind == "params")
    assert "output.dense.weight" in msg and "[10, 30]" in msg and "[10, 31]" in msg
    assert "'y'" in next(p.message for p in problems if p.kind == "base_model")
    models = {k: (v.param_map, Ranking(importance_for(v, "decoder-weight"))) for k, v in d.items()}
    with pytest.raises(ValueError, match="do not share one base-global index space"):
        model_overlap(models, 10, sigs)
    # same maps, another base model: comparable (indices line up), the caller warns
    assert model_overlap({k: models[k] for k in "ab"}, 10, {k: sigs[k] for k in "ab"}).overlap.intersection.shape == (
        2,
        2,
    )
    with pytest.raises(ValueError, match="at least two"):
        model_overlap({"a": models["a"]}, 10)
