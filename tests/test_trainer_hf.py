"""The Hugging Face masked-LM adapter of ``gradiend_core.trainer`` on a tiny BERT built here.

The BERT is random (1 layer, hidden size 16) over a word-level vocabulary written in the test;
nothing is downloaded. The gradients the adapter produces are compared with a plain
``model(**inputs, labels=...)`` / ``backward()`` written out in the test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast  # noqa: E402  (the dev extra installs it)

from gradiend_core import ParamMappedGradiendModel, read_checkpoint  # noqa: E402
from gradiend_core.gradients.gather import GradientSource, resolve_params  # noqa: E402
from gradiend_core.gradients.masked_lm import backbone_params, masked_lm_loss  # noqa: E402
from gradiend_core.trainer import (  # noqa: E402
    Example,
    PostPruneConfig,
    PrePruneConfig,
    Trainer,
    TrainingArguments,
    load_pre_prune_record,
)

# Tiny models: one torch thread is faster (see the fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SG = ["cat", "dog", "bird", "horse"]
PL = ["cats", "dogs", "birds", "horses"]
ADJ = ["happy", "tired", "small", "big", "old", "young"]
WORDS = ["the", "is", "are", "very", "."] + SG + PL + ADJ + ["elephant"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


@pytest.fixture(scope="module")
def tiny_bert():
    torch.manual_seed(0)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True, model_max_length=32)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        type_vocab_size=1,
    )
    model = BertForMaskedLM(cfg).eval()
    model.name_or_path = "tests/tiny-bert"
    return model, tok


def number_examples(adjs):
    out = []
    for s, p in zip(SG, PL):
        for a in adjs:
            out.append(Example(f"the {s} [MASK] {a} .", "is", "are", "singular"))
            out.append(Example(f"the {p} [MASK] {a} .", "are", "is", "plural"))
    return out


def test_adapter_gradient_equals_a_plain_backward(tiny_bert):
    model, tok = tiny_bert
    ex = Example("the dogs [MASK] very big .", "are", "is", "plural")
    params = resolve_params(model, backbone_params(model))
    assert backbone_params(model) == ["bert.*"] and all(n.startswith("bert.") for n, _ in params)
    src = GradientSource(model, masked_lm_loss(tok), params)
    got = src.gradient([ex], "alternative", src.full_map())

    enc = tok(["the dogs [MASK] very big ."], return_tensors="pt")
    labels = torch.full_like(enc["input_ids"], -100)
    labels[0, 3] = VOCAB.index("is")  # [CLS] the dogs [MASK] ...: the mask is token 3
    model.zero_grad()
    model(**enc, labels=labels).loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for n, p in model.named_parameters() if n.startswith("bert.")])
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_adapter_rejects_bad_examples_with_a_clear_message(tiny_bert):
    model, tok = tiny_bert
    loss = masked_lm_loss(tok)
    with pytest.raises(ValueError, match="has 0 mask tokens"):
        loss(model, [Example("the cat is big .", "is", "are", "singular")], "factual")
    with pytest.raises(ValueError, match="must be\\s+single tokens"):
        loss(model, [Example("the cat [MASK] big .", "giraffe", "are", "singular")], "factual")


def test_masked_lm_training_with_pre_and_post_pruning(tiny_bert, tmp_path):
    model, tok = tiny_bert
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        experiment_dir=str(tmp_path / "run"),
        learning_rate=1e-3,
        max_steps=30,
        train_batch_size=4,
        eval_steps=10,
        pre_prune_config=PrePruneConfig(n_samples=8, topk=0.2),
        post_prune_config=PostPruneConfig(topk=0.1),
        save_validation_gradients=4,
    )
    tr = Trainer.for_masked_lm(
        model, number_examples(ADJ[:4]), tokenizer=tok, eval_data=number_examples(ADJ[4:]), args=args
    )
    tr.train()
    out = tmp_path / "run" / "model"
    assert tr.output_dir == str(out)
    unpruned = sum(p.numel() for n, p in model.named_parameters() if n.startswith("bert."))
    after_pre = int(np.ceil(0.2 * unpruned))
    ours = ParamMappedGradiendModel.from_pretrained(out)
    assert ours.input_dim == int(np.ceil(0.1 * after_pre)) and ours.unpruned_length() == unpruned
    assert all(name.startswith("bert.") for name in ours.mapping.names)
    assert read_checkpoint(out).metadata["base_model"] == "tests/tiny-bert"
    record = load_pre_prune_record(tmp_path / "run")  # an experiment directory works too
    assert record.importance.shape == (unpruned,) and record.kept.size == after_pre
    assert np.isin(ours.mapping.base_global_index(), record.kept_base_global()).all()
    training = json.loads((out / "training.json").read_text())
    assert training["input_dims"] == {"unpruned": unpruned, "after_pre_prune": after_pre, "final": ours.input_dim}
    assert training["training_args"]["params"] == ["bert.*"]

    ref = Ref.from_pretrained(str(out))
    assert np.array_equal(ref._get_base_global_index_map().numpy(), ours.mapping.base_global_index())
    x = torch.randn(3, ours.input_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
    for n, p in model.named_parameters():  # training never touches the base model
        assert torch.equal(p, before[n]), n


def test_for_masked_lm_loads_a_local_directory(tiny_bert, tmp_path):
    model, tok = tiny_bert
    path = tmp_path / "base"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        train_batch_size=2,
        eval_steps=1,
        params=["bert.encoder.layer.0.output.dense.weight"],
    )
    tr = Trainer.for_masked_lm(str(path), number_examples(ADJ[:2]), eval_data=number_examples(ADJ[2:3]), args=args)
    tr.train()
    saved = read_checkpoint(tmp_path / "out")
    assert saved.metadata["base_model"] == str(path)
    assert saved.param_map.names == ["bert.encoder.layer.0.output.dense.weight"]
    assert saved.architecture.input_dim == 16 * 32
