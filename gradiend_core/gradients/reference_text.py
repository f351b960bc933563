"""Labelled text data in the layout of ``gradiend``'s text trainer, and its masked-LM gradients.

The reference's ``TextPredictionTrainer`` (``gradiend`` 0.2.3) reads a table - a pandas
DataFrame, or a ``.csv`` / ``.parquet`` file, or a directory holding ``training.csv`` /
``training.parquet`` (``resolve_training_data_path``) - with one row per masked sentence:

* ``masked``: the sentence with the placeholder ``[MASK]`` where the target word goes;
* ``label``: the word of the row's own class there (the *factual* target);
* ``label_class``: the row's class;
* ``split`` (optional, ``train`` when absent): ``train``, ``validation`` (or ``val``), ``test``;
* optional ``alternative`` and ``alternative_class``: the other class's word for this row.
  Without them the alternative is the other class's word (the first ``label`` of that class),
  or the row's value in a column named after the other class (``merged_to_unified``).

This module turns such rows into :class:`~gradiend_core.gradients.data.Example` objects and
computes their gradients exactly as the reference's trainer does for its encoder evaluation
(``create_eval_data`` -> ``TextTrainingDataset._create_item`` -> ``forward`` ->
``extract_gradients``): the placeholder becomes the tokenizer's mask token, repeated once per
token of the target word; the text is tokenized with special tokens, truncated and padded to
``max_length=256`` (``padding="max_length"``); the labels are the target's token ids at the mask
positions and -100 elsewhere; the loss is the model's own masked-LM cross-entropy
(``model(input_ids, attention_mask, labels).loss``), with the base model in eval mode; the
gradient is taken of that loss with respect to the mapped parameters, in ``param_map`` order.

Labels follow ``create_training_data``: +1 for a row of the first class of the trained pair, -1
for the second; ``GradientTrainingDataset`` negates them when the encoded (source) gradient is
the alternative one, because the alternative gradient belongs to the other class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import CheckpointError
from .data import Example
from .gather import LossFn

__all__ = [
    "MASK_PLACEHOLDER",
    "MAX_LENGTH",
    "SPLITS",
    "eval_order",
    "mlm_item",
    "mlm_loss",
    "read_text_data",
    "reference_labels",
    "text_examples",
]

MASK_PLACEHOLDER = "[MASK]"
#: ``TextTrainingDataset``'s default ``max_length``: every example is padded to it.
MAX_LENGTH = 256
SPLITS = ("train", "validation", "test")
_SPLIT_NAMES = {"val": "validation", "validation": "validation", "train": "train", "test": "test"}


def read_text_data(path: str | Path) -> pd.DataFrame:
    """Read a labelled data table: ``.csv`` or ``.parquet``, or a directory with ``training.csv``
    or ``training.parquet`` (as ``gradiend``'s ``resolve_training_data_path`` does).

    Raises:
        CheckpointError: for a missing or unreadable file, another extension, or missing columns.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        found = [p / f"training{ext}" for ext in (".csv", ".parquet") if (p / f"training{ext}").is_file()]
        if not found:
            raise CheckpointError(
                f"{p}: no training.csv or training.parquet in this directory; give the data file itself."
            )
        p = found[0]
    if not p.is_file():
        raise CheckpointError(
            f"{p}: no such data file; give a .csv or .parquet with columns masked, label, label_class."
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            raise CheckpointError(f"{p}: unsupported data file type {suffix!r}; use .csv or .parquet.")
    except CheckpointError:
        raise
    except Exception as e:  # pandas raises its own parser errors
        raise CheckpointError(f"{p}: cannot read the data table ({type(e).__name__}: {e}).") from e
    missing = [c for c in ("masked", "label", "label_class") if c not in df.columns]
    if missing:
        raise CheckpointError(
            f"{p}: columns {missing} are missing; the data needs masked (a sentence with {MASK_PLACEHOLDER}), "
            f"label (the word there) and label_class (the row's class), and optionally split. Has: {list(df.columns)}."
        )
    return df


def _split_name(value: Any) -> str:
    s = str(value).lower()
    return _SPLIT_NAMES.get(s, s)


def _factual_casing(factual: str, alternative: str) -> str:
    """The alternative word in the factual word's casing (lower, UPPER or Title), as the reference
    writes alternatives (``apply_factual_casing``)."""
    if not factual or not alternative:
        return alternative
    if factual.islower():
        return alternative.lower()
    if factual.isupper():
        return alternative.upper()
    if factual[0].isupper() and (len(factual) == 1 or factual[1:].islower()):
        return alternative.title()
    return alternative


def _pair_rows(
    df: pd.DataFrame, classes: pd.Series, pair: tuple[str, str], split: str | Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """``(rows of pair's classes in the chosen splits, the chosen splits)`` (see :func:`text_examples`)."""
    splits = df["split"].map(_split_name) if "split" in df.columns else pd.Series(["train"] * len(df), index=df.index)
    in_pair = classes.isin(pair)
    if not in_pair.any():
        raise CheckpointError(
            f"the data has no rows of classes {list(pair)}: its classes are {', '.join(sorted(set(classes)))} "
            f"(splits {', '.join(sorted(set(splits)))}); pass two of those classes."
        )
    present = set(splits[in_pair])
    if split is None:
        chosen = next(([s] for s in ("validation", "test") if s in present), sorted(present))
    elif isinstance(split, str):
        chosen = sorted(present) if split == "all" else [_split_name(split)]
    else:
        chosen = [_split_name(s) for s in split]
    rows = df[in_pair & splits.isin(chosen)]
    if rows.empty:
        raise CheckpointError(
            f"the data has no rows of classes {list(pair)} in split {', '.join(chosen)} "
            f"(the rows of these classes are in splits {', '.join(sorted(present))}); pick one of those splits."
        )
    return rows, chosen


def text_examples(
    df: pd.DataFrame, pair: tuple[str, str], split: str | Sequence[str] | None = None
) -> tuple[list[Example], str]:
    """The rows of the trained pair's classes in ``split`` as examples, in data order.

    Args:
        df: the table (see the module docstring).
        pair: the two classes, first -> label +1.
        split: a split name, a list of them, ``"all"``, or ``None``: ``validation`` when the
            data has it (the split the reference's trainer evaluates on while training), else
            ``test``, else every row.

    Returns:
        ``(examples, split description)``; ``Example.inputs`` is the masked sentence.

    Raises:
        CheckpointError: when no row is left, or a row's alternative word cannot be found.
    """
    classes = df["label_class"].astype(str)
    rows, chosen = _pair_rows(df, classes, pair, split)
    explicit = "alternative" in df.columns and "alternative_class" in df.columns
    first_word = {}
    for c in pair:
        words = df.loc[classes == c, "label"].dropna()
        first_word[c] = str(words.iloc[0]) if len(words) else None
    out: list[Example] = []
    for i, row in rows.iterrows():
        own = str(row["label_class"])
        other = pair[1] if own == pair[0] else pair[0]
        factual = str(row["label"])
        if explicit:
            if pd.isna(row["alternative"]) or pd.isna(row["alternative_class"]):
                continue  # the reference drops rows without an alternative
            if str(row["alternative_class"]) != other:
                continue  # a transition to a third class is not part of the pair
            alternative = str(row["alternative"])
        elif other in df.columns and not pd.isna(row[other]):
            alternative = str(row[other])
        elif first_word[other] is not None:
            alternative = first_word[other]
        else:
            raise CheckpointError(f"row {i}: no word of class {other!r} in the data to use as the alternative.")
        out.append(Example(str(row["masked"]), factual, _factual_casing(factual, alternative), own))
    if not out:
        raise CheckpointError(f"no row of split {', '.join(chosen)} has an alternative of the other class.")
    return out, ", ".join(chosen)


def reference_labels(examples: Sequence[Example], pair: tuple[str, str], source: str) -> np.ndarray:
    """The reference's label of each example's encoded gradient, float64 ``(m,)``.

    +1 for the first class of ``pair``, -1 for the second; negated when ``source`` is
    ``alternative`` (``GradientTrainingDataset`` relabels the alternative gradient as the other
    class's).
    """
    lab = np.array([1.0 if ex.feature_class == pair[0] else -1.0 for ex in examples], dtype=np.float64)
    return -lab if source == "alternative" else lab


def eval_order(examples: Sequence[Example], pair: tuple[str, str], source: str) -> list[int]:
    """Which examples the reference's encoder evaluation encodes, in its order (repeats included).

    ``TextBatchedDatasetBase`` (batch size 1) groups the rows by class (``factual_id`` for the
    factual source, else the transition; groups in sorted key order, rows in data order) and
    takes row ``i`` from group ``i mod G`` at position ``i // G`` (wrapping around a smaller group),
    for as many rows as there are. With equally many rows per class every row is taken once;
    otherwise the larger class loses rows and the smaller repeats some.

    Returns:
        Positions into ``examples``.
    """
    if source == "factual":
        keys = sorted(set(ex.feature_class for ex in examples))
        key_of = {c: i for i, c in enumerate(keys)}
    else:  # feature_class_id: 0 for pair[0] -> pair[1], 1 for the reverse
        key_of = {pair[0]: 0, pair[1]: 1}
    groups: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(key_of[ex.feature_class], []).append(i)
    members = [groups[k] for k in sorted(groups)]
    out = []
    for idx in range(len(examples)):
        grp = members[idx % len(members)]
        out.append(grp[(idx // len(members)) % len(grp)])
    return out


def mlm_item(
    tokenizer: Any, masked: str, target: str, *, mask_placeholder: str = MASK_PLACEHOLDER, max_length: int = MAX_LENGTH
) -> dict[str, torch.Tensor]:
    """The reference's masked-LM item for one sentence and target word (``_create_item``).

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels``, each int64 ``(1, max_length)``.

    Raises:
        ValueError: for a sentence without a mask, or one whose mask falls beyond ``max_length``.
    """
    mask = tokenizer.mask_token
    if mask is None:
        raise ValueError("the tokenizer has no mask token; the reference's masked-LM items need one.")
    text = masked.replace(mask_placeholder, mask) if mask not in masked and mask_placeholder in masked else masked
    if mask not in text:
        raise ValueError(f"sentence {masked!r} holds no {mask_placeholder!r}; put it where the target word goes.")
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if not target_ids:
        raise ValueError(f"target {target!r} is no token of this tokenizer.")
    if text.count(mask) == 1:
        text = text.replace(mask, " ".join([mask] * len(target_ids)), 1)
    enc = tokenizer(
        text, return_tensors="pt", add_special_tokens=True, truncation=True, max_length=max_length, padding="max_length"
    )
    ids = enc["input_ids"]
    labels = torch.full_like(ids, -100)
    pos = (ids == tokenizer.convert_tokens_to_ids(mask)).nonzero(as_tuple=False)
    if pos.shape[0] == 0:
        raise ValueError(
            f"sentence {masked!r}: the mask lies beyond max_length={max_length} tokens; shorten the sentence."
        )
    for i, (b, p) in enumerate(pos.tolist()):
        labels[b, p] = target_ids[min(i, len(target_ids) - 1)]
    return {"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": labels}


def mlm_loss(tokenizer: Any, *, mask_placeholder: str = MASK_PLACEHOLDER, max_length: int = MAX_LENGTH) -> LossFn:
    """``(model, batch, which) -> loss`` for :class:`~gradiend_core.gradients.gather.GradientSource`:
    the masked-LM loss of one example's :func:`mlm_item` for its factual or alternative word."""

    def loss_fn(model: nn.Module, batch: list[Example], which: str) -> torch.Tensor:
        if len(batch) != 1:
            raise ValueError("the reference's evaluation takes one example per gradient; pass batches of one.")
        ex = batch[0]
        item = mlm_item(
            tokenizer,
            ex.inputs,
            ex.factual if which == "factual" else ex.alternative,
            mask_placeholder=mask_placeholder,
            max_length=max_length,
        )
        device = next(model.parameters()).device
        return model(**{k: v.to(device) for k, v in item.items()}).loss

    return loss_fn
