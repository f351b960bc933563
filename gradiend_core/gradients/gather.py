"""Base-model gradients gathered into a GRADIEND input vector.

``loss_fn(model, batch, which) -> scalar`` is the user's (or an adapter's) loss: ``batch`` is a
list of :class:`~gradiend_core.gradients.data.Example`, ``which`` is ``"factual"`` or
``"alternative"`` and says which target to score. The gradient of that loss with respect to the
mapped base-model parameters, gathered in param_map order, is one GRADIEND input vector.

Only the selected entries are kept: after pruning, a vector has the pruned ``input_dim``, so a
pre-pruned run never holds a full-size vector except while averaging the pre-prune importance.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..space.param_map import ParamMap
from .data import Example

__all__ = ["GradientSource", "LossFn", "needs", "pick", "resolve_params"]

LossFn = Callable[[nn.Module, list[Example], str], torch.Tensor]


def resolve_params(model: nn.Module, patterns: Sequence[str] | None) -> list[tuple[str, nn.Parameter]]:
    """The base-model parameters a GRADIEND maps, in ``named_parameters`` order.

    Args:
        model: the base model.
        patterns: parameter names or ``fnmatch`` wildcards (``"bert.encoder.*"``); ``None``
            selects every parameter with ``requires_grad``.

    Returns:
        ``(name, parameter)`` pairs (tied parameters appear once, under their first name).

    Raises:
        ValueError: when a pattern matches no parameter (the message lists a few names), or when
            nothing is selected.
    """
    named = list(model.named_parameters())
    if patterns is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        for pat in patterns:
            if not any(n == pat or fnmatch.fnmatchcase(n, pat) for n, _ in named):
                sample = ", ".join(n for n, _ in named[:4])
                raise ValueError(
                    f"params pattern {pat!r} matches no parameter of the base model (names look like: {sample}, ...)."
                )
        chosen = [(n, p) for n, p in named if any(n == pat or fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    if not chosen:
        raise ValueError("no base-model parameter selected; pass params=[...] with parameter names or wildcards.")
    return chosen


class GradientSource:
    """Computes GRADIEND input vectors for a base model and a loss function.

    Args:
        base_model: the base model; it is put in eval mode while gradients are taken (no dropout,
            so a vector depends on its examples only) and its previous mode is restored.
        loss_fn: ``(model, batch, which) -> scalar tensor``.
        params: ``(name, parameter)`` pairs from :func:`resolve_params`.
    """

    def __init__(self, base_model: nn.Module, loss_fn: LossFn, params: Sequence[tuple[str, nn.Parameter]]):
        self.base_model = base_model
        self.loss_fn = loss_fn
        self.params: dict[str, nn.Parameter] = dict(params)
        self._index_cache: dict[int, tuple[ParamMap, list[tuple[str, torch.Tensor | None]]]] = {}

    def full_map(self) -> ParamMap:
        """A map selecting every entry of the chosen parameters (the unpruned input space)."""
        return ParamMap.full((n, tuple(p.shape)) for n, p in self.params.items())

    def _plan(self, pmap: ParamMap) -> list[tuple[str, torch.Tensor | None]]:
        key = id(pmap)
        hit = self._index_cache.get(key)
        if hit is not None and hit[0] is pmap:
            return hit[1]
        plan = []
        for e in pmap:
            if e.num_selected == 0:
                continue
            if e.name not in self.params:
                raise KeyError(
                    f"the GRADIEND maps parameter {e.name!r}, which the base model does not have (or which was "
                    "not selected by params); use the base model the GRADIEND was built for."
                )
            if tuple(self.params[e.name].shape) != tuple(e.shape):
                raise ValueError(
                    f"parameter {e.name!r} has shape {tuple(self.params[e.name].shape)} in the base model but "
                    f"{tuple(e.shape)} in the GRADIEND's param_map."
                )
            plan.append((e.name, None if e.positions is None else torch.from_numpy(e.positions)))
        self._index_cache = {key: (pmap, plan)}  # one map at a time is in use
        return plan

    @contextmanager
    def _grad_mode(self, names: Sequence[str]) -> Iterator[None]:
        """Eval mode, and gradients only for the mapped parameters (restored afterwards)."""
        was_training = self.base_model.training
        wanted = set(names)
        flags = {}
        for n, p in self.base_model.named_parameters():
            flags[n] = p.requires_grad
            p.requires_grad_(n in wanted)
        self.base_model.eval()
        try:
            with torch.enable_grad():
                yield
        finally:
            for n, p in self.base_model.named_parameters():
                p.requires_grad_(flags[n])
            self.base_model.train(was_training)

    def gradient(self, batch: list[Example], which: str, pmap: ParamMap) -> torch.Tensor:
        """Gradient of ``loss_fn(model, batch, which)`` at the entries ``pmap`` selects.

        Returns:
            float32 tensor of shape ``(pmap.input_dim,)`` on CPU.

        Raises:
            RuntimeError: when a mapped parameter gets no gradient (it does not influence the
                loss; exclude it with ``params``), or the loss is not a scalar.
        """
        plan = self._plan(pmap)
        names = [n for n, _ in plan]
        with self._grad_mode(names):
            loss = self.loss_fn(self.base_model, batch, which)
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise RuntimeError(
                    f"loss_fn must return a scalar tensor, got {type(loss).__name__} {getattr(loss, 'shape', '')}."
                )
            grads = torch.autograd.grad(loss.reshape(()), [self.params[n] for n in names], allow_unused=True)
        parts = []
        for (name, pos), g in zip(plan, grads):
            if g is None:
                raise RuntimeError(
                    f"mapped parameter {name!r} received no gradient from loss_fn: it does not influence the loss. "
                    "Exclude it with TrainingArguments(params=[...])."
                )
            flat = g.detach().reshape(-1)
            parts.append(flat if pos is None else flat[pos.to(flat.device)])
        return torch.cat(parts).to(device="cpu", dtype=torch.float32)

    def pair(self, batch: list[Example], need_factual: bool, need_alternative: bool, pmap: ParamMap):
        """``(factual, alternative)`` gradients; an unneeded one is ``None``."""
        f = self.gradient(batch, "factual", pmap) if need_factual else None
        a = self.gradient(batch, "alternative", pmap) if need_alternative else None
        return f, a


def needs(*keywords: str) -> tuple[bool, bool]:
    """Whether factual and alternative gradients are needed for these source/target keywords."""
    return (
        any(k in ("factual", "diff") for k in keywords),
        any(k in ("alternative", "diff") for k in keywords),
    )


def pick(kind: str, factual: torch.Tensor | None, alternative: torch.Tensor | None) -> torch.Tensor:
    """The ``factual``, ``alternative`` or ``diff`` (= factual - alternative) vector."""
    if kind == "factual":
        return factual
    if kind == "alternative":
        return alternative
    return factual - alternative
