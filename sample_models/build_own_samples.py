"""Build the ``sample_models/own-*`` GRADIEND checkpoints with gradiend_core's own trainer.

Run from anywhere (no network, about a minute on 2 CPU cores)::

    python sample_models/build_own_samples.py

What it does, deterministically (fixed seeds, one torch thread):

1. Uses the tiny BERT masked LM ``sample_models/base/tiny-bert`` that
   ``sample_models/build_samples.py`` builds. When that directory is missing, it builds its own
   tiny BERT the same way (templated corpus, word-level vocabulary, a short MLM training) under
   ``sample_models/own-base/tiny-bert``.
2. Trains four GRADIENDs for grammatical number (singular vs plural) with
   ``gradiend_core.trainer.Trainer.for_masked_lm``: ``own-unpruned``, ``own-pre-pruned``,
   ``own-post-pruned`` and ``own-pre-post-pruned``. Each directory is the checkpoint, flat
   (``config.json``, weights, mapping files, ``training.json``, ``gradiend_context.json``,
   ``validation_gradients.safetensors`` and, when pre-pruned, ``pre_prune.safetensors``).
3. Evaluates every encoder on a held-out test split, checks that the reference package loads
   every checkpoint with the same forward output and that the post-pruned samples equal
   ``prune(topk=0.05, part="decoder-weight")`` of their unpruned counterparts, measures what
   that cut costs on the saved validation gradients, and writes its section of
   ``sample_models/README.md`` (between ``<!-- own-samples:begin -->`` and
   ``<!-- own-samples:end -->``; the rest of the README is left alone).

Paths stored in the checkpoints (``metadata.base_model``, ``training_args.output_dir``) are
relative to the repository root: the script changes into it first.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = SAMPLES_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from gradiend_core import ParamMappedGradiendModel, read_checkpoint  # noqa: E402
from gradiend_core.trainer import (  # noqa: E402
    Example,
    PostPruneConfig,
    PrePruneConfig,
    Trainer,
    TrainingArguments,
    cut_cost,
    load_pre_prune_record,
    load_validation_record,
)

SEED = 0
SHARED_BASE = "sample_models/base/tiny-bert"  # built by sample_models/build_samples.py
OWN_BASE = "sample_models/own-base/tiny-bert"  # built here only when SHARED_BASE is missing
README = SAMPLES_DIR / "README.md"
BEGIN, END = "<!-- own-samples:begin -->", "<!-- own-samples:end -->"

# ------------------------------------------------------------------ the toy language (as build_samples.py)
SINGULAR_NOUNS = ["cat", "dog", "bird", "horse", "child", "doctor", "nurse", "teacher", "student", "farmer"]
PLURAL_NOUNS = ["cats", "dogs", "birds", "horses", "children", "doctors", "nurses", "teachers", "students", "farmers"]
SINGULAR_VERBS = ["runs", "sleeps", "eats", "sings", "plays", "jumps"]
PLURAL_VERBS = ["run", "sleep", "eat", "sing", "play", "jump"]
ADJECTIVES = ["happy", "tired", "hungry", "small", "big", "old", "young", "busy", "kind", "sad", "quiet", "calm"]
ADVERBS = ["today", "now", "here", "again", "outside", "quickly"]
MALE = [
    "the king",
    "the man",
    "the boy",
    "the father",
    "the brother",
    "the son",
    "the uncle",
    "the husband",
    "the prince",
    "john",
    "peter",
    "tom",
]
FEMALE = [
    "the queen",
    "the woman",
    "the girl",
    "the mother",
    "the sister",
    "the daughter",
    "the aunt",
    "the wife",
    "the princess",
    "mary",
    "anna",
    "lisa",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# The adjective (copula sentences) or adverb (verb sentences) decides the split, so validation and
# test sentences use words never seen in GRADIEND training.
ADJ_SPLIT = {a: ("train" if i < 8 else "validation" if i < 10 else "test") for i, a in enumerate(ADJECTIVES)}
ADV_SPLIT = {a: ("train" if i < 4 else "validation" if i < 5 else "test") for i, a in enumerate(ADVERBS)}

GRADIEND_ARGS = dict(learning_rate=1e-3, max_steps=300, train_batch_size=8, eval_steps=25, seed=SEED)
PRE = PrePruneConfig(n_samples=16, topk=0.1, seed=SEED)
POST = PostPruneConfig(topk=0.05, part="decoder-weight")
SAMPLES: list[tuple[str, object, object, str]] = [
    ("own-unpruned", None, None, "no pruning"),
    (
        "own-pre-pruned",
        PRE,
        None,
        "pre-pruned to the top 10 % by absolute mean alternative gradient over 16 examples, then trained",
    ),
    ("own-post-pruned", None, POST, "trained unpruned, then post-pruned to the top 5 % by absolute decoder weight"),
    ("own-pre-post-pruned", PRE, POST, "pre-pruned to 10 %, trained, then post-pruned to 5 % of that"),
]
#: Validation gradients saved per sample: as many as keep the record under ~3 MB, at most 32.
VALIDATION_BYTES = 3 * 1024 * 1024


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)


# ------------------------------------------------------------------ base model
def build_own_base() -> None:
    """A tiny BERT trained on the toy language, the recipe of build_samples.py (shorter)."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    rng = random.Random(SEED)

    def sentence() -> str:
        k = rng.random()
        if k < 0.25:
            pl = rng.random() < 0.5
            noun = rng.choice(PLURAL_NOUNS if pl else SINGULAR_NOUNS)
            return (
                f"the {noun} {'are' if pl else 'is'} {'very ' if rng.random() < 0.5 else ''}{rng.choice(ADJECTIVES)} ."
            )
        if k < 0.5:
            i, j, pl = rng.randrange(10), rng.randrange(6), rng.random() < 0.5
            noun, verb = (PLURAL_NOUNS[i], PLURAL_VERBS[j]) if pl else (SINGULAR_NOUNS[i], SINGULAR_VERBS[j])
            return f"the {noun} {verb} {rng.choice(ADVERBS)} ."
        male = rng.random() < 0.5
        return (
            f"{rng.choice(MALE if male else FEMALE)} {rng.choice(['said', 'thinks'])} that "
            f"{'he' if male else 'she'} is {rng.choice(ADJECTIVES)} ."
        )

    corpus = [sentence() for _ in range(6000)]
    vocab = SPECIAL_TOKENS + sorted({w for s in corpus for w in s.split()})
    out = REPO_ROOT / OWN_BASE
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=256)
    torch.manual_seed(SEED)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=256,
            type_vocab_size=1,
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    steps = 1500
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps))
    agreement = torch.tensor(tok.convert_tokens_to_ids(["is", "are", "he", "she"] + SINGULAR_VERBS + PLURAL_VERBS))
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(steps):
        enc = tok([corpus[rng.randrange(len(corpus))] for _ in range(32)], padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == tok.pad_token_id)
        r = torch.rand(ids.shape, generator=gen)
        chosen = ((r < 0.15) | (torch.isin(ids, agreement) & (r < 0.5))) & ~special
        labels = ids.masked_fill(~chosen, -100)
        loss = model(
            input_ids=ids.masked_fill(chosen, tok.mask_token_id), attention_mask=enc["attention_mask"], labels=labels
        ).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)


def base_model_dir() -> str:
    shared = REPO_ROOT / SHARED_BASE
    if all((shared / f).is_file() for f in ("config.json", "model.safetensors", "vocab.txt")):
        return SHARED_BASE
    print(f"{SHARED_BASE} is missing; building {OWN_BASE} ...", flush=True)
    build_own_base()
    return OWN_BASE


# ------------------------------------------------------------------ GRADIEND data
def number_examples() -> dict[str, list[Example]]:
    """Grammatical number, two templates, targets per example:

    * ``the cat [MASK] happy .`` -> ``is`` (singular) / ``are`` (plural),
    * ``the cat [MASK] today .`` -> ``runs`` (singular) / ``run`` (plural), any of six verbs.

    The alternative is the other number's form of the same word (``are``, ``run``), which is why
    the trainer takes targets per example rather than one token per class.
    """
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for sg, pl in zip(SINGULAR_NOUNS, PLURAL_NOUNS):
        for adj in ADJECTIVES:
            for very in ("", "very "):
                split = splits[ADJ_SPLIT[adj]]
                split.append(Example(f"the {sg} [MASK] {very}{adj} .", "is", "are", "singular"))
                split.append(Example(f"the {pl} [MASK] {very}{adj} .", "are", "is", "plural"))
        for adv in ADVERBS:
            for vs, vp in zip(SINGULAR_VERBS, PLURAL_VERBS):
                split = splits[ADV_SPLIT[adv]]
                split.append(Example(f"the {sg} [MASK] {adv} .", vs, vp, "singular"))
                split.append(Example(f"the {pl} [MASK] {adv} .", vp, vs, "plural"))
    return splits


def check_vocabulary(tokenizer) -> None:
    vocab = set(tokenizer.get_vocab())
    words = set(
        SINGULAR_NOUNS
        + PLURAL_NOUNS
        + SINGULAR_VERBS
        + PLURAL_VERBS
        + ADJECTIVES
        + ADVERBS
        + ["the", "is", "are", "very", "."]
    )
    missing = sorted(words - vocab)
    if missing:
        raise SystemExit(
            f"the base model's vocabulary lacks {missing}; rebuild it with sample_models/build_samples.py."
        )


# ------------------------------------------------------------------ checks
def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def reference_loads_equal(path: Path) -> bool:
    from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

    ref = Ref.from_pretrained(str(path))
    ours = ParamMappedGradiendModel.from_pretrained(path)
    x = torch.randn(4, ours.input_dim, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        same = torch.allclose(ref(x), ours(x), rtol=0, atol=1e-6)
    return bool(same and np.array_equal(ref._get_base_global_index_map().numpy(), ours.mapping.base_global_index()))


def post_prune_matches(unpruned: str, post: str) -> bool:
    a = ParamMappedGradiendModel.from_pretrained(SAMPLES_DIR / unpruned).prune(topk=POST.topk, part=POST.part)
    b = ParamMappedGradiendModel.from_pretrained(SAMPLES_DIR / post)
    return a.input_dim == b.input_dim and all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ------------------------------------------------------------------ README section
def human(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def write_readme_section(facts: dict[str, object]) -> None:
    rows = []
    for name, _, _, desc in SAMPLES:
        r = facts["samples"][name]
        after = "-" if r["final_val"] is None else f"{r['final_val']:.6f}"
        rows.append(
            f"| `{name}/` | {desc} | {r['input_dim']:,} | {r['step0']:.4f} | {r['best']:.6f} (step {r['best_step']}) | "
            f"{after} | {r['test']:.6f} | {r['n_val_saved']} | {human(r['bytes'])} | {r['seconds']:.0f} s |"
        )
    cc = facts["cut_cost"]
    text = f"""{BEGIN}
## Samples built by gradiend_core's own trainer (`own-*`)

Rebuild (about {max(1, round(facts["total_seconds"] / 60))} min on 2 CPU cores, no network; \
this section is rewritten by the script):

```bash
python sample_models/build_own_samples.py
```

Trained with `gradiend_core.trainer.Trainer.for_masked_lm` on the tiny BERT `{facts["base"]}`
(`model.safetensors` sha256 `{facts["base_sha"]}`), feature grammatical number
(`singular` -> +1, `plural` -> -1), source `alternative`, target `diff`, mapped parameters
`bert.*` ({facts["unpruned"]:,} weights; the MLM head is left out). Examples: `the cat [MASK] happy .`
(is / are) and `the cat [MASK] today .` (runs / run, six verbs); {facts["n_train"]} training,
{facts["n_val"]} validation and {facts["n_test"]} test sentences, split by adjective/adverb so that
validation and test words never occur in training.
`TrainingArguments({", ".join(f"{k}={v!r}" for k, v in GRADIEND_ARGS.items())})`,
pre-pruning `{PRE}`, post-pruning `{POST}`.

| sample | pruning | input_dim | correlation at step 0 | best validation correlation | after post-pruning \
| test correlation | validation gradients saved | size | build |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

- Correlations are Pearson correlations of the encoder output with the +-1 class labels
  (`training.json` -> `training_stats.scores`, `best_score_checkpoint`; *after post-pruning*
  is `training.json` -> `post_prune.validation_correlation`, measured on the pruned model).
  *Test*: the saved model on the test split. The random encoder at step 0 separates the classes
  only weakly; training brings the correlation close to 1 within a few dozen steps.
- Every sample loads in the reference package (`gradiend.model.param_mapped.ParamMappedGradiendModel.from_pretrained`)
  with the same forward output: **{facts["ref_ok"]}**. `prune(topk=0.05, part="decoder-weight")` of
  `own-unpruned` equals `own-post-pruned`, and of `own-pre-pruned` equals `own-pre-post-pruned`: **{facts["post_ok"]}**.
- What that 5 % cut costs on `own-unpruned`'s saved validation gradients (`cut_cost`):
  pruned-vs-unpruned encoder correlation {cc["encoder_correlation"]:.6f} (pre-activations
  {cc["preactivation_correlation"]:.4f}), label correlation \
{cc["label_correlation_before"]:.6f} -> {cc["label_correlation_after"]:.6f},
  class separation (Cohen's d of the pre-activations) \
{cc["preactivation_separation_before"]:.2f} -> {cc["preactivation_separation_after"]:.2f}
  (retained {cc["separation_retained"]:.3f}).
- Pre- vs post-pruning: of the {facts["post_k"]:,} dimensions `own-post-pruned` keeps, {facts["recall"]:.1%} are
  among the {facts["pre_k"]:,} that pre-pruning keeps in `own-pre-pruned` (`load_pre_prune_record`).
- Layout: each directory is the checkpoint (`TrainingArguments(output_dir=sample_models/<name>)`);
  `pre_prune.safetensors` holds `importance` (float32, {facts["unpruned"]:,}) and `kept` (int64);
  `validation_gradients.safetensors` holds `gradients` (float32, n x input_dim), `labels` and, for
  pruned models, `base_global_index` (fewer rows for the unpruned models, to stay under ~5 MB).
{END}
"""
    old = README.read_text(encoding="utf-8") if README.exists() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text.rstrip("\n") + old[old.index(END) + len(END) :]
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + text
    README.write_text(new, encoding="utf-8")


# ------------------------------------------------------------------ main
def main() -> None:
    t_start = time.time()
    os.chdir(REPO_ROOT)
    seed_everything(SEED)
    from gradiend_core.gradients.masked_lm import load_masked_lm

    base_rel = base_model_dir()
    base, tokenizer = load_masked_lm(base_rel)
    check_vocabulary(tokenizer)
    data = number_examples()
    facts: dict[str, object] = {
        "base": base_rel,
        "samples": {},
        "n_train": len(data["train"]),
        "n_val": len(data["validation"]),
        "n_test": len(data["test"]),
    }
    facts["base_sha"] = hashlib.sha256((REPO_ROOT / base_rel / "model.safetensors").read_bytes()).hexdigest()[:16]
    unpruned_len = sum(p.numel() for n, p in base.named_parameters() if n.startswith("bert."))
    facts["unpruned"] = unpruned_len
    for name, pre, post, _ in SAMPLES:
        print(f"training {name} ...", flush=True)
        out = SAMPLES_DIR / name
        if out.exists():
            shutil.rmtree(out)
        seed_everything(SEED)
        final_dim = unpruned_len
        if pre is not None:
            final_dim = int(np.ceil(pre.topk * final_dim))
        if post is not None:
            final_dim = int(np.ceil(post.topk * final_dim))
        n_val = int(min(32, max(2, VALIDATION_BYTES // (4 * final_dim))) // 2 * 2)
        args = TrainingArguments(
            output_dir=f"sample_models/{name}",
            pre_prune_config=pre,
            post_prune_config=post,
            save_validation_gradients=n_val,
            **GRADIEND_ARGS,
        )
        t0 = time.time()
        tr = Trainer.for_masked_lm(base, data["train"], tokenizer=tokenizer, eval_data=data["validation"], args=args)
        tr.train()
        seconds = time.time() - t0
        training = read_checkpoint(out).side_files["training.json"]
        model = tr.get_model()
        test = Trainer.for_masked_lm(base, data["train"], tokenizer=tokenizer, eval_data=data["test"], args=args)
        facts["samples"][name] = {
            "input_dim": model.gradiend.input_dim,
            "step0": training["training_stats"]["scores"]["0"],
            "best": training["best_score_checkpoint"]["correlation"],
            "best_step": training["best_score_checkpoint"]["global_step"],
            "final_val": (training.get("post_prune") or {}).get("validation_correlation"),
            "test": test.evaluate_encoder(model)["correlation"],
            "n_val_saved": n_val,
            "bytes": dir_size(out),
            "seconds": seconds,
        }
        print(f"  {facts['samples'][name]}", flush=True)

    facts["ref_ok"] = all(reference_loads_equal(SAMPLES_DIR / name) for name, _, _, _ in SAMPLES)
    facts["post_ok"] = post_prune_matches("own-unpruned", "own-post-pruned") and post_prune_matches(
        "own-pre-pruned", "own-pre-post-pruned"
    )
    data_u = read_checkpoint(SAMPLES_DIR / "own-unpruned")
    keep = ParamMappedGradiendModel.from_checkpoint_data(data_u).select(topk=POST.topk, part=POST.part).keep
    facts["cut_cost"] = cut_cost(data_u, keep, load_validation_record(SAMPLES_DIR / "own-unpruned")).to_dict()
    record = load_pre_prune_record(SAMPLES_DIR / "own-pre-pruned")
    post_g = ParamMappedGradiendModel.from_pretrained(SAMPLES_DIR / "own-post-pruned").mapping.base_global_index()
    facts["recall"] = float(np.isin(post_g, record.kept_base_global()).mean())
    facts["post_k"], facts["pre_k"] = int(post_g.size), int(record.kept.size)
    facts["total_seconds"] = time.time() - t_start
    write_readme_section(facts)
    print(
        f"reference loads every sample with equal output: {facts['ref_ok']}; post-prune == prune(): {facts['post_ok']}"
    )
    print(f"cut cost: {facts['cut_cost']}")
    print(f"done in {facts['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
