"""Which base-global index space a checkpoint's map is over, and why two maps do not share one.

Base-global indices do not change when a model is pruned, so a pre-pruned and an unpruned model of
one base compare correctly - but only models whose param_maps list the same parameters with the
same shapes share that space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .param_map import ParamMap

__all__ = [
    "BaseSignature",
    "Incompatibility",
    "base_signature",
    "compatibility_problems",
]


@dataclass(frozen=True)
class BaseSignature:
    """What defines a base-global index space.

    Attributes:
        base_model: ``metadata.base_model`` (or ``base_model_id``), ``None`` if not recorded.
        params: ``(name, shape)`` of every mapped parameter, in map order.
    """

    base_model: str | None
    params: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def unpruned_length(self) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) if s else 1 for _, s in self.params))


def base_signature(param_map: ParamMap, metadata: Mapping[str, Any]) -> BaseSignature:
    """The base-global space of a checkpoint (from its map and ``config.json`` metadata)."""
    base = metadata.get("base_model") or metadata.get("base_model_id")
    return BaseSignature(str(base) if base is not None else None, tuple((e.name, tuple(e.shape)) for e in param_map))


@dataclass(frozen=True)
class Incompatibility:
    """Why one model does not compare cleanly with the reference model (the first one).

    Attributes:
        model, reference: the two labels.
        kind: ``"params"`` - the param_maps differ (names, order or shapes), so base-global indices
            mean different entries and the model must be left out; ``"base_model"`` - the maps
            match but ``metadata.base_model`` differs, so indices line up but index another
            model's weights (a warning).
        message: one sentence naming both models and the first difference.
    """

    model: str
    reference: str
    kind: str
    message: str


def compatibility_problems(signatures: Mapping[str, BaseSignature]) -> list[Incompatibility]:
    """Why models cannot be compared in one base-global space (empty list: they can).

    Every model is compared with the first one. A base model recorded by one checkpoint but not
    the other is not a problem by itself.
    """
    items = list(signatures.items())
    if len(items) < 2:
        return []
    ref_name, ref = items[0]
    problems = []
    for name, sig in items[1:]:
        if sig.params != ref.params:
            problems.append(
                Incompatibility(
                    name,
                    ref_name,
                    "params",
                    f"{name!r} and {ref_name!r} map different base-model parameters: "
                    f"{_first_difference(ref.params, sig.params)}",
                )
            )
        if ref.base_model and sig.base_model and ref.base_model != sig.base_model:
            problems.append(
                Incompatibility(
                    name,
                    ref_name,
                    "base_model",
                    f"{name!r} was trained on base model {sig.base_model!r} but {ref_name!r} on {ref.base_model!r}.",
                )
            )
    return problems


def _first_difference(a, b) -> str:
    names_a, names_b = [n for n, _ in a], [n for n, _ in b]
    shapes_a, shapes_b = dict(a), dict(b)
    only_a = [n for n in names_a if n not in shapes_b]
    only_b = [n for n in names_b if n not in shapes_a]
    if only_a:
        return f"{only_a[0]!r} is only in the first ({len(only_a)} such parameter(s))."
    if only_b:
        return f"{only_b[0]!r} is only in the second ({len(only_b)} such parameter(s))."
    for n in names_a:
        if shapes_a[n] != shapes_b[n]:
            return f"{n!r} has shape {list(shapes_a[n])} in the first and {list(shapes_b[n])} in the second."
    return "the same parameters in another order, so base-global indices differ."
