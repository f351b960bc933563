"""Build ``sample_models/place-unpruned``: a sample whose pruning costs something.

Run from anywhere (no network, about a minute on 2 CPU cores)::

    python sample_models/build_curve_sample.py

The bundled samples of ``build_samples.py`` encode features whose classes differ in the target
word (is / are, he / she): one gradient entry of that word's embedding row already separates the
classes, every encoder reaches correlation 1 and no cut looks costly. Here both classes share
their target words' roles and the class lies in *which* word it is:

* feature **place** (``farm`` vs ``town``): the masked word is a noun, ``the [MASK] is happy .``,
  with label ``horse``, ``dog``, ``cat``, ``bird``, ``farmer`` (farm) or ``teacher``, ``student``,
  ``child``, ``doctor``, ``nurse`` (town), singular or plural (``the [MASK] are happy .``); the
  alternative is a noun of the other class with the same number. The tiny BERT never saw the two
  groups used differently, so the encoder must pick the class out of ten nouns' gradients spread
  over many dims;
* validation holds four nouns never seen in training (``bird``, ``cat``, ``nurse``, ``child``)
  besides the training nouns with unseen adjectives, so the encoder cannot be perfect.

Steps, deterministic (fixed seeds, one torch thread):

1. Writes the labelled data files of the reference's text layout to ``sample_models/data/``:
   ``place.csv`` (this sample) and ``number.csv`` / ``gender.csv`` (the data ``build_samples.py``
   trains ``number-*`` and ``gender-unpruned`` on), so that gradients can be computed for every
   reference-trained sample (``gradiend-core curve sample_models/number-unpruned --data
   sample_models/data/number.csv``).
2. Trains ``place-unpruned`` with the reference's trainer (``gradiend.TextPredictionTrainer``
   reading ``place.csv``) on ``sample_models/base/tiny-bert``, with the other samples' arguments.
3. Measures its pruning curves with gradiend_core (gradients computed from the base model and
   ``place.csv``'s validation split) and writes its section of ``sample_models/README.md``
   (between ``<!-- curve-sample:begin -->`` and ``<!-- curve-sample:end -->``).

No ``validation_gradients.safetensors`` is saved with it: the record format fits any checkpoint,
but the validation split's 104 gradients over 89,216 dims are 35 MiB (a few rows still 1.4 MiB
each), 25 times the checkpoint; ``place.csv`` (13 KB) recomputes them in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = SAMPLES_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(SAMPLES_DIR))

import build_samples as bs  # noqa: E402
import pandas as pd  # noqa: E402
from gradiend import TextPredictionTrainer, TrainingArguments  # noqa: E402

NAME = "place-unpruned"
DATA_DIR_REL = "sample_models/data"
CLASSES = ["farm", "town"]
FARM = ["horse", "dog", "cat", "bird", "farmer"]
TOWN = ["teacher", "student", "child", "doctor", "nurse"]
PLURAL = dict(zip(bs.SINGULAR_NOUNS, bs.PLURAL_NOUNS))
#: Nouns whose every row (but the test adjectives') goes to validation: never seen in training.
HELD_OUT = ("bird", "cat", "nurse", "child")
LEARNING_RATE = 1e-3
README = SAMPLES_DIR / "README.md"
BEGIN, END = "<!-- curve-sample:begin -->", "<!-- curve-sample:end -->"
SHARES = (0.0001, 0.001, 0.01, 0.05, 1.0)


def place_data() -> pd.DataFrame:
    """The place feature in the reference's merged layout with explicit alternatives.

    Columns ``masked``, ``label``, ``label_class``, ``alternative``, ``alternative_class``,
    ``split``; the alternative of the ``i``-th noun with the ``j``-th adjective is the other
    class's ``(i + j) mod 5``-th noun, in the same number.
    """
    rows = []
    for cls, own, other, other_cls in (("farm", FARM, TOWN, "town"), ("town", TOWN, FARM, "farm")):
        for i, noun in enumerate(own):
            for plural in (False, True):
                word = PLURAL[noun] if plural else noun
                verb = "are" if plural else "is"
                for j, adj in enumerate(bs.ADJECTIVES):
                    alt = other[(i + j) % len(other)]
                    split = bs.ADJ_SPLIT[adj]
                    if noun in HELD_OUT and split == "train":
                        split = "validation"
                    rows.append(
                        dict(
                            masked=f"the [MASK] {verb} {adj} .",
                            label=word,
                            label_class=cls,
                            alternative=PLURAL[alt] if plural else alt,
                            alternative_class=other_cls,
                            split=split,
                        )
                    )
    return pd.DataFrame(rows)


def write_data() -> dict[str, Path]:
    out = REPO_ROOT / DATA_DIR_REL
    out.mkdir(parents=True, exist_ok=True)
    files = {"place": out / "place.csv", "number": out / "number.csv", "gender": out / "gender.csv"}
    place_data().to_csv(files["place"], index=False)
    bs.number_data().to_csv(files["number"], index=False)
    bs.gender_data().to_csv(files["gender"], index=False)
    return files


def train() -> dict[str, object]:
    out_rel = f"sample_models/{NAME}"
    if (REPO_ROOT / out_rel).exists():
        shutil.rmtree(REPO_ROOT / out_rel)
    seed_runs = f"{bs.SEED_RUNS_REL}/{NAME}"
    bs.seed_everything(bs.SEED)
    try:
        args = TrainingArguments(**bs.GRADIEND_ARGS, learning_rate=LEARNING_RATE, seed_runs_dir=seed_runs)
        trainer = TextPredictionTrainer(
            model=bs.BASE_MODEL_REL, data=f"{DATA_DIR_REL}/place.csv", target_classes=CLASSES, args=args
        )
        start = time.time()
        trainer.train(output_dir=out_rel)
        seconds = time.time() - start
        report = json.loads((Path(seed_runs) / "seed_report.json").read_text())
        test = trainer.evaluate_encoder(split="test", use_cache=False)
        val = trainer.evaluate_encoder(split="validation", use_cache=False)
    finally:
        shutil.rmtree(REPO_ROOT / bs.SEED_RUNS_REL, ignore_errors=True)
    training = json.loads((REPO_ROOT / out_rel / "training.json").read_text())
    return {
        "seconds": seconds,
        "seeds_tried": report["seeds_tried"],
        "seed": report["best_seed"],
        # training_stats.correlation is the last evaluation; the saved model is the best one
        "val_correlation": training["best_score_checkpoint"]["correlation"],
        "val_correlation_ref": val["correlation"],
        "best_step": training["best_score_checkpoint"]["global_step"],
        "test_correlation": test["correlation"],
        "args": f"TrainingArguments({', '.join(f'{k}={v!r}' for k, v in bs.GRADIEND_ARGS.items())}, "
        f"learning_rate={LEARNING_RATE:g}, seed_runs_dir='{seed_runs}')",
    }


def measure(data_file: Path) -> dict[str, object]:
    """Curves of the four parts on the validation split, from gradients computed by gradiend_core."""
    from gradiend.model.param_mapped import ParamMappedGradiendModel

    from gradiend_core.checkpoint import read_checkpoint
    from gradiend_core.curve.checkpoint_curves import checkpoint_curves
    from gradiend_core.curve.measures import smallest_topk_for
    from gradiend_core.gradients.eval_gradients import compute_eval_gradients
    from gradiend_core.selection.rule import resolve_k

    data = read_checkpoint(SAMPLES_DIR / NAME)
    grads = compute_eval_gradients(data, data_file, use_cache=False)
    n = data.architecture.input_dim
    ks = sorted({resolve_k(s, n) for s in SHARES})
    curves = {}
    for k in ks:  # each share exactly (a curve computes its asked-for k exactly)
        for c in checkpoint_curves(data, grads, points=24, selection_k=k):
            curves.setdefault(c.part, {})[k] = c.at(k)["label_correlation"]
            curves[c.part]["full"] = c.full["label_correlation"]
            curves[c.part]["k99"] = smallest_topk_for(c, 0.99)
            curves[c.part]["k90"] = smallest_topk_for(c, 0.90)
    ref = ParamMappedGradiendModel.from_pretrained(str(SAMPLES_DIR / NAME))
    return {
        "n": n,
        "m": grads.n_samples,
        "full": next(iter(curves.values()))["full"],
        "split": grads.split,
        "ks": ks,
        "curves": curves,
        "ref_input_dim": int(ref.input_dim),
        "bytes": sum(f.stat().st_size for f in (SAMPLES_DIR / NAME).iterdir()),
    }


def write_readme(
    facts: dict[str, object], trained: dict[str, object], data_files: dict[str, Path], seconds: float
) -> None:
    df = place_data()
    counts = df["split"].value_counts().to_dict()
    n = facts["n"]
    head = " | ".join(f"top {k:,} ({k / n:.2%})" if k < n else f"all {n:,}" for k in facts["ks"])
    rows = "\n".join(
        f"| {part} | " + " | ".join(f"{v[k]:.3f}" for k in facts["ks"]) + f" | {v['k90']:,} | {v['k99']:,} |"
        for part, v in facts["curves"].items()
    )
    text = f"""{BEGIN}
## A sample where pruning costs something: `{NAME}/`

Rebuild (about {max(1, round(seconds / 60))} min on 2 CPU cores, no network; this section is rewritten by the script):

```bash
python sample_models/build_curve_sample.py
```

Trained by the reference's trainer (`gradiend.TextPredictionTrainer`, reading
`{DATA_DIR_REL}/place.csv`) on `{bs.BASE_MODEL_REL}` with the other samples' arguments:
`{trained["args"]}`; seed {trained["seed"]} (tried {", ".join(map(str, trained["seeds_tried"]))}).
Feature **place**, `farm` (+1) vs `town` (-1): the masked word is a noun,
`the [MASK] is <adj> .` / `the [MASK] are <adj> .`, label one of {", ".join(FARM)} (farm) or
{", ".join(TOWN)} (town), singular or plural, with an explicit alternative of the other class
(`alternative`, `alternative_class` columns). Both classes predict nouns after the same words,
so no single gradient entry gives the class away, and the nouns {", ".join(HELD_OUT)} occur only
in validation (and test): the encoder must generalise. {len(df)} rows ({counts.get("train", 0)} train,
{counts.get("validation", 0)} validation, {counts.get("test", 0)} test); {facts["bytes"] / 1024**2:.2f} MiB,
input_dim {n:,} (all `bert.*` weights).

- Validation correlation of the saved model: {trained["val_correlation"]:.4f} (`training.json` ->
  `best_score_checkpoint`, step {trained["best_step"]}); the reference's `evaluate_encoder(split="validation")`
  gives {trained["val_correlation_ref"]:.6f} and gradiend_core's curve (all dims) {facts["full"]:.6f}. Test correlation
  (`evaluate_encoder(split="test")`): {trained["test_correlation"]:.4f}. (`training_stats.correlation`,
  which `build_samples.py` reports, is the last evaluation, not the saved model's.)
- Pruning curve (`gradiend-core curve sample_models/{NAME} --data {DATA_DIR_REL}/place.csv`): the
  reference's label correlation of the encoder pruned to the top k of each part, on the
  {facts["m"]} gradients of the {facts["split"]} split computed from the base model, and the smallest
  measured topk that keeps 90 % / 99 % of the full model's correlation:

| part | {head} | topk for 90 % | topk for 99 % |
| --- | {" | ".join("---" for _ in facts["ks"])} | --- | --- |
{rows}

- No `validation_gradients.safetensors`: {facts["m"]} gradients over {n:,} dims would be
  {facts["m"] * n * 4 / 1024**2:.0f} MiB; the data file recomputes them (and they are cached in the user cache
  directory).

### Labelled data files (`{DATA_DIR_REL}/`)

In the reference's text-trainer layout (columns `masked` with `[MASK]`, `label`, `label_class`,
`split`; `place.csv` also `alternative`, `alternative_class`), for computing gradients of any
reference-trained sample (`--data` of `gradiend-core curve`, "Compute from a data file" in the
dashboard's *Pruning curve* view):

| file | rows | trains |
| --- | --- | --- |
| `place.csv` | {len(df)} | `{NAME}` (this script) |
| `number.csv` | {len(pd.read_csv(data_files["number"]))} | \
`number-unpruned`, `number-pre-pruned`, `number-post-pruned` (`build_samples.py`) |
| `gender.csv` | {len(pd.read_csv(data_files["gender"]))} | `gender-unpruned` (`build_samples.py`) |
{END}
"""
    old = README.read_text(encoding="utf-8") if README.exists() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text.rstrip("\n") + old[old.index(END) + len(END) :]
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + text
    README.write_text(new, encoding="utf-8")


def main() -> int:
    start = time.time()
    os.chdir(REPO_ROOT)
    print("[1/3] data files", flush=True)
    files = write_data()
    print(f"[2/3] training {NAME} with the reference trainer", flush=True)
    trained = train()
    print(
        f"  validation correlation {trained['val_correlation']:.4f}, test {trained['test_correlation']:.4f}", flush=True
    )
    print("[3/3] pruning curves", flush=True)
    facts = measure(files["place"])
    for part, v in facts["curves"].items():
        print(f"  {part:15s} " + "  ".join(f"{k}:{v[k]:.3f}" for k in facts["ks"]) + f"  k90={v['k90']} k99={v['k99']}")
    write_readme(facts, trained, files, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
