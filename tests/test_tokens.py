"""Token text of token-embedding rows in the top-k table, from the base model's local tokenizer."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from gradiend_core import read_checkpoint
from gradiend_core.analysis.tokens import load_tokenizer, resolve_base_model
from gradiend_core.analysis.topk_table import CSV_COLUMNS, to_csv, to_json, topk_feature_table
from gradiend_core.ranking.importance import source_importance
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.selection.rule import select

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_models" / "number-unpruned"
TINY_BERT = REPO / "sample_models" / "base" / "tiny-bert"


def test_base_model_found_from_any_working_directory(tmp_path, monkeypatch):
    data = read_checkpoint(SAMPLE)
    assert data.metadata["base_model"] == "sample_models/base/tiny-bert"  # recorded relative to the project
    monkeypatch.chdir(tmp_path)
    assert resolve_base_model(data.metadata, data.path) == TINY_BERT.resolve()
    assert resolve_base_model({"base_model": "bert-base-uncased"}, data.path) is None  # a hub id is never fetched
    assert resolve_base_model({}, data.path) is None


def test_token_column_names_the_vocabulary_entry_of_each_embedding_row():
    data = read_checkpoint(SAMPLE)
    vocab = (TINY_BERT / "vocab.txt").read_text(encoding="utf-8").splitlines()  # BERT: line i is token id i
    ranking = Ranking(source_importance(data, "decoder-weight"), data.param_map.local_offsets)
    table = topk_feature_table(data.param_map, ranking, select(ranking, topk=500), "decoder-weight")
    table = table.with_tokens(load_tokenizer(TINY_BERT))
    rows = [i for i, n in enumerate(table.param_name) if n == "bert.embeddings.word_embeddings.weight"]
    assert rows and len(rows) < table.n_rows  # some rows are token embeddings, some are not
    for i in range(table.n_rows):
        expected = vocab[table.coords[i][0]] if i in rows else ""
        assert table.token[i] == expected, (i, table.param_name[i])
    # downloads: the reference's columns, then token
    parsed = list(csv.DictReader(io.StringIO(to_csv(table).decode("utf-8"))))
    assert tuple(parsed[0]) == CSV_COLUMNS + ("token",)
    assert [r["token"] for r in parsed] == table.token
    assert [r["token"] for r in json.loads(to_json(table))] == table.token


def test_without_a_tokenizer_the_downloads_keep_the_reference_columns():
    data = read_checkpoint(SAMPLE)
    ranking = Ranking(source_importance(data, "decoder-weight"), data.param_map.local_offsets)
    table = topk_feature_table(data.param_map, ranking, select(ranking, topk=20), "decoder-weight")
    assert table.token is None
    assert tuple(next(csv.reader(io.StringIO(to_csv(table).decode("utf-8"))))) == CSV_COLUMNS
    assert "token" not in json.loads(to_json(table))[0]


def test_importing_the_core_does_not_import_transformers():
    code = (
        "import sys, gradiend_core, gradiend_core.analysis.tokens, gradiend_core.analysis.topk_table, "
        "gradiend_core.cli; "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
