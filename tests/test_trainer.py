"""The GRADIEND trainer (``gradiend_core.trainer``) on a toy base model whose gradients are known.

The toy base model has two parameters: ``signal`` (24 entries) and ``noise`` (200 entries).
For an example with input ``z`` and target ``v`` the loss is ``signal . v + (noise . z)^2``, so

* the gradient on ``signal`` is ``v`` (the factual or the alternative target), and
* the gradient on ``noise`` is ``2 (noise . z) z``, the same for both targets.

Class A has ``v_factual = c0 + m``, ``v_alternative = c0 - m``; class B the opposite signs. So
``diff = factual - alternative`` is ``+-2m`` on ``signal`` and zero on ``noise``, while the
source (alternative) gradient carries per-example noise that a random encoder mixes in: at
step 0 the encoder separates the classes poorly, and training must find the signal.

Everything the tests compare against is computed here independently (closed-form gradients in
float64, numpy selection, hand-written scatter), never with the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gradiend.trainer.core.pruning as ref_pruning
import numpy as np
import pytest
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref
from gradiend.model.utils import read_gradiend_context
from gradiend.trainer.core.stats import load_training_stats
from torch import nn

from gradiend_core import CheckpointError, ParamMappedGradiendModel, SelectionError, read_checkpoint
from gradiend_core.trainer import (
    Example,
    ModelWithGradiend,
    PostPruneConfig,
    PrePruneConfig,
    Trainer,
    TrainingArguments,
    cut_cost,
    load_pre_prune_record,
    load_validation_record,
)
from gradiend_core.trainer import trainer as trainer_module

# Tiny models: one torch thread is faster (see the fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


N_SIGNAL, N_NOISE = 24, 200
INPUT_DIM = N_SIGNAL + N_NOISE
SEPARATION_BOUND = 0.95  # validation correlation the trained toy encoder must reach
STEP0_BOUND = 0.8  # ... while the untrained encoder stays below this (training did the work)


class Toy(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.signal = nn.Parameter(torch.randn(N_SIGNAL, generator=g))
        self.noise = nn.Parameter(torch.randn(N_NOISE, generator=g) / math.sqrt(N_NOISE))


def toy_loss(model, batch, which):
    total = 0.0
    for ex in batch:
        v = ex.factual if which == "factual" else ex.alternative
        total = total + (model.signal * v).sum() + (model.noise @ ex.inputs) ** 2
    return total / len(batch)


def make_examples(n: int, seed: int, *, sigma: float = 1.0, c0_scale: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    c0 = torch.randn(N_SIGNAL, generator=torch.Generator().manual_seed(99)) * c0_scale
    m = torch.randn(N_SIGNAL, generator=torch.Generator().manual_seed(98))
    out = []
    for i in range(n):
        s = 1.0 if i % 2 == 0 else -1.0
        z = torch.randn(N_NOISE, generator=g) * sigma
        out.append(Example(z, c0 + s * m, c0 - s * m, "A" if s > 0 else "B"))
    return out


def alternative_gradient(model: Toy, ex: Example) -> np.ndarray:
    """Closed form, float64: [v_alternative ; 2 (noise . z) z]."""
    noise = model.noise.detach().double().numpy()
    z = ex.inputs.double().numpy()
    return np.concatenate([ex.alternative.double().numpy(), 2.0 * (noise @ z) * z])


def args_for(tmp_path: Path, name: str, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path / name / "model"),
        learning_rate=1e-2,
        max_steps=300,
        train_batch_size=1,
        eval_steps=50,
        seed=0,
    )
    base.update(kw)
    return TrainingArguments(**base)


TRAIN = make_examples(64, 1)
VAL = make_examples(32, 2)
PRE_TRAIN = make_examples(64, 1, c0_scale=1.0)  # class-independent offset so the gradient mean is informative
PRE_VAL = make_examples(32, 2, c0_scale=1.0)
PRE_CFG = PrePruneConfig(n_samples=64, topk=40)
POST_CFG = PostPruneConfig(topk=0.25, part="decoder-weight")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four runs on one toy base model: unpruned, pre-pruned, post-pruned, pre- and post-pruned."""
    root = tmp_path_factory.mktemp("trainer_runs")
    out = {}
    for name, pre, post in (
        ("unpruned", None, None),
        ("pre", PRE_CFG, None),
        ("post", None, POST_CFG),
        ("both", PRE_CFG, POST_CFG),
    ):
        data, val = (PRE_TRAIN, PRE_VAL) if pre else (TRAIN, VAL)
        tr = Trainer(
            Toy(),
            data,
            toy_loss,
            eval_data=val,
            args=args_for(root, name, pre_prune_config=pre, post_prune_config=post, save_validation_gradients=16),
        )
        tr.train()
        out[name] = tr
    return out


# ---------------------------------------------------------------------------------- configs
BAD_CONFIGS = [
    (lambda: PrePruneConfig(topk=0), "topk as a count must be >= 1"),
    (lambda: PrePruneConfig(topk=-3), "topk as a count must be >= 1"),
    (lambda: PrePruneConfig(topk=1.5), "must be in (0, 1]"),
    (lambda: PrePruneConfig(topk=0.0), "must be in (0, 1]"),
    (lambda: PrePruneConfig(topk=True), "not a bool"),
    (lambda: PrePruneConfig(topk="5%"), "topk must be an int or a float"),
    (lambda: PrePruneConfig(threshold=-0.5), "threshold must be >= 0"),
    (lambda: PrePruneConfig(topk=None, threshold=None), "set at least one of topk or threshold"),
    (lambda: PrePruneConfig(source="both"), "source must be one of factual, alternative, diff"),
    (lambda: PrePruneConfig(n_samples=0), "n_samples must be >= 1"),
    (lambda: PrePruneConfig(batch_size=0), "batch_size must be >= 1"),
    (lambda: PostPruneConfig(topk=0), "topk as a count must be >= 1"),
    (lambda: PostPruneConfig(topk=float("nan")), "must be in (0, 1]"),
    (lambda: PostPruneConfig(threshold=float("nan")), "threshold must be >= 0"),
    (lambda: PostPruneConfig(topk=None), "set at least one of topk, threshold or mask"),
    (
        lambda: PostPruneConfig(part="decoder"),
        "part must be one of encoder-weight, decoder-weight, decoder-bias, decoder-sum",
    ),
    (lambda: PostPruneConfig(mask=torch.ones(5)), "mask must have dtype bool"),
    (lambda: PostPruneConfig(mask=torch.zeros(5, dtype=torch.bool)), "mask is all False"),
    (lambda: PostPruneConfig(mask=torch.ones(2, 2, dtype=torch.bool)), "mask must be a 1-D"),
    (lambda: PostPruneConfig(inplace=1), "inplace must be True or False"),
    (lambda: TrainingArguments(source="gradient"), "source must be one of factual, alternative, diff"),
    (lambda: TrainingArguments(target="both"), "target must be one of"),
    (lambda: TrainingArguments(learning_rate=0), "learning_rate must be a positive number"),
    (lambda: TrainingArguments(max_steps=0), "max_steps must be > 0, or -1"),
    (lambda: TrainingArguments(train_batch_size=0), "train_batch_size must be >= 1"),
    (lambda: TrainingArguments(optim="sgd"), "optim must be one of adamw, adam"),
    (lambda: TrainingArguments(pre_prune_config={"topk": 0.1}), "pre_prune_config must be a PrePruneConfig"),
]


@pytest.mark.parametrize("make, message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_configs_reject_bad_values_with_a_clear_message(make, message):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert message in str(info.value)


def test_selection_errors_name_the_config():
    with pytest.raises(SelectionError, match=r"^PrePruneConfig: "):
        PrePruneConfig(topk=0)
    with pytest.raises(SelectionError, match=r"^PostPruneConfig: "):
        PostPruneConfig(threshold=-1)


def test_defaults_are_the_references():
    ours_pre, ref_pre = PrePruneConfig(), ref_pruning.PrePruneConfig()
    for f in ("n_samples", "topk", "threshold", "source", "batch_size", "seed"):
        assert getattr(ours_pre, f) == getattr(ref_pre, f), f
    ours_post, ref_post = PostPruneConfig(), ref_pruning.PostPruneConfig()
    for f in ("topk", "threshold", "mask", "part", "inplace", "return_mask"):
        assert getattr(ours_post, f) == getattr(ref_post, f), f
    from gradiend.trainer.core.arguments import TrainingArguments as RefArgs

    ref_args, ours = RefArgs(), TrainingArguments()
    for f in (
        "source",
        "target",
        "train_batch_size",
        "learning_rate",
        "weight_decay",
        "adam_epsilon",
        "optim",
        "num_train_epochs",
        "max_steps",
        "eval_steps",
        "seed",
        "save_only_best",
        "normalize_gradiend",
    ):
        assert getattr(ours, f) == getattr(ref_args, f), f


def test_int_zero_topk_is_refused_at_construction_where_the_reference_fails_late():
    ref_pruning.PrePruneConfig(topk=0)  # the reference's config accepts it ...
    # seeded: the reference's constructor fails when a tiny random encoder has no positive weight
    torch.manual_seed(0)
    ref_model = Ref(4, 1, {"w": {"shape": (4,), "repr": "all"}}, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="must be >= 1"):  # ... and its prune refuses it later
        ref_model.prune(topk=0, importance=torch.arange(4.0))
    with pytest.raises(SelectionError, match="count must be >= 1"):
        PrePruneConfig(topk=0)


def test_valid_configs_keep_their_values():
    mask = torch.tensor([True, False, True])
    cfg = PostPruneConfig(topk=None, mask=mask)
    assert cfg.mask is mask and cfg.to_dict()["mask"] is None
    assert PrePruneConfig(topk=np.int64(7)).topk == 7 and type(PrePruneConfig(topk=np.int64(7)).topk) is int
    assert PrePruneConfig(topk=1.0).is_noop and not PrePruneConfig(topk=1).is_noop


# --------------------------------------------------------------------------------- training
def test_training_separates_the_two_classes(runs):
    tr = runs["unpruned"]
    scores = tr.training_stats["scores"]
    assert abs(scores[0]) < STEP0_BOUND  # the random encoder does not separate the classes yet
    best = max(abs(v) for s, v in scores.items() if s > 0)
    assert best >= SEPARATION_BOUND
    # the saved model is the best step's: re-evaluating it gives the best correlation
    assert tr.evaluate_encoder()["correlation"] == pytest.approx(best, abs=1e-6)
    # the classes end up on opposite sides: first class positive
    means = tr.evaluate_encoder()["mean_by_feature_class"]
    assert means["A"] > 0 > means["B"]


def test_normalization_puts_the_first_class_on_the_positive_side(tmp_path):
    # the same data with the class order swapped: the learned direction must follow the labels
    for order in (("A", "B"), ("B", "A")):
        tr = Trainer(
            Toy(), TRAIN, toy_loss, eval_data=VAL, classes=order, args=args_for(tmp_path, "".join(order), max_steps=100)
        )
        tr.train()
        result = tr.evaluate_encoder()
        assert result["correlation"] > SEPARATION_BOUND
        assert result["mean_by_feature_class"][order[0]] > 0 > result["mean_by_feature_class"][order[1]]
        stored = json.loads((Path(tr.output_dir) / "gradiend_context.json").read_text())
        assert stored["feature_class_encoding_direction"] == {order[0]: 1, order[1]: -1}


def test_training_json_is_in_the_reference_format(runs):
    out = Path(runs["both"].output_dir)
    stats = load_training_stats(str(out))  # the reference's reader
    assert stats is not None
    ts = stats["training_stats"]
    assert set(ts["scores"]) >= {"0", "50", "300"}
    assert ts["global_step"] == 300
    assert stats["best_score_checkpoint"]["global_step"] > 0
    assert abs(stats["best_score_checkpoint"]["correlation"]) == max(
        abs(v) for k, v in ts["scores"].items() if k != "0"
    )
    assert len(stats["losses"]) == 300
    assert set(ts["mean_by_class"]["300"]) == {"1.0", "-1.0"}
    assert stats["training_args"]["learning_rate"] == 1e-2
    fp = stats["cache_fingerprint"]
    assert fp["source"] == "alternative" and fp["target"] == "diff"
    assert fp["pre_prune_config"] == PRE_CFG.to_dict() and fp["post_prune_config"] == POST_CFG.to_dict()
    assert fp["gradiend_input_dim"] == ParamMappedGradiendModel.from_pretrained(out).input_dim
    assert stats["input_dims"]["unpruned"] == INPUT_DIM and stats["input_dims"]["after_pre_prune"] == 40
    source, target, direction = read_gradiend_context(str(out))  # the reference's reader
    assert (source, target, direction) == ("alternative", "diff", {"A": 1, "B": -1})


def test_training_is_deterministic_for_a_seed(tmp_path):
    a = Trainer(Toy(), TRAIN, toy_loss, eval_data=VAL, args=args_for(tmp_path, "a", max_steps=40, eval_steps=20))
    b = Trainer(Toy(), TRAIN, toy_loss, eval_data=VAL, args=args_for(tmp_path, "b", max_steps=40, eval_steps=20))
    a.train(), b.train()
    for k, v in a.get_model().gradiend.state_dict().items():
        assert torch.equal(v, b.get_model().gradiend.state_dict()[k]), k


def test_train_needs_an_output_location():
    tr = Trainer(Toy(), TRAIN, toy_loss, eval_data=VAL, args=TrainingArguments(max_steps=2))
    with pytest.raises(ValueError, match="experiment_dir"):
        tr.train()


def test_default_validation_split_is_stratified_and_disjoint():
    tr = Trainer(Toy(), TRAIN, toy_loss, args=TrainingArguments(max_steps=2))
    assert len(tr.eval_data) + len(tr.train_data) == len(TRAIN)
    assert {e.feature_class for e in tr.eval_data} == {"A", "B"}
    assert not {id(e) for e in tr.eval_data} & {id(e) for e in tr.train_data}


# ------------------------------------------------------------------------------ pre-pruning
def independent_importance(model: Toy, examples) -> np.ndarray:
    return np.abs(np.mean([alternative_gradient(model, ex) for ex in examples], axis=0))


def test_pre_prune_keeps_the_dimensions_with_the_largest_mean_gradient(runs):
    tr = runs["pre"]
    imp = independent_importance(tr.base_model, PRE_TRAIN)  # n_samples == all 64, 32 per class
    order = np.argsort(-imp, kind="stable")
    expected = np.sort(order[:40])
    assert imp[order[39]] > imp[order[40]] * (1 + 1e-4)  # a clear gap at the cut: the check is meaningful
    model = tr.get_model()
    assert model.gradiend.input_dim == 40
    assert np.array_equal(model.gradiend.mapping.base_global_index(), expected)
    record = load_pre_prune_record(tr.output_dir)
    assert record is not None and record.n_samples == 64 and record.source == "alternative"
    assert np.array_equal(record.kept, expected)
    np.testing.assert_allclose(record.importance, imp, rtol=1e-5, atol=1e-7)
    assert record.importance.dtype == np.float32 and record.importance.shape == (INPUT_DIM,)
    assert record.config == PRE_CFG.to_dict()
    # the dashboard's view: gradient-mean importance of the checkpoint's own dimensions
    np.testing.assert_allclose(
        record.importance_for(model.gradiend.mapping.base_global_index()), imp[expected], rtol=1e-5
    )


def test_pre_prune_never_allocates_the_full_size_gradiend(monkeypatch, tmp_path):
    built = []
    real = trainer_module.ParamMappedGradiendModel

    class Spy(real):
        def __init__(self, input_dim, *a, **kw):
            built.append(input_dim)
            super().__init__(input_dim, *a, **kw)

    monkeypatch.setattr(trainer_module, "ParamMappedGradiendModel", Spy)
    tr = Trainer(
        Toy(),
        PRE_TRAIN,
        toy_loss,
        eval_data=PRE_VAL,
        args=args_for(tmp_path, "spy", max_steps=5, pre_prune_config=PrePruneConfig(n_samples=8, topk=0.1)),
    )
    tr.train()
    assert built == [math.ceil(0.1 * INPUT_DIM)]


def test_pre_prune_called_directly(tmp_path):
    tr = Trainer(Toy(), PRE_TRAIN, toy_loss, eval_data=PRE_VAL, args=args_for(tmp_path, "direct", max_steps=5))
    other = tr.pre_prune(PrePruneConfig(n_samples=8, topk=12), inplace=False)
    assert isinstance(other, ModelWithGradiend) and other.gradiend.input_dim == 12
    assert tr.get_model().gradiend.input_dim == INPUT_DIM  # the trainer's model is untouched
    assert tr.pre_prune(PrePruneConfig(n_samples=8, topk=12), inplace=True) is tr
    assert tr.get_model().gradiend.input_dim == 12  # an existing model is pruned with the same rule
    assert np.array_equal(
        tr.get_model().gradiend.mapping.base_global_index(), other.gradiend.mapping.base_global_index()
    )


def test_pre_prune_before_train_is_not_repeated(tmp_path):
    cfg = PrePruneConfig(n_samples=8, topk=20)
    tr = Trainer(
        Toy(),
        PRE_TRAIN,
        toy_loss,
        eval_data=PRE_VAL,
        args=args_for(tmp_path, "once", max_steps=3, pre_prune_config=cfg),
    )
    tr.pre_prune(inplace=True)
    tr.train()
    assert tr.get_model().gradiend.input_dim == 20


def test_invert_encoding_flips_the_latent_and_keeps_the_reconstruction():
    g = ParamMappedGradiendModel(INPUT_DIM, 1, [("signal", (N_SIGNAL,)), ("noise", (N_NOISE,))])
    m = ModelWithGradiend(Toy(), g)
    x = torch.randn(6, INPUT_DIM, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        dec0, enc0 = g(x, return_encoded=True)
        m.invert_encoding()
        dec1, enc1 = g(x, return_encoded=True)
    torch.testing.assert_close(enc1, -enc0)
    torch.testing.assert_close(dec1, dec0)


def test_pre_prune_threshold_and_noop(tmp_path):
    tr = Trainer(Toy(), PRE_TRAIN, toy_loss, eval_data=PRE_VAL, args=args_for(tmp_path, "thr", max_steps=5))
    imp = independent_importance(tr.base_model, PRE_TRAIN)
    thr = float(np.sort(imp)[-30])  # an occurring value, so ">=" keeps exactly 30
    model = tr.pre_prune(PrePruneConfig(n_samples=64, topk=None, threshold=thr), inplace=False)
    assert np.array_equal(model.gradiend.mapping.base_global_index(), np.flatnonzero(imp >= thr))
    noop = tr.pre_prune(PrePruneConfig(topk=1.0), inplace=False)
    assert noop.gradiend.input_dim == INPUT_DIM and noop.pre_prune_record is None


def test_pre_prune_of_a_pruned_model_records_base_global_indices(tmp_path):
    tr = Trainer(Toy(), PRE_TRAIN, toy_loss, eval_data=PRE_VAL, args=args_for(tmp_path, "twice", max_steps=3))
    tr.pre_prune(PrePruneConfig(n_samples=64, topk=100))
    first = tr.get_model().gradiend.mapping.base_global_index()
    tr.pre_prune(PrePruneConfig(n_samples=64, topk=30))  # prunes the 100-dim model by the same statistic
    model = tr.get_model()
    imp = independent_importance(tr.base_model, PRE_TRAIN)[first]  # importance in the 100-dim space
    expected = np.sort(np.argsort(-imp, kind="stable")[:30])
    assert np.array_equal(model.gradiend.mapping.base_global_index(), first[expected])
    path = model.save_pretrained(tmp_path / "saved")
    record = load_pre_prune_record(path)
    assert np.array_equal(record.base_global_index, first) and np.array_equal(record.kept, expected)
    assert np.array_equal(record.kept_base_global(), model.gradiend.mapping.base_global_index())
    assert np.isnan(record.importance_for(np.array([int(np.setdiff1d(np.arange(INPUT_DIM), first)[0])]))).all()


def test_records_are_optional_and_checked(runs, tmp_path):
    assert load_pre_prune_record(runs["unpruned"].output_dir) is None
    fake = tmp_path / "fake"
    fake.mkdir()
    for f in Path(runs["pre"].output_dir).iterdir():
        (fake / f.name).write_bytes(f.read_bytes())
    from safetensors.torch import save_file

    save_file(
        {"importance": torch.zeros(3)}, str(fake / "pre_prune.safetensors"), metadata={"format": "something-else"}
    )
    with pytest.raises(CheckpointError, match="not written by gradiend_core.trainer"):
        load_pre_prune_record(fake)
    Ref.from_pretrained(str(fake))  # an extra file never stops the reference from loading


def test_model_with_gradiend_by_hand(tmp_path):
    toy = Toy()
    g = ParamMappedGradiendModel(INPUT_DIM, 1, [("signal", (N_SIGNAL,)), ("noise", (N_NOISE,))])
    m = ModelWithGradiend(toy, g, loss_fn=toy_loss, feature_class_encoding_direction={"A": 1, "B": -1})
    ex = PRE_TRAIN[0]
    np.testing.assert_allclose(
        m.create_gradients([ex], "alternative").double().numpy(), alternative_gradient(toy, ex), rtol=1e-5
    )
    pruned = m.prune_gradiend(topk=10, part="encoder-weight", inplace=False)
    assert m.gradiend.input_dim == INPUT_DIM and pruned.gradiend.input_dim == 10 and len(pruned) == 10
    assert pruned.unpruned_length() == INPUT_DIM
    path = pruned.save_pretrained(tmp_path / "m")
    assert read_checkpoint(path).metadata["base_model"] == "Toy"
    assert read_gradiend_context(str(path)) == ("alternative", "diff", {"A": 1, "B": -1})
    assert Ref.from_pretrained(str(path)).input_dim == 10


# ----------------------------------------------------------------------------- post-pruning
def test_post_prune_equals_prune_on_the_trained_model(runs):
    for plain, pruned in (("unpruned", "post"), ("pre", "both")):
        trained = runs[plain].get_model().gradiend  # same data, seed and arguments, not post-pruned
        expected = trained.prune(topk=POST_CFG.topk, part=POST_CFG.part, inplace=False)
        got = ParamMappedGradiendModel.from_pretrained(runs[pruned].output_dir)
        assert got.input_dim == expected.input_dim == math.ceil(0.25 * trained.input_dim)
        assert np.array_equal(got.mapping.base_global_index(), expected.mapping.base_global_index())
        for k, v in expected.state_dict().items():
            assert torch.equal(v, got.state_dict()[k]), (pruned, k)


def test_pre_and_post_prune_compose(runs):
    pre = runs["pre"].get_model().gradiend.mapping.base_global_index()
    both = runs["both"].get_model().gradiend.mapping.base_global_index()
    assert both.size == math.ceil(0.25 * 40) and np.isin(both, pre).all()
    info = json.loads((Path(runs["both"].output_dir) / "training.json").read_text())
    assert info["input_dims"] == {"unpruned": INPUT_DIM, "after_pre_prune": 40, "final": both.size}
    assert info["post_prune"]["input_dim_before"] == 40 and info["post_prune"]["input_dim_after"] == both.size


def test_post_prune_called_directly(tmp_path):
    tr = Trainer(Toy(), TRAIN, toy_loss, eval_data=VAL, args=args_for(tmp_path, "postdirect", max_steps=20))
    tr.train()
    g = tr.get_model().gradiend
    expected = g.prune(topk=7, part="encoder-weight", inplace=False)
    copy_model, mask = tr.post_prune(PostPruneConfig(topk=7, part="encoder-weight", inplace=False, return_mask=True))
    assert tr.get_model().gradiend is g  # not in place
    assert mask.dtype == torch.bool and int(mask.sum()) == 7
    assert tr.post_prune(PostPruneConfig(topk=7, part="encoder-weight", return_mask=True)) is tr
    for got in (copy_model.gradiend, tr.get_model().gradiend):
        assert np.array_equal(got.mapping.base_global_index(), expected.mapping.base_global_index())
    assert torch.equal(tr.post_prune_mask, mask)
    with pytest.raises(ValueError, match="inplace=False makes no sense"):
        Trainer(
            Toy(),
            TRAIN,
            toy_loss,
            eval_data=VAL,
            args=args_for(tmp_path, "x", post_prune_config=PostPruneConfig(inplace=False)),
        ).train()


# ----------------------------------------------------------------------- reference interop
@pytest.mark.parametrize("name", ["unpruned", "pre", "post", "both"])
def test_every_checkpoint_loads_in_the_reference_with_equal_forward(runs, name):
    path = runs[name].output_dir
    ref = Ref.from_pretrained(path)
    ours = ParamMappedGradiendModel.from_pretrained(path)
    assert ref.input_dim == ours.input_dim == runs[name].get_model().gradiend.input_dim
    assert np.array_equal(ref._get_base_global_index_map().numpy(), ours.mapping.base_global_index())
    x = torch.randn(5, ours.input_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        r_dec, r_enc = ref(x, return_encoded=True)
        o_dec, o_enc = ours(x, return_encoded=True)
    # the same weights bit for bit; outputs agree to float32 rounding (the two compute paths differ)
    ref_state = ref.state_dict()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    torch.testing.assert_close(o_enc, r_enc, rtol=0, atol=1e-6)
    torch.testing.assert_close(o_dec, r_dec, rtol=0, atol=1e-6)
    files = {p.name for p in Path(path).iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "training.json",
        "gradiend_context.json",
        "validation_gradients.safetensors",
    } <= files
    assert ("pre_prune.safetensors" in files) == (name in ("pre", "both"))
    assert read_checkpoint(path).side_files["gradiend_context.json"]["source"] == "alternative"


# ------------------------------------------------------------------------------- rewriting
def test_rewrite_base_model_changes_exactly_the_mapped_entries(runs):
    model = runs["both"].get_model()  # pre- and post-pruned: a few entries of each parameter
    base = model.base_model
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    lr, ff = 0.5, -1.25
    state = model.gradiend.state_dict()
    expected_local = lr * (
        state["decoder.0.linear.weight"][:, 0].double() * ff + state["decoder.0.linear.bias"].double()
    )
    expected = np.zeros(INPUT_DIM)  # in base-global space: signal entries first, then noise
    expected[model.gradiend.mapping.base_global_index()] = expected_local.numpy()

    new = model.rewrite_base_model(learning_rate=lr, feature_factor=ff)

    after = np.concatenate([new.signal.detach().double().numpy(), new.noise.detach().double().numpy()])
    orig = np.concatenate([before["signal"].double().numpy(), before["noise"].double().numpy()])
    changed = np.flatnonzero(after != orig)
    assert np.array_equal(changed, np.sort(model.gradiend.mapping.base_global_index()))
    np.testing.assert_allclose(after - orig, expected, rtol=1e-5, atol=1e-6)
    for n, p in base.named_parameters():  # the original base model is not modified
        assert torch.equal(p, before[n])
    with pytest.raises(ValueError, match="feature_factor needs 1"):
        model.rewrite_base_model(1.0, [1.0, 2.0])


# ----------------------------------------------------------------------------- enhancer mask
@pytest.mark.parametrize("topk", [1, 3, 0.3, 0.999, 1.0])
def test_enhancer_mask_matches_prune_on_a_pruned_model(runs, topk):
    model = runs["both"].get_model()
    for part in ("decoder-weight", "encoder-weight", "decoder-sum"):
        mask = model.get_enhancer_mask(topk, part)
        pruned, prune_mask = model.prune_gradiend(topk=topk, part=part, inplace=False, return_mask=True)
        assert mask.shape == (model.gradiend.input_dim,)
        assert torch.equal(mask, prune_mask)
        assert int(mask.sum()) == pruned.gradiend.input_dim
    assert model.gradiend.input_dim == 10  # inplace=False left the model as it was


# --------------------------------------------------------------------------------- cut cost
def test_validation_record_and_cut_cost(runs):
    path = runs["unpruned"].output_dir
    rec = load_validation_record(path)
    assert rec.gradients.shape == (16, INPUT_DIM) and rec.gradients.dtype == torch.float32
    assert sorted(rec.labels.tolist()) == [-1.0] * 8 + [1.0] * 8
    # rows are the source (alternative) gradients of validation examples, in closed form
    toy = runs["unpruned"].base_model
    all_rows = np.stack([alternative_gradient(toy, ex) for ex in VAL])
    for row in rec.gradients.double().numpy():
        assert np.abs(all_rows - row).max(axis=1).min() < 1e-4

    data = read_checkpoint(path)
    full = cut_cost(data, np.arange(INPUT_DIM), rec)
    assert full.encoder_correlation == pytest.approx(1.0) and full.k == INPUT_DIM
    assert full.separation_after == pytest.approx(full.separation_before)
    assert full.label_correlation_before > SEPARATION_BOUND

    keep = ParamMappedGradiendModel.from_checkpoint_data(data).select(topk=100, part="encoder-weight").keep
    cost = cut_cost(data, keep, rec)
    # independent: prune the model, encode the restricted gradients, compare by hand
    model = ParamMappedGradiendModel.from_checkpoint_data(data)
    pruned = model.prune(mask=torch.from_numpy(np.isin(np.arange(INPUT_DIM), keep)))
    sub = rec.gradients[:, torch.from_numpy(keep)]
    with torch.no_grad():
        e0 = model.forward_encoder(rec.gradients)[:, 0].double().numpy()
        e1 = pruned.forward_encoder(sub)[:, 0].double().numpy()
        p0 = model.encoder[0](rec.gradients)[:, 0].double().numpy()
        p1 = pruned.encoder[0](sub)[:, 0].double().numpy()
    lab = rec.labels.numpy()

    def cohen(e):
        a, b = e[lab > 0], e[lab < 0]
        return abs(a.mean() - b.mean()) / math.sqrt((a.var(ddof=1) * (a.size - 1) + b.var(ddof=1) * (b.size - 1)) / 14)

    assert cost.k == 100 and cost.n == 16
    assert cost.encoder_correlation == pytest.approx(np.corrcoef(e0, e1)[0, 1], abs=1e-6)
    assert cost.preactivation_correlation == pytest.approx(np.corrcoef(p0, p1)[0, 1], abs=1e-6)
    assert cost.label_correlation_after == pytest.approx(np.corrcoef(e1, lab)[0, 1], abs=1e-6)
    assert cost.max_abs_change == pytest.approx(np.abs(e1 - e0).max(), abs=1e-6)
    for value, e in ((cost.preactivation_separation_before, p0), (cost.preactivation_separation_after, p1)):
        assert math.isfinite(value) and value == pytest.approx(cohen(e), rel=1e-4)
    assert cost.separation_retained == pytest.approx(
        cost.preactivation_separation_after / cost.preactivation_separation_before
    )

    # a pruned checkpoint's record covers exactly its own dimensions, and cut_cost aligns it
    both = runs["both"].output_dir
    rec_both = load_validation_record(both)
    assert rec_both.gradients.shape == (16, 10)
    assert cut_cost(read_checkpoint(both), np.arange(10), rec_both).encoder_correlation == pytest.approx(1.0)
    with pytest.raises(SelectionError, match=r"\[0, 10\)"):
        cut_cost(read_checkpoint(both), np.array([10]), rec_both)
    with pytest.raises(Exception, match="not among them"):
        cut_cost(data, np.arange(5), rec_both)  # a 10-column record cannot serve the unpruned model
