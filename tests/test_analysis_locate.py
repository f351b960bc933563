"""Where in the model: parameter names -> (layer, component) per model family, per-parameter
breakdown, the layer x component grid and the name filter."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dashboard.figures.where_in_model import grid_values, layer_component_heatmap
from gradiend_core.analysis.locate import layer_component_grid, param_breakdown
from gradiend_core.errors import SelectionError
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.masks import compose_masks, matching_parameters, name_mask
from gradiend_core.selection.rule import select
from gradiend_core.space.layers import COMPONENTS, parse_param_name
from gradiend_core.space.param_map import ParamEntry, ParamMap

BERT = {
    "bert.embeddings.word_embeddings.weight": ("-", "embeddings"),
    "bert.embeddings.position_embeddings.weight": ("-", "embeddings"),
    "bert.embeddings.token_type_embeddings.weight": ("-", "embeddings"),
    "bert.embeddings.LayerNorm.weight": ("-", "embeddings LayerNorm"),
    "bert.embeddings.LayerNorm.bias": ("-", "embeddings LayerNorm"),
    "bert.encoder.layer.0.attention.self.query.weight": ("0", "query"),
    "bert.encoder.layer.0.attention.self.query.bias": ("0", "query"),
    "bert.encoder.layer.0.attention.self.key.weight": ("0", "key"),
    "bert.encoder.layer.0.attention.self.value.weight": ("0", "value"),
    "bert.encoder.layer.0.attention.output.dense.weight": ("0", "attention output"),
    "bert.encoder.layer.0.attention.output.LayerNorm.weight": ("0", "attention LayerNorm"),
    "bert.encoder.layer.0.intermediate.dense.weight": ("0", "intermediate"),
    "bert.encoder.layer.0.output.dense.weight": ("0", "output"),
    "bert.encoder.layer.0.output.dense.bias": ("0", "output"),
    "bert.encoder.layer.0.output.LayerNorm.bias": ("0", "MLP LayerNorm"),
    "bert.encoder.layer.11.attention.self.value.bias": ("11", "value"),
    "bert.pooler.dense.weight": ("-", "pooler"),
    "cls.predictions.bias": ("-", "head"),
    "cls.predictions.transform.dense.weight": ("-", "head"),
    "cls.predictions.transform.LayerNorm.weight": ("-", "head"),
    "cls.predictions.decoder.weight": ("-", "head"),
    "classifier.weight": ("-", "head"),
}
ROBERTA = {
    "roberta.embeddings.word_embeddings.weight": ("-", "embeddings"),
    "roberta.embeddings.LayerNorm.weight": ("-", "embeddings LayerNorm"),
    "roberta.encoder.layer.3.attention.self.key.bias": ("3", "key"),
    "roberta.encoder.layer.3.attention.output.dense.bias": ("3", "attention output"),
    "roberta.encoder.layer.3.intermediate.dense.bias": ("3", "intermediate"),
    "roberta.encoder.layer.3.output.LayerNorm.weight": ("3", "MLP LayerNorm"),
    "lm_head.dense.weight": ("-", "head"),
    "lm_head.layer_norm.weight": ("-", "head"),
    "lm_head.bias": ("-", "head"),
}
DISTILBERT = {
    "distilbert.embeddings.word_embeddings.weight": ("-", "embeddings"),
    "distilbert.embeddings.position_embeddings.weight": ("-", "embeddings"),
    "distilbert.embeddings.LayerNorm.weight": ("-", "embeddings LayerNorm"),
    "distilbert.transformer.layer.2.attention.q_lin.weight": ("2", "query"),
    "distilbert.transformer.layer.2.attention.k_lin.bias": ("2", "key"),
    "distilbert.transformer.layer.2.attention.v_lin.weight": ("2", "value"),
    "distilbert.transformer.layer.2.attention.out_lin.weight": ("2", "attention output"),
    "distilbert.transformer.layer.2.sa_layer_norm.weight": ("2", "attention LayerNorm"),
    "distilbert.transformer.layer.2.ffn.lin1.weight": ("2", "intermediate"),
    "distilbert.transformer.layer.2.ffn.lin2.bias": ("2", "output"),
    "distilbert.transformer.layer.2.output_layer_norm.weight": ("2", "MLP LayerNorm"),
    "vocab_transform.weight": ("-", "head"),
    "vocab_layer_norm.bias": ("-", "head"),
    "vocab_projector.bias": ("-", "head"),
}
GPT2 = {
    "transformer.wte.weight": ("-", "embeddings"),
    "transformer.wpe.weight": ("-", "embeddings"),
    "transformer.h.0.ln_1.weight": ("0", "attention LayerNorm"),
    "transformer.h.0.attn.c_attn.weight": ("0", "attention qkv"),
    "transformer.h.0.attn.c_attn.bias": ("0", "attention qkv"),
    "transformer.h.0.attn.c_proj.weight": ("0", "attention output"),
    "transformer.h.0.ln_2.bias": ("0", "MLP LayerNorm"),
    "transformer.h.0.mlp.c_fc.weight": ("0", "intermediate"),
    "transformer.h.0.mlp.c_proj.weight": ("0", "output"),
    "transformer.h.0.mlp.c_proj.bias": ("0", "output"),
    "transformer.h.23.attn.c_attn.weight": ("23", "attention qkv"),
    "transformer.ln_f.weight": ("-", "final LayerNorm"),
    "lm_head.weight": ("-", "head"),
    "h.5.mlp.c_fc.bias": ("5", "intermediate"),  # a bare GPT2Model
}
LLAMA = {
    "model.embed_tokens.weight": ("-", "embeddings"),
    "model.layers.0.self_attn.q_proj.weight": ("0", "query"),
    "model.layers.0.self_attn.k_proj.weight": ("0", "key"),
    "model.layers.0.self_attn.v_proj.weight": ("0", "value"),
    "model.layers.0.self_attn.o_proj.weight": ("0", "attention output"),
    "model.layers.0.mlp.gate_proj.weight": ("0", "gate"),
    "model.layers.0.mlp.up_proj.weight": ("0", "intermediate"),
    "model.layers.0.mlp.down_proj.weight": ("0", "output"),
    "model.layers.0.input_layernorm.weight": ("0", "attention LayerNorm"),
    "model.layers.0.post_attention_layernorm.weight": ("0", "MLP LayerNorm"),
    "model.layers.31.self_attn.rotary_emb.inv_freq": ("31", "other"),
    "model.norm.weight": ("-", "final LayerNorm"),
    "lm_head.weight": ("-", "head"),
}
UNKNOWN = {
    "layer.0.weight": ("0", "other"),
    "mystery.weight": ("-", "other"),
    "encoder.block.4.layer.1.DenseReluDense.wi.weight": ("4", "other"),
}


@pytest.mark.parametrize(
    "table",
    [BERT, ROBERTA, DISTILBERT, GPT2, LLAMA, UNKNOWN],
    ids=["bert", "roberta", "distilbert", "gpt2", "llama", "unknown"],
)
def test_parse_param_name_per_family(table):
    got = {name: parse_param_name(name) for name in table}
    assert got == table
    assert all(c in COMPONENTS for _, c in got.values())


def small_map():
    """Three BERT parameters, the middle one pre-pruned to 5 of its 12 entries."""
    return ParamMap(
        [
            ParamEntry("bert.embeddings.word_embeddings.weight", (4, 3)),
            ParamEntry("bert.encoder.layer.0.attention.self.query.weight", (3, 4), np.array([0, 2, 5, 7, 11])),
            ParamEntry("bert.encoder.layer.1.output.dense.weight", (2, 4)),
            ParamEntry("bert.encoder.layer.0.attention.self.query.bias", (3,)),
        ]
    )


def test_breakdown_and_grid_equal_brute_force():
    pm = small_map()
    rng = np.random.default_rng(0)
    imp = rng.random(pm.input_dim).astype(np.float32)
    sel = select(Ranking(imp), topk=9)
    keep = set(sel.keep.tolist())
    bd = param_breakdown(pm, imp, sel.keep)
    bounds = pm.local_offsets.tolist()
    for p, entry in enumerate(pm.entries):
        dims = range(bounds[p], bounds[p + 1])
        assert bd.in_input[p] == len(dims) == entry.num_selected
        assert bd.kept[p] == sum(1 for i in dims if i in keep)
        assert bd.importance_kept[p] == pytest.approx(sum(float(imp[i]) for i in dims if i in keep), rel=1e-12)
        assert bd.importance_total[p] == pytest.approx(sum(float(imp[i]) for i in dims), rel=1e-12)
    total_kept = sum(float(imp[i]) for i in keep)
    np.testing.assert_allclose(bd.kept_importance_share, bd.importance_kept / total_kept)
    assert bd.numel.tolist() == [12, 12, 8, 3]
    grid = layer_component_grid(bd)
    assert grid.layers == ["-", "0", "1"]
    assert grid.components == ["embeddings", "query", "output"]
    # layer 0 / query holds the weight and the bias
    assert grid.kept[1, 1] == bd.kept[1] + bd.kept[3] and grid.n_params[1, 1] == 2
    assert grid.in_input[1, 1] == 5 + 3
    fig = layer_component_heatmap(grid, "kept dims", "decoder-weight")
    z = np.asarray(fig.data[0].z, dtype=float)
    expected = np.full((3, 3), np.nan)
    expected[0, 0], expected[1, 1], expected[2, 2] = bd.kept[0], bd.kept[1] + bd.kept[3], bd.kept[2]
    np.testing.assert_array_equal(z, expected)
    assert list(fig.data[0].y) == ["outside layers", "layer 0", "layer 1"]
    share = grid_values(grid, "share of kept importance")
    assert np.nansum(share) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="metric"):
        grid_values(grid, "nonsense")


def test_breakdown_counts_nonfinite_importance_as_zero():
    pm = small_map()
    imp = np.ones(pm.input_dim, dtype=np.float32)
    imp[0] = np.nan
    imp[1] = np.inf
    bd = param_breakdown(pm, imp, np.arange(pm.input_dim))
    assert bd.importance_total[0] == 10.0 and bd.importance_kept[0] == 10.0


def test_name_mask_and_matching_parameters():
    pm = small_map()
    inc, exc = r"encoder\.layer\.0", r"bias$"
    mask = name_mask(pm, inc, exc)
    brute = np.concatenate(
        [np.full(e.num_selected, bool(re.search(inc, e.name)) and not re.search(exc, e.name)) for e in pm.entries]
    )
    np.testing.assert_array_equal(mask, brute)
    assert matching_parameters(pm, inc, exc) == ["bert.encoder.layer.0.attention.self.query.weight"]
    assert name_mask(pm, "", "  ") is None
    assert name_mask(pm, None, "weight").sum() == 3  # only the bias is left
    with pytest.raises(SelectionError, match="invalid parameter-name pattern"):
        name_mask(pm, "(", None)
    with pytest.raises(SelectionError, match="no parameter name matches"):
        name_mask(pm, "gpt", None)


def test_name_mask_composes_with_threshold_and_topk():
    pm = small_map()
    imp = np.arange(pm.input_dim, dtype=np.float32)[::-1].copy()  # earlier dims more important
    file_mask = np.ones(pm.input_dim, dtype=bool)
    file_mask[13] = False
    names = name_mask(pm, "layer", None)  # drops the 12 embedding dims
    mask = compose_masks(file_mask, None, names)
    np.testing.assert_array_equal(mask, file_mask & names)
    sel = select(Ranking(imp), mask=mask, threshold=5.0, topk=4)
    allowed = [i for i in range(pm.input_dim) if mask[i] and imp[i] >= 5.0]
    brute = sorted(sorted(allowed, key=lambda i: (-imp[i], i))[:4])
    assert sel.keep.tolist() == brute
    assert compose_masks(None, None) is None
    with pytest.raises(SelectionError, match="one shape"):
        compose_masks(np.ones(3, bool), np.ones(4, bool))
