"""Build the sample GRADIEND checkpoints in ``sample_models/``.

Run from anywhere (no network needed, a few minutes on 2 CPU cores)::

    python sample_models/build_samples.py

What it does, deterministically (fixed seeds, one torch thread):

1. Generates a small templated English corpus, writes a word-level
   ``vocab.txt`` from it and trains a tiny BERT masked LM on it
   (``sample_models/base/tiny-bert``).
2. Trains four GRADIENDs on that base model with the reference package's own
   trainer (``gradiend.TextPredictionTrainer``, gradiend 0.2.3):
   ``number-unpruned``, ``number-pre-pruned``, ``number-post-pruned`` and
   ``gender-unpruned``.  Each sample directory is the checkpoint exactly as the
   trainer writes it (flat layout: ``config.json``, ``model.safetensors``,
   mapping files when pruned, ``training.json``, ``gradiend_context.json``);
   the trainer's multi-seed mode copies the first converged seed's run there.
3. Evaluates each encoder on the held-out test split, reloads every
   checkpoint with ``ParamMappedGradiendModel.from_pretrained`` and cross-checks
   the post-pruned sample against the reference ``prune()``.
4. Writes ``sample_models/README.md`` with the numbers measured in this run.

Paths recorded inside the checkpoints (``metadata.base_model``, the
``training_args`` paths in ``training.json``) are relative to the repository
root, because the script changes into it before training.  That keeps the
samples free of machine-specific absolute paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# One thread everywhere: float reductions then do not depend on the number of
# cores, so rebuilding on another machine gives the same bytes. Must be set
# before torch is imported to reach OpenMP/MKL.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Make sure nothing tries to reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gradiend  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from gradiend import (  # noqa: E402
    PostPruneConfig,
    PrePruneConfig,
    TextPredictionTrainer,
    TrainingArguments,
)
from gradiend.model.param_mapped import ParamMappedGradiendModel  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast  # noqa: E402

SEED = 0
SAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = SAMPLES_DIR.parent
# Relative to REPO_ROOT; this exact string ends up in each checkpoint's
# config.json (metadata.base_model).
BASE_MODEL_REL = "sample_models/base/tiny-bert"
# Scratch directory for the trainer's per-seed runs; removed after each sample.
SEED_RUNS_REL = "sample_models/.seed-runs"
# sample_models/README.md also carries sections that build_own_samples.py and
# build_curve_sample.py maintain between these markers; write_readme keeps them.
FOREIGN_README_MARKERS = (
    ("<!-- own-samples:begin -->", "<!-- own-samples:end -->"),
    ("<!-- curve-sample:begin -->", "<!-- curve-sample:end -->"),
)

# --------------------------------------------------------------------------
# Vocabulary of the toy language
# --------------------------------------------------------------------------

SINGULAR_NOUNS = ["cat", "dog", "bird", "horse", "child", "doctor", "nurse", "teacher", "student", "farmer"]
PLURAL_NOUNS = ["cats", "dogs", "birds", "horses", "children", "doctors", "nurses", "teachers", "students", "farmers"]
SINGULAR_VERBS = ["runs", "sleeps", "eats", "sings", "plays", "jumps"]
PLURAL_VERBS = ["run", "sleep", "eat", "sing", "play", "jump"]
# The adjective decides the split of the GRADIEND data (see ADJ_SPLIT), so the
# test split contains sentences with adjectives never seen in GRADIEND training.
ADJECTIVES = ["happy", "tired", "hungry", "small", "big", "old", "young", "busy", "kind", "sad", "quiet", "calm"]
ADVERBS = ["today", "now", "here", "again", "outside", "quickly"]
# Gendered subjects, all "the <noun>", so the pronoun always sits at the same
# distance from the noun that decides it.
MALE_SUBJECTS = [
    "the king",
    "the man",
    "the boy",
    "the father",
    "the brother",
    "the son",
    "the uncle",
    "the husband",
    "the prince",
    "the actor",
    "the nephew",
    "the grandfather",
]
FEMALE_SUBJECTS = [
    "the queen",
    "the woman",
    "the girl",
    "the mother",
    "the sister",
    "the daughter",
    "the aunt",
    "the wife",
    "the princess",
    "the actress",
    "the niece",
    "the grandmother",
]
SPEECH_VERBS = ["said", "thinks"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# --------------------------------------------------------------------------
# Base model settings
# --------------------------------------------------------------------------

BASE_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    # The reference trainer always pads to max_length=256 (TextTrainingDataset
    # default), so the position table must have at least 256 rows even though
    # our sentences are ~10 tokens long.
    max_position_embeddings=256,
    type_vocab_size=1,
    # BERT's default 0.02 is tuned for hidden_size 768; in a 64-wide model the
    # attention stays nearly uniform for 1000-2000+ steps (seed-dependent)
    # before the model starts to use the subject. With 0.1 both agreements are
    # learnt within a few hundred steps for every seed we tried.
    initializer_range=0.1,
)
MLM_CORPUS_SIZE = 6000
MLM_STEPS = 800
MLM_BATCH_SIZE = 32
MLM_LR = 2e-3
MLM_WARMUP = 50
MLM_MASK_PROB = 0.15
MLM_AGREEMENT_MASK_PROB = 0.5
AGREEMENT_WORDS = ["is", "are", "he", "she"] + SINGULAR_VERBS + PLURAL_VERBS
MIN_PROBE = 0.9  # every agreement probe must give the correct token at least this probability

# --------------------------------------------------------------------------
# GRADIEND settings
# --------------------------------------------------------------------------

GRADIEND_ARGS = dict(
    train_batch_size=8,  # 8 masked sentences of one class -> one gradient vector
    # The trainer alternates the two classes; stacking 2 gradient vectors per
    # optimizer step gives every step one of each class, so no step pulls the
    # encoder towards one class only.
    gradiend_batch_size=2,
    num_train_epochs=3,
    eval_steps=10,
    seed=SEED,
    # GRADIEND training on this tiny model is seed-sensitive: some seeds end
    # with both classes on the same tanh pole (correlation 0). The reference's
    # multi-seed mode retries seed+1, seed+2, ... until one converges
    # (|correlation| >= 0.5 and class means >= 0.5 with opposite signs) and
    # copies that run flat into output_dir.
    max_seeds=5,
    min_convergent_seeds=1,
    saved_seed_runs="best_only",
    fail_on_non_convergence=True,
)


@dataclass
class SampleSpec:
    """One sample checkpoint to build."""

    name: str
    feature: str
    target_classes: list[str]
    make_data: Callable[[], pd.DataFrame]
    description: str
    learning_rate: float
    training_overrides: dict[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python and torch RNGs and pin torch to one thread (see module top)."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------
# Step 1: corpus, tokenizer and tiny BERT
# --------------------------------------------------------------------------


def generate_sentence(rng: random.Random) -> str:
    """Return one random sentence of the toy language.

    Half the sentences carry number agreement (``the cat is`` / ``the cats are``,
    ``the dog runs`` / ``the dogs run``), half carry pronoun gender agreement
    (``the queen said that she ...``), so the base model has both features to
    learn before any GRADIEND is trained on it.
    """
    kind = rng.random()
    if kind < 0.25:
        i = rng.randrange(len(SINGULAR_NOUNS))
        plural = rng.random() < 0.5
        noun = (PLURAL_NOUNS if plural else SINGULAR_NOUNS)[i]
        very = "very " if rng.random() < 0.5 else ""
        return f"the {noun} {'are' if plural else 'is'} {very}{rng.choice(ADJECTIVES)} ."
    if kind < 0.5:
        i = rng.randrange(len(SINGULAR_NOUNS))
        j = rng.randrange(len(SINGULAR_VERBS))
        plural = rng.random() < 0.5
        noun = (PLURAL_NOUNS if plural else SINGULAR_NOUNS)[i]
        verb = (PLURAL_VERBS if plural else SINGULAR_VERBS)[j]
        return f"the {noun} {verb} {rng.choice(ADVERBS)} ."
    male = rng.random() < 0.5
    subject = rng.choice(MALE_SUBJECTS if male else FEMALE_SUBJECTS)
    pronoun = "he" if male else "she"
    return f"{subject} {rng.choice(SPEECH_VERBS)} that {pronoun} is {rng.choice(ADJECTIVES)} ."


def generate_corpus(n: int, seed: int) -> list[str]:
    """Generate ``n`` sentences with a private RNG (independent of global state)."""
    rng = random.Random(seed)
    return [generate_sentence(rng) for _ in range(n)]


def build_tokenizer(corpus: list[str], out_dir: Path) -> BertTokenizerFast:
    """Write a word-level ``vocab.txt`` (every corpus word is one token) and
    return a BERT WordPiece tokenizer over it.

    A word-level vocabulary keeps the embedding matrix tiny and guarantees that
    every GRADIEND target (is/are, he/she) is a single token.
    """
    words = sorted({w for sentence in corpus for w in sentence.split()})
    vocab = SPECIAL_TOKENS + words
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary as a dict (a file path is not parsed).
    return BertTokenizerFast(
        vocab={w: i for i, w in enumerate(vocab)},
        do_lower_case=True,
        model_max_length=BASE_CONFIG["max_position_embeddings"],
    )


def mask_for_mlm(
    input_ids: torch.Tensor, tokenizer: BertTokenizerFast, agreement_ids: torch.Tensor, generator: torch.Generator
):
    """BERT-style masking with extra weight on agreement words.

    Every non-special token is masked with probability ``MLM_MASK_PROB``; the
    agreement words (``agreement_ids``: is/are, the verb forms, he/she) with
    ``MLM_AGREEMENT_MASK_PROB``.  With plain 15% masking the agreement slot is
    a small share of the loss and 800 steps leave most seeds at 50/50 for
    is/are or he/she; masking it more often makes agreement reliable.  Masked
    tokens become [MASK]; returns (masked_ids, labels).
    """
    labels = input_ids.clone()
    special = (
        (input_ids == tokenizer.cls_token_id)
        | (input_ids == tokenizer.sep_token_id)
        | (input_ids == tokenizer.pad_token_id)
    )
    rand = torch.rand(input_ids.shape, generator=generator)
    agreement = torch.isin(input_ids, agreement_ids)
    chosen = ((rand < MLM_MASK_PROB) | (agreement & (rand < MLM_AGREEMENT_MASK_PROB))) & ~special
    labels[~chosen] = -100
    masked = input_ids.clone()
    masked[chosen] = tokenizer.mask_token_id
    return masked, labels


def train_base_model(corpus: list[str], tokenizer: BertTokenizerFast, seed: int) -> BertForMaskedLM:
    """Train a tiny BERT MLM on ``corpus`` (AdamW, linear warmup and decay).

    With ``initializer_range=0.1`` and extra masking of agreement words, 800
    steps are enough for both agreements (checked with ``agreement_probe``).
    """
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), **BASE_CONFIG)
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=MLM_LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / MLM_WARMUP) * max(0.0, 1.0 - step / MLM_STEPS),
    )
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    agreement_ids = torch.tensor(tokenizer.convert_tokens_to_ids(AGREEMENT_WORDS))
    model.train()
    for step in range(MLM_STEPS):
        batch = [corpus[rng.randrange(len(corpus))] for _ in range(MLM_BATCH_SIZE)]
        enc = tokenizer(batch, padding=True, return_tensors="pt")
        input_ids, labels = mask_for_mlm(enc["input_ids"], tokenizer, agreement_ids, generator)
        loss = model(input_ids=input_ids, attention_mask=enc["attention_mask"], labels=labels).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step % 500 == 0 or step == MLM_STEPS - 1:
            print(f"  mlm step {step:4d}  loss {loss.item():.3f}", flush=True)
    model.eval()
    return model


def agreement_probe(model: BertForMaskedLM, tokenizer: BertTokenizerFast) -> dict[str, float]:
    """Mean probability the base model gives the *correct* agreement token on
    probes built with the test-split adjectives; shows the model is not random."""
    probes = {
        "P(is): the <sg> [MASK] <adj> .": [
            (f"the {n} [MASK] {a} .", "is") for n in SINGULAR_NOUNS for a in ADJECTIVES[-2:]
        ],
        "P(are): the <pl> [MASK] <adj> .": [
            (f"the {n} [MASK] {a} .", "are") for n in PLURAL_NOUNS for a in ADJECTIVES[-2:]
        ],
        "P(he): <male> said that [MASK] is <adj> .": [
            (f"{s} said that [MASK] is {a} .", "he") for s in MALE_SUBJECTS for a in ADJECTIVES[-2:]
        ],
        "P(she): <female> said that [MASK] is <adj> .": [
            (f"{s} said that [MASK] is {a} .", "she") for s in FEMALE_SUBJECTS for a in ADJECTIVES[-2:]
        ],
    }
    result = {}
    with torch.no_grad():
        for name, items in probes.items():
            texts = [t for t, _ in items]
            targets = torch.tensor(tokenizer.convert_tokens_to_ids([w for _, w in items]))
            enc = tokenizer(texts, padding=True, return_tensors="pt")
            logits = model(**enc).logits
            rows, cols = (enc["input_ids"] == tokenizer.mask_token_id).nonzero(as_tuple=True)
            probs = logits[rows, cols].softmax(-1)
            result[name] = float(probs[torch.arange(len(items)), targets].mean())
    return result


def build_base_model() -> dict[str, object]:
    """Build and save ``sample_models/base/tiny-bert``; return facts for the README."""
    out_dir = REPO_ROOT / BASE_MODEL_REL
    if out_dir.exists():
        shutil.rmtree(out_dir)
    corpus = generate_corpus(MLM_CORPUS_SIZE, SEED)
    tokenizer = build_tokenizer(corpus, out_dir)
    model = train_base_model(corpus, tokenizer, SEED)
    probe = agreement_probe(model, tokenizer)
    if min(probe.values()) < MIN_PROBE:
        # GRADIENDs trained on a model that has not learnt agreement would
        # encode noise; stop instead of writing such samples.
        raise RuntimeError(
            f"Base model did not learn agreement (probes {probe}); raise MLM_STEPS or check "
            "that the transformers/torch versions still train it the same way."
        )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for name, p in probe.items():
        print(f"  {name} = {p:.3f}")
    return {
        "vocab_size": len(tokenizer),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "probe": probe,
        "corpus_example": corpus[:4],
    }


# --------------------------------------------------------------------------
# Step 2: GRADIEND data
# --------------------------------------------------------------------------

# 8 adjectives for training, 2 for validation (in-training evaluation and best
# checkpoint selection), 2 for the final test evaluation.
ADJ_SPLIT = {a: ("train" if i < 8 else "validation" if i < 10 else "test") for i, a in enumerate(ADJECTIVES)}


def number_data() -> pd.DataFrame:
    """Grammatical number: ``the cat [MASK] happy .`` -> is (singular) vs
    ``the cats [MASK] happy .`` -> are (plural).

    Merged-DataFrame format of ``TextPredictionTrainer``: columns masked, label,
    label_class, split.  No alternative column: with one token per class the
    trainer uses the other class's token (are <-> is) as the alternative.
    """
    rows = []
    for sg, pl in zip(SINGULAR_NOUNS, PLURAL_NOUNS):
        for adj in ADJECTIVES:
            for very in ("", "very "):
                split = ADJ_SPLIT[adj]
                rows.append(
                    dict(masked=f"the {sg} [MASK] {very}{adj} .", label="is", label_class="singular", split=split)
                )
                rows.append(
                    dict(masked=f"the {pl} [MASK] {very}{adj} .", label="are", label_class="plural", split=split)
                )
    return pd.DataFrame(rows)


def gender_data() -> pd.DataFrame:
    """Pronoun gender: ``the king said that [MASK] is happy .`` -> he (male)
    vs ``the queen said that [MASK] is happy .`` -> she (female)."""
    rows = []
    for male, female in zip(MALE_SUBJECTS, FEMALE_SUBJECTS):
        for verb in SPEECH_VERBS:
            for adj in ADJECTIVES:
                split = ADJ_SPLIT[adj]
                rows.append(
                    dict(masked=f"{male} {verb} that [MASK] is {adj} .", label="he", label_class="male", split=split)
                )
                rows.append(
                    dict(
                        masked=f"{female} {verb} that [MASK] is {adj} .", label="she", label_class="female", split=split
                    )
                )
    return pd.DataFrame(rows)


SAMPLES = [
    SampleSpec(
        name="number-unpruned",
        feature="number",
        target_classes=["singular", "plural"],
        make_data=number_data,
        description="no pruning",
        learning_rate=1e-3,
    ),
    SampleSpec(
        name="number-pre-pruned",
        feature="number",
        target_classes=["singular", "plural"],
        make_data=number_data,
        description="pre-pruned to the top 10% of dimensions by mean absolute gradient over 16 samples, then trained",
        # On the 10x smaller input 1e-3 collapses for seeds 0-2; 3e-2 converged
        # for the most seeds in the sweep described in the README.
        learning_rate=3e-2,
        training_overrides=dict(pre_prune_config=PrePruneConfig(n_samples=16, topk=0.1, seed=SEED)),
    ),
    SampleSpec(
        name="number-post-pruned",
        feature="number",
        target_classes=["singular", "plural"],
        make_data=number_data,
        description="trained unpruned, then post-pruned to the top 5% of dimensions by absolute decoder weight",
        learning_rate=1e-3,  # same as number-unpruned, so it is that model pruned
        training_overrides=dict(post_prune_config=PostPruneConfig(topk=0.05, part="decoder-weight")),
    ),
    SampleSpec(
        name="gender-unpruned",
        feature="gender",
        target_classes=["male", "female"],
        make_data=gender_data,
        description="no pruning",
        learning_rate=1e-3,
    ),
]


# --------------------------------------------------------------------------
# Step 2b: training with the reference trainer
# --------------------------------------------------------------------------


def describe_training_args(spec: SampleSpec) -> str:
    """Human-readable TrainingArguments line for the README."""
    parts = [f"{k}={v!r}" for k, v in GRADIEND_ARGS.items()]
    parts.append(f"learning_rate={spec.learning_rate:g}")
    parts.append(f"seed_runs_dir='{SEED_RUNS_REL}/{spec.name}'")
    parts += [f"{k}={v}" for k, v in spec.training_overrides.items()]
    return ", ".join(parts)


def train_sample(spec: SampleSpec) -> dict[str, object]:
    """Train one GRADIEND with ``gradiend.TextPredictionTrainer`` and evaluate
    its encoder on the test split.

    ``output_dir`` is the sample directory itself and ``experiment_dir`` stays
    unset, so the selected run lands flat in the sample directory with no
    encoder-analysis caches or plots next to it. The per-seed runs go to
    ``SEED_RUNS_REL`` and are deleted afterwards.
    """
    out_rel = f"sample_models/{spec.name}"
    out_dir = REPO_ROOT / out_rel
    if out_dir.exists():
        shutil.rmtree(out_dir)  # no stale mapping files from an earlier build
    seed_everything(SEED)
    # The per-seed runs go to a fixed repo-relative scratch directory (deleted
    # below) rather than a random temp dir, because training.json records this
    # path: a fixed relative path keeps the records machine-independent.
    seed_runs_dir = f"{SEED_RUNS_REL}/{spec.name}"
    try:
        args = TrainingArguments(
            **GRADIEND_ARGS,
            learning_rate=spec.learning_rate,
            seed_runs_dir=seed_runs_dir,
            **spec.training_overrides,
        )
        trainer = TextPredictionTrainer(
            model=BASE_MODEL_REL,
            data=spec.make_data(),
            target_classes=spec.target_classes,
            args=args,
        )
        start = time.time()
        # output_dir must go to train(): TrainingArguments.output_dir alone is
        # ignored by train() (it falls back to a temp dir without experiment_dir).
        trainer.train(output_dir=out_rel)
        train_seconds = time.time() - start
        seed_report = json.loads((Path(seed_runs_dir) / "seed_report.json").read_text())
        # After train() the trainer serves the selected (and, for post-pruning,
        # the post-pruned) model from output_dir; this is the saved model.
        test = trainer.evaluate_encoder(split="test", use_cache=False)
    finally:
        shutil.rmtree(REPO_ROOT / SEED_RUNS_REL, ignore_errors=True)
    training = json.loads((out_dir / "training.json").read_text())
    return {
        "seeds_tried": seed_report["seeds_tried"],
        "selected_seed": seed_report["best_seed"],
        "train_seconds": train_seconds,
        "best_val_correlation": training["training_stats"]["correlation"],
        "best_step": training["best_score_checkpoint"]["global_step"],
        "test_correlation": test["correlation"],
        "test_mean_by_class": test.get("mean_by_feature_class", {}),
        "rows_by_split": spec.make_data()["split"].value_counts().to_dict(),
    }


# --------------------------------------------------------------------------
# Step 3: verification
# --------------------------------------------------------------------------


def dir_size(path: Path) -> int:
    """Total size in bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verify_sample(name: str) -> dict[str, object]:
    """Load a sample with ``ParamMappedGradiendModel.from_pretrained`` and
    return its input_dim, unpruned length, files and size."""
    path = SAMPLES_DIR / name
    model = ParamMappedGradiendModel.from_pretrained(str(path))
    config = json.loads((path / "config.json").read_text())
    return {
        "input_dim": int(model.input_dim),
        "unpruned_length": int(model.unpruned_length()),
        "mapping_mode": config["mapping"]["mode"],
        "files": sorted(p.name for p in path.iterdir()),
        "bytes": dir_size(path),
        "weights_sha256": hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16],
    }


def check_post_prune_against_prune() -> dict[str, object]:
    """Compare the trainer's post-pruned checkpoint with the reference
    ``ParamMappedGradiendModel.prune()`` applied to the unpruned checkpoint.

    Both samples are trained with identical seeds and arguments, so the
    post-pruned sample must be exactly the unpruned one pruned with the same
    topk/part; any difference would be a reference-package inconsistency.
    """
    cfg = PostPruneConfig(topk=0.05, part="decoder-weight")
    unpruned = ParamMappedGradiendModel.from_pretrained(str(SAMPLES_DIR / "number-unpruned"))
    post = ParamMappedGradiendModel.from_pretrained(str(SAMPLES_DIR / "number-post-pruned"))
    pruned = unpruned.prune(topk=cfg.topk, part=cfg.part, inplace=False)
    same_dim = int(pruned.input_dim) == int(post.input_dim)
    # Kept dimensions as positions in the unpruned input space (private helper,
    # but the one the reference itself uses to decode pruned indices).
    same_kept = same_dim and torch.equal(pruned._get_base_global_index_map(), post._get_base_global_index_map())
    same_weights = same_dim and all(
        torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), post.state_dict().values())
    )
    return {
        "prune_input_dim": int(pruned.input_dim),
        "post_input_dim": int(post.input_dim),
        "identical": bool(same_kept and same_weights),
    }


# --------------------------------------------------------------------------
# Step 4: README
# --------------------------------------------------------------------------


def observed_quirks(results: dict[str, dict[str, object]]) -> list[str]:
    """Reference-package quirks met while writing this script; the ones about
    the saved files are checked against the files just written."""
    quirks = [
        "`TrainingArguments(output_dir=...)` is ignored by `Trainer.train()`: without "
        "`experiment_dir` the model goes to a fresh `/tmp/gradiend_train_*` directory; pass "
        "`train(output_dir=...)` instead.",
        "`TextTrainingDataset` pads every example to `max_length=256`, so the base model needs "
        "`max_position_embeddings >= 256` even for 10-token sentences.",
        "`TrainingArguments.max_steps` only caps training; it does not extend it past `num_train_epochs`.",
        "With `max_seeds=1` (single-seed path) the pre-pruned checkpoint's `gradiend_context.json` has no "
        "`feature_class_encoding_direction` and its metadata no `is_training`; the multi-seed path used "
        "here writes both.",
        "`training.json` records the per-seed scratch paths (`training_args.output_dir`, `experiment_dir`, "
        "`seed_runs_dir`), not the `output_dir` the selected run was copied to.",
    ]
    for name in results:
        metadata = json.loads((SAMPLES_DIR / name / "config.json").read_text())["metadata"]
        stringified = sorted(k for k, v in metadata.items() if isinstance(v, dict) and "_repr" in v)
        if stringified:
            quirks.append(
                f"`{name}/config.json` metadata stores {', '.join(f'`{k}`' for k in stringified)} only as "
                'a `{"_type", "_repr"}` string, not as a loadable config.'
            )
    if "number-post-pruned" in results:
        quirks.append(
            "`number-post-pruned/training.json` keeps the correlation measured before post-pruning "
            f"({results['number-post-pruned']['best_val_correlation']:.4f}); only "
            "`training_args.post_prune_config` tells that the saved model is pruned."
        )
    return quirks


def human_bytes(n: int) -> str:
    """Format a byte count as KiB/MiB."""
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def foreign_readme_section() -> str:
    """The README sections other scripts maintain (between their markers), or ''."""
    path = SAMPLES_DIR / "README.md"
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    kept = []
    for begin, end in FOREIGN_README_MARKERS:
        b, e = text.find(begin), text.find(end)
        if b >= 0 and e > b:
            kept.append(text[b : e + len(end)] + "\n")
    return "\n".join(kept)


def write_readme(
    base: dict[str, object], results: dict[str, dict[str, object]], checks: dict[str, object], total_seconds: float
) -> None:
    """Write ``sample_models/README.md`` from the numbers of this run, keeping
    the section between the ``own-samples`` markers untouched."""
    base_dir = REPO_ROOT / BASE_MODEL_REL

    def rows_text(name: str) -> str:
        counts = results[name]["rows_by_split"]
        detail = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("train", "validation", "test"))
        return f"{sum(counts.values())} rows ({detail})"

    sample_rows = "\n".join(
        f"| `{s.name}/` | {s.feature} ({' vs '.join(s.target_classes)}) | {s.description} | "
        f"{r['input_dim']:,} | {r['unpruned_length']:,} | {r['mapping_mode']} | "
        f"{r['best_val_correlation']:.4f} (step {r['best_step']}) | {r['test_correlation']:.4f} | "
        f"{r['selected_seed']} (tried {', '.join(map(str, r['seeds_tried']))}) | {human_bytes(r['bytes'])} |"
        for s in SAMPLES
        for r in [results[s.name]]
    )
    file_rows = "\n".join(f"| `{s.name}/` | {', '.join(results[s.name]['files'])} |" for s in SAMPLES)
    args_rows = "\n".join(f"| `{s.name}` | `TrainingArguments({describe_training_args(s)})` |" for s in SAMPLES)
    probe_rows = "\n".join(f"| `{k}` | {v:.3f} |" for k, v in base["probe"].items())
    quirk_lines = "\n".join(f"- {q}" for q in observed_quirks(results))
    split_words = {
        split: ", ".join(a for a in ADJECTIVES if ADJ_SPLIT[a] == split) for split in ("train", "validation", "test")
    }

    text = f"""# Sample GRADIEND checkpoints

Real, trained GRADIEND checkpoints for exploring and pruning, small enough to
keep in the repository. The samples in the first part were produced by the
reference package's own trainer (`gradiend` {gradiend.__version__}, `gradiend.TextPredictionTrainer`)
on a tiny BERT that this folder also contains.

Rebuild the base model and these samples (about {max(1, round(total_seconds / 60))} min on 2 CPU cores, no network):

```bash
python sample_models/build_samples.py
```

The build is seeded and runs torch on one thread: a rebuild reproduces
`model.safetensors`, the mapping files and `config.json` bit for bit
(`training.json` differs in its timings). This part of the README is written by
the script from the numbers of its run.

## Layout

Each sample directory **is** the checkpoint, flat, as the trainer wrote it:
`trainer.train(output_dir="sample_models/<name>")` with no `experiment_dir`, so
there is no nested `model/` directory and no encoder-cache or plot files. (In
multi-seed mode the trainer trains in a per-seed directory and copies the
selected run to `output_dir`; the script points the per-seed directories at
`{SEED_RUNS_REL}/` and deletes them afterwards.)

| sample | files |
| --- | --- |
{file_rows}

Load one with

```python
from gradiend.model.param_mapped import ParamMappedGradiendModel
g = ParamMappedGradiendModel.from_pretrained("sample_models/number-post-pruned")
g.input_dim, g.unpruned_length()
```

`config.json` holds `format_version` 0, `architecture`, `mapping` and
`metadata`; `metadata.base_model` is the repo-relative path
`{BASE_MODEL_REL}`, so loading the base model together with the
GRADIEND (`ModelWithGradiend.from_pretrained`) works from the repository root.

## Samples

| sample | feature | pruning | input_dim | unpruned length | mapping mode \
| best validation correlation (training.json) | test correlation | seed used | size |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{sample_rows}

- *best validation correlation*: `training.json` → `training_stats.correlation`,
  the encoder correlation on the validation split at the checkpoint the trainer
  kept (it evaluates every `eval_steps`). For `number-post-pruned` it was
  measured **before** post-pruning (the trainer does not re-evaluate).
- *test correlation*: `trainer.evaluate_encoder(split="test")["correlation"]`
  right after `train()`, on sentences whose adjectives never occur in training;
  for `number-post-pruned` this is the pruned model. The encoders saturate:
  the class means are ±1 (tanh), so the correlations are 1 to four decimals.
- *unpruned length*: `ParamMappedGradiendModel.unpruned_length()`, the number of
  base-model weights the GRADIEND maps: all backbone parameters `bert.*` (the
  trainer's default, it leaves out the MLM head `cls.*`).
- *seed used*: the training seed of the run the trainer's multi-seed mode
  selected, and the seeds it tried.
- Check: `prune(topk=0.05, part="decoder-weight")` applied to `number-unpruned`
  gives a model identical to `number-post-pruned` (same kept dimensions, same
  weights): **{checks["identical"]}** (input_dim {checks["prune_input_dim"]:,} vs {checks["post_input_dim"]:,}).

## Base model: `{BASE_MODEL_REL}/` ({human_bytes(dir_size(base_dir))})

- `BertForMaskedLM`, \
`BertConfig({", ".join(f"{k}={v}" for k, v in BASE_CONFIG.items())}, vocab_size={base["vocab_size"]})`,
  {base["num_parameters"]:,} parameters.
- `max_position_embeddings=256` although sentences are ~10 tokens: the reference
  trainer pads every example to `max_length=256`.
- `initializer_range=0.1` instead of BERT's 0.02: with 0.02 the 64-wide model
  needs 1000-2000+ steps, depending on the seed, before it uses the subject;
  with 0.1 (and the agreement masking below) 600 steps sufficed for seeds 0-5.
- Tokenizer: `BertTokenizerFast` over a word-level `vocab.txt` (the 5 BERT special
  tokens plus every word of the corpus, lower case).
- Corpus: {MLM_CORPUS_SIZE:,} generated sentences (seed {SEED}) such as
  {", ".join(f'"{s}"' for s in base["corpus_example"])}: half carry number
  agreement (`the cat is` / `the cats are`, `the dog runs` / `the dogs run`),
  half pronoun gender (`the queen said that she ...`).
- Training: {MLM_STEPS} steps, batch {MLM_BATCH_SIZE}, AdamW lr {MLM_LR:g} with {MLM_WARMUP} warmup steps and
  linear decay; every token is masked with probability {MLM_MASK_PROB}, the agreement words
  ({", ".join(AGREEMENT_WORDS[:4])}, verb forms) with {MLM_AGREEMENT_MASK_PROB}.
- Agreement probes (mean probability of the correct token; test-split adjectives):

| probe | probability |
| --- | --- |
{probe_rows}

## GRADIEND data

Generated by the script, passed as one pandas DataFrame per feature (columns
`masked`, `label`, `label_class`, `split`):
`TextPredictionTrainer(model="{BASE_MODEL_REL}", data=df, target_classes=[...], args=TrainingArguments(...))`.
There is no alternative column: with one token per class the trainer takes the
other class's token as the alternative (defaults `source="alternative"`,
`target="diff"`).

- **number** (`singular` vs `plural`): `the <noun> [MASK] [very] <adj> .` with
  label `is` for {len(SINGULAR_NOUNS)} singular nouns and `are` for their plurals; {rows_text("number-unpruned")}.
- **gender** (`male` vs `female`): `<subject> said|thinks that [MASK] is <adj> .`
  with label `he` for {len(MALE_SUBJECTS)} male subjects (`the king`, `the nephew`, ...) and
  `she` for {len(FEMALE_SUBJECTS)} female ones (`the queen`, `the niece`, ...); {rows_text("gender-unpruned")}.
- Split by adjective: {split_words["train"]} → train; {split_words["validation"]} → validation;
  {split_words["test"]} → test.

## Training arguments

| sample | arguments |
| --- | --- |
{args_rows}

- `gradiend_batch_size=2`: the trainer alternates the classes, so every
  optimizer step sees one gradient of each class. (It is not what makes runs
  converge: with the default 1, `number-unpruned` at 1e-3 converged for
  seeds 1 and 2 as well.)
- Learning rates: on this model a run either converges within a few dozen
  steps or ends with both classes on the same tanh pole (correlation 0 or
  below the 0.5 threshold). A sweep with these arguments and one seed per run
  (seeds 0, 1, 2) converged for: `number-unpruned` at 1e-3: 3 of 3;
  `gender-unpruned` at 1e-3: 2 of 3; `number-pre-pruned` (10x smaller input):
  0 of 3 at 1e-3, 1 of 3 at 3e-3 and at 1e-2, 2 of 3 at 3e-2. Multi-seed mode
  (`max_seeds=5`, `fail_on_non_convergence=True`) retries further seeds when a
  rebuild lands on a collapsing one, and fails loudly if none converges.
- `PrePruneConfig` keeps the top `topk` fraction of dimensions by the mean
  absolute gradient over `n_samples` class-stratified training examples, before
  the encoder and decoder are built. `PostPruneConfig` prunes the trained model
  by absolute decoder weight, and the trainer saves it over the unpruned run.

## Quirks of the reference package seen while building

{quirk_lines}

"""
    (SAMPLES_DIR / "README.md").write_text(text + foreign_readme_section(), encoding="utf-8")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main() -> int:
    """Build the base model and all samples, verify them, write the README."""
    start = time.time()
    # Paths recorded by the trainer are relative to the repo root (see module doc).
    os.chdir(REPO_ROOT)
    seed_everything(SEED)

    print("[1/4] base model", flush=True)
    base = build_base_model()

    results: dict[str, dict[str, object]] = {}
    for i, spec in enumerate(SAMPLES, start=1):
        print(f"[2/4] GRADIEND {i}/{len(SAMPLES)}: {spec.name}", flush=True)
        results[spec.name] = train_sample(spec)

    print("[3/4] verify", flush=True)
    for spec in SAMPLES:
        results[spec.name].update(verify_sample(spec.name))
        r = results[spec.name]
        print(
            f"  {spec.name:20s} input_dim={r['input_dim']:>7,} unpruned_length={r['unpruned_length']:,} "
            f"val_corr={r['best_val_correlation']:.4f} test_corr={r['test_correlation']:.4f} "
            f"size={human_bytes(r['bytes'])} sha={r['weights_sha256']}"
        )
    checks = check_post_prune_against_prune()
    print(f"  post-pruned == prune(unpruned): {checks}")

    total = time.time() - start
    print(f"[4/4] README (total {total:.0f} s)", flush=True)
    write_readme(base, results, checks, total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
