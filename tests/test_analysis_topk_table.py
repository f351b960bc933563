"""The top-k table equals the reference's ``export_topk_features`` (CSV and JSON, byte for byte)
and a brute-force computation for selections the reference cannot express (mask, threshold)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradiend.model.model_with_gradiend import ModelWithGradiend
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

from gradiend_core.analysis.topk_table import CSV_COLUMNS, ranked_kept, to_csv, to_json, topk_feature_table
from gradiend_core.checkpoint import read_checkpoint
from gradiend_core.ranking.importance import PARTS
from gradiend_core.ranking.importance import source_importance as importance_for
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.rule import select
from gradiend_core.space.coords import base_global_of, decode_local


class ReferenceExporter:
    """The reference's ``export_topk_features`` needs only ``.gradiend`` of a ModelWithGradiend."""

    get_topk_feature_metadata = ModelWithGradiend.get_topk_feature_metadata
    export_topk_features = ModelWithGradiend.export_topk_features

    def __init__(self, gradiend):
        self.gradiend = gradiend


@pytest.mark.parametrize("variant_name", ["unpruned", "both", "latent3"])
@pytest.mark.parametrize("part", ["decoder-weight", "encoder-weight"])
@pytest.mark.parametrize("topk", [37, 0.2])
def test_csv_and_json_equal_reference_export(ref_variants, variant_name, part, topk, tmp_path):
    path = ref_variants[variant_name].path
    ref = ReferenceExporter(Ref.from_pretrained(str(path)))
    ref_rows = ref.export_topk_features(str(tmp_path / "ref.json"), part=part, topk=topk)
    ref.export_topk_features(str(tmp_path / "ref.csv"), part=part, topk=topk)
    data = read_checkpoint(path)
    ranking = Ranking(importance_for(data, part))
    table = topk_feature_table(data.param_map, ranking, select(ranking, topk=topk).keep, part)
    assert table.records() == ref_rows
    assert to_json(table) == (tmp_path / "ref.json").read_bytes()
    assert to_csv(table) == (tmp_path / "ref.csv").read_bytes()
    assert tuple(to_csv(table).decode().splitlines()[0].split(",")) == CSV_COLUMNS


def brute_rows(data, importance: np.ndarray, keep: np.ndarray):
    """(rank, local, base_global, name, flat, coords) by hand: sort, walk the map entry by entry."""
    order = sorted(keep.tolist(), key=lambda i: (-float(importance[i]), i))
    where = []
    for e in data.param_map.entries:
        positions = list(range(e.numel)) if e.positions is None else e.positions.tolist()
        where += [(e, p) for p in positions]
    starts, acc = {}, 0
    for e in data.param_map.entries:
        starts[e.name], acc = acc, acc + e.numel
    rows = []
    for rank, i in enumerate(order, start=1):
        e, flat = where[i]
        coords = list(np.unravel_index(flat, e.shape))
        rows.append((rank, i, starts[e.name] + flat, e.name, flat, [int(c) for c in coords]))
    return rows


@pytest.mark.parametrize("kind", ["mask_threshold_topk", "threshold_only", "mask_only"])
def test_table_of_any_selection_equals_brute_force(ref_variants, kind):
    data = read_checkpoint(ref_variants["pre"].path)  # pre-pruned: positions stored as indices and masks
    part = "decoder-sum"
    imp = importance_for(data, part)
    r = Ranking(imp)
    n = imp.size
    mask = np.random.default_rng(1).random(n) < 0.5
    args = {
        "mask_threshold_topk": dict(mask=mask, threshold=float(np.quantile(imp, 0.3)), topk=0.4),
        "threshold_only": dict(threshold=float(np.quantile(imp, 0.8))),
        "mask_only": dict(mask=mask),
    }[kind]
    sel = select(r, **args)
    table = topk_feature_table(data.param_map, r, sel.keep, part)
    brute = brute_rows(data, imp, sel.keep)
    assert table.n_rows == len(brute) == sel.k and not table.truncated
    got = list(
        zip(
            table.rank.tolist(),
            table.local_input_index.tolist(),
            table.base_global_index.tolist(),
            table.param_name,
            table.flat_index_in_param.tolist(),
            table.coords,
        )
    )
    assert got == brute
    np.testing.assert_array_equal(table.importance, imp[[b[1] for b in brute]].astype(np.float64))
    # the reference decodes base-global indices the same way
    ref = Ref.from_pretrained(str(ref_variants["pre"].path))
    for row in table.records()[:25]:
        dec = ref.decode_base_global_index(row["base_global_index"])
        assert {k: row[k] for k in dec} == dec


def test_limit_and_ranked_order(ref_variants):
    data = read_checkpoint(ref_variants["unpruned"].path)
    r = Ranking(importance_for(data, "decoder-weight"))
    sel = select(r, topk=500)
    table = topk_feature_table(data.param_map, r, sel.keep, "decoder-weight", limit=40)
    assert table.n_rows == 40 and table.n_selected == 500 and table.truncated
    imp = importance_for(data, "decoder-weight")
    by_sort = np.lexsort((np.arange(imp.size), -imp.astype(np.float64)))  # the rule's order, by an independent sort
    np.testing.assert_array_equal(table.local_input_index, by_sort[:40])
    np.testing.assert_array_equal(
        topk_feature_table(data.param_map, r, sel, "decoder-weight", limit=40).local_input_index, by_sort[:40]
    )
    np.testing.assert_array_equal(ranked_kept(r, sel.keep[::-1]), by_sort[:500])  # any order in, rank order out


def test_decode_local_matches_the_map(ref_variants):
    data = read_checkpoint(ref_variants["both"].path)
    pm = data.param_map
    local = np.random.default_rng(0).integers(0, pm.input_dim, 300)
    np.testing.assert_array_equal(base_global_of(pm, local), pm.base_global_index()[local])
    d = decode_local(pm, np.sort(local))
    np.testing.assert_array_equal(d.base_global, pm.base_global_index()[np.sort(local)])
    with pytest.raises(IndexError):
        decode_local(pm, np.array([pm.input_dim]))


def test_records_are_json_ready_for_every_part(ref_variants):
    data = read_checkpoint(ref_variants["id_ln"].path)
    for part in PARTS:
        r = Ranking(importance_for(data, part))
        rows = json.loads(to_json(topk_feature_table(data.param_map, r, select(r, topk=5).keep, part)))
        assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5] and {row["part"] for row in rows} == {part}


@pytest.mark.parametrize("limit", [None, 0, 1, 2, 3, 5, 8, 9, 50])
def test_ranked_kept_with_ties_and_nan(limit):
    imp = np.array([1, 3, np.nan, 3, 2, 2, 0, np.nan, 3, 2.0000002], dtype=np.float32)
    keep = np.array([9, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    brute = sorted(
        keep.tolist(), key=lambda i: (bool(np.isnan(imp[i])), 0.0 if np.isnan(imp[i]) else -float(imp[i]), i)
    )
    got = ranked_kept(Ranking(imp), keep, limit)
    assert got.tolist() == brute[: len(brute) if limit is None else limit]
