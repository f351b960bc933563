"""Training examples of the two feature classes, stratified draws and class-pure batches.

An :class:`Example` is one input with two targets: ``factual`` (the target of its own class,
e.g. ``"is"`` after ``"the cat [MASK] happy ."``) and ``alternative`` (the other class's, e.g.
``"are"``). The loss function decides what ``inputs`` and the targets are; the trainer only
groups examples by ``feature_class``.

Labels follow the reference: the first class encodes ``+1``, the second ``-1``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Example", "epoch_batches", "label_of", "resolve_classes", "split_validation", "stratified_indices"]


@dataclass(frozen=True)
class Example:
    """One training or validation example.

    Attributes:
        inputs: what the loss function feeds the base model (text, a tensor, a dict, ...).
        factual: target of the example's own class.
        alternative: target of the other class.
        feature_class: name of the example's class (one of the trainer's two classes).
    """

    inputs: Any
    factual: Any
    alternative: Any
    feature_class: str


def resolve_classes(examples: Sequence[Example], classes: Sequence[str] | None = None) -> tuple[str, str]:
    """The two class names, in label order (first -> +1, second -> -1).

    Args:
        examples: training examples.
        classes: explicit order; default: order of first appearance in ``examples``.

    Raises:
        ValueError: when there are not exactly two classes, or an example's class is not one of
            ``classes``.
    """
    seen: list[str] = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise TypeError(
                f"training data item {i} is a {type(ex).__name__}; wrap each item as "
                "gradiend_core.trainer.Example(inputs, factual, alternative, feature_class)."
            )
        if ex.feature_class not in seen:
            seen.append(ex.feature_class)
    if classes is None:
        if len(seen) != 2:
            raise ValueError(
                f"a GRADIEND learns one feature from two classes; the training data has {len(seen)} "
                f"({', '.join(map(repr, seen)) or 'none'})."
            )
        return seen[0], seen[1]
    cls = tuple(classes)
    if len(cls) != 2 or cls[0] == cls[1]:
        raise ValueError(f"classes must be two different class names, got {classes!r}.")
    extra = [c for c in seen if c not in cls]
    if extra:
        raise ValueError(f"the data holds classes {extra!r} that are not in classes={list(cls)!r}.")
    missing = [c for c in cls if c not in seen]
    if missing:
        raise ValueError(f"class {missing[0]!r} has no training examples.")
    return cls[0], cls[1]


def label_of(feature_class: str, classes: tuple[str, str]) -> float:
    """``+1.0`` for the first class, ``-1.0`` for the second."""
    return 1.0 if feature_class == classes[0] else -1.0


def indices_by_class(examples: Sequence[Example], classes: tuple[str, str]) -> dict[str, list[int]]:
    """Positions of the examples of each class, in data order."""
    out: dict[str, list[int]] = {c: [] for c in classes}
    for i, ex in enumerate(examples):
        if ex.feature_class in out:
            out[ex.feature_class].append(i)
    return out


def stratified_indices(examples: Sequence[Example], classes: tuple[str, str], n: int, seed: int | None) -> list[int]:
    """``n`` example positions split evenly over the two classes (the reference's draw).

    Each class gets ``n // 2`` (the first class one more when ``n`` is odd). Each class pool is
    shuffled once with ``random.Random(seed)`` and its prefix taken, so a smaller ``n`` draws a
    subset of a larger one; a class with too few examples is repeated (drawn with replacement).

    Returns:
        Positions into ``examples``, shuffled.

    Raises:
        ValueError: when a class has no example.
    """
    rng = random.Random(seed)
    pools = indices_by_class(examples, classes)
    out: list[int] = []
    for i, c in enumerate(classes):
        need = n // 2 + (1 if i < n % 2 else 0)
        pool = list(pools[c])
        if not pool:
            raise ValueError(f"class {c!r} has no examples to draw from.")
        rng.shuffle(pool)
        if len(pool) >= need:
            out.extend(pool[:need])
        else:
            out.extend(pool)
            out.extend(rng.choices(pool, k=need - len(pool)))
    rng.shuffle(out)
    return out


def split_validation(
    examples: Sequence[Example], classes: tuple[str, str], fraction: float, seed: int | None
) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of each class (at least one example each) as a validation split.

    Returns:
        ``(train, validation)``.

    Raises:
        ValueError: when a class has fewer than two examples.
    """
    rng = random.Random(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for c, pool in indices_by_class(examples, classes).items():
        if len(pool) < 2:
            raise ValueError(f"class {c!r} has {len(pool)} example(s); give eval_data or at least 2 per class.")
        pool = list(pool)
        rng.shuffle(pool)
        k = max(1, int(round(fraction * len(pool))))
        val_idx.extend(pool[:k])
        train_idx.extend(pool[k:])
    return [examples[i] for i in sorted(train_idx)], [examples[i] for i in sorted(val_idx)]


def epoch_batches(
    examples: Sequence[Example], classes: tuple[str, str], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """One epoch of class-pure batches, alternating the two classes.

    Each class is shuffled and cut into batches of ``batch_size`` (the last one may be smaller);
    the class with fewer batches is cycled (reshuffled) until both have as many, so every epoch is
    balanced, as the reference's scheduler balances by oversampling.

    Returns:
        Batches of positions into ``examples``: ``[a0, b0, a1, b1, ...]``.
    """
    per_class: list[list[list[int]]] = []
    pools = indices_by_class(examples, classes)
    for c in classes:
        pool = list(pools[c])
        rng.shuffle(pool)
        per_class.append([pool[i : i + batch_size] for i in range(0, len(pool), batch_size)])
    n = max(len(b) for b in per_class)
    for c, batches in zip(classes, per_class):
        while len(batches) < n:
            pool = list(pools[c])
            rng.shuffle(pool)
            batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
        del batches[n:]
    out: list[list[int]] = []
    for a, b in zip(*per_class):
        out.extend([a, b])
    return out
