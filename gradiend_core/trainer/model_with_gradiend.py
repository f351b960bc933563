"""``ModelWithGradiend``: a base model together with the GRADIEND trained on its gradients.

The method names follow the reference's ``gradiend.model.model_with_gradiend.ModelWithGradiend``
(``prune_gradiend``, ``get_enhancer_mask``, ``rewrite_base_model``, ``save_pretrained``). Every
selection goes through the GRADIEND's ``select`` (:func:`gradiend_core.selection.rule.select`), so
``get_enhancer_mask(topk, part)`` keeps exactly what ``prune_gradiend(topk=topk, part=part)``
keeps, also on pruned models. (The reference's enhancer mask rounds a fractional topk down and
its prune rounds up.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint.files import CONTEXT_FILE, PRE_PRUNE_FILE, TRAINING_FILE, VALIDATION_FILE
from ..checkpoint.records import PrePruneRecord, ValidationRecord
from ..gradients.gather import GradientSource, LossFn, resolve_params
from ..model import ParamMappedGradiendModel
from ..ranking.importance import DEFAULT_PART
from .config import SOURCES

__all__ = ["ModelWithGradiend", "base_model_id"]


def base_model_id(base_model: nn.Module) -> str:
    """How the base model is named in ``config.json`` (``metadata.base_model``).

    Hugging Face models carry ``name_or_path`` (the path they were loaded from); other modules
    are named by their class.
    """
    name = getattr(base_model, "name_or_path", None) or getattr(
        getattr(base_model, "config", None), "_name_or_path", None
    )
    return str(name) if name else type(base_model).__name__


class ModelWithGradiend:
    """A base model and its GRADIEND.

    Args:
        base_model: the base torch model (not modified by anything here).
        gradiend: the GRADIEND; its param_map names parameters of ``base_model``.
        source, target: which gradients the GRADIEND encodes and reconstructs; written to
            ``gradiend_context.json``.
        feature_class_encoding_direction: class name -> +1/-1, written to
            ``gradiend_context.json`` (the reference's field).
        loss_fn: optional ``(model, batch, which) -> loss``; needed by :meth:`create_gradients`.

    Attributes:
        pre_prune_record: what pre-pruning measured (saved as ``pre_prune.safetensors``).
        validation_record: validation gradients (saved as ``validation_gradients.safetensors``).
    """

    def __init__(
        self,
        base_model: nn.Module,
        gradiend: ParamMappedGradiendModel,
        *,
        source: str = "alternative",
        target: str = "diff",
        feature_class_encoding_direction: dict[str, int] | None = None,
        loss_fn: LossFn | None = None,
    ) -> None:
        if source not in SOURCES or target not in SOURCES:
            raise ValueError(f"source and target must be one of {', '.join(SOURCES)}; got {source!r}, {target!r}.")
        self.base_model = base_model
        self.gradiend = gradiend
        self.source = source
        self.target = target
        self.feature_class_encoding_direction = dict(feature_class_encoding_direction or {}) or None
        self.loss_fn = loss_fn
        self.pre_prune_record: PrePruneRecord | None = None
        self.validation_record: ValidationRecord | None = None

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self.gradiend.input_dim

    def pruned_length(self) -> int:
        """Current GRADIEND input_dim."""
        return self.gradiend.input_dim

    def unpruned_length(self) -> int:
        """Entries of all mapped base-model parameters (input_dim before any pruning)."""
        return self.gradiend.unpruned_length()

    # ------------------------------------------------------------------ gradients and encoding
    def create_gradients(self, batch: Sequence[Any], which: str = "factual") -> torch.Tensor:
        """The GRADIEND input vector of ``batch`` (float32 ``(input_dim,)``).

        Raises:
            ValueError: when no ``loss_fn`` was given.
        """
        if self.loss_fn is None:
            raise ValueError("create_gradients needs a loss_fn; pass loss_fn=... to ModelWithGradiend.")
        params = resolve_params(self.base_model, [e.name for e in self.gradiend.mapping])
        return GradientSource(self.base_model, self.loss_fn, params).gradient(list(batch), which, self.gradiend.mapping)

    def encode(self, gradients: torch.Tensor) -> torch.Tensor:
        """Encode gradient vectors ``(..., input_dim)`` to ``(..., latent_dim)`` (no autograd)."""
        with torch.no_grad():
            return self.gradiend.forward_encoder(gradients)

    def invert_encoding(self) -> None:
        """Flip the sign of the encoding without changing what the decoder produces.

        Encoder weight and bias and decoder weight are negated: with an odd encoder activation
        (tanh, the default) the latent flips sign and ``decoder(latent)`` is unchanged. The
        reference also negates the decoder bias, which changes the decoder output; we do not.
        """
        with torch.no_grad():
            enc = self.gradiend.encoder[0].linear
            enc.weight.neg_()
            if enc.bias is not None:
                enc.bias.neg_()
            self.gradiend.decoder[0].linear.weight.neg_()

    # ------------------------------------------------------------------ pruning
    def get_enhancer_mask(self, topk: int | float, part: str = DEFAULT_PART) -> torch.Tensor:
        """Bool ``(input_dim,)``: the dimensions ``prune_gradiend(topk=topk, part=part)`` keeps."""
        return self.gradiend.get_enhancer_mask(topk, part)

    def prune_gradiend(
        self,
        *,
        mask: Any | None = None,
        threshold: float | None = None,
        topk: int | float | None = None,
        part: str = DEFAULT_PART,
        importance: torch.Tensor | np.ndarray | None = None,
        inplace: bool = True,
        return_mask: bool = False,
    ) -> ModelWithGradiend | tuple[ModelWithGradiend, torch.Tensor]:
        """Prune the GRADIEND's input space by mask -> threshold -> topk.

        Args:
            mask: bool ``(input_dim,)`` keep-mask in the current input space.
            threshold: keep dimensions with importance >= threshold.
            topk: int >= 1 (count) or float in (0, 1] (fraction of what is left).
            part: weight importance used by threshold and topk (``encoder-weight``,
                ``decoder-weight``, ``decoder-bias``, ``decoder-sum``).
            importance: float ``(input_dim,)`` used instead of ``part`` (e.g. a gradient mean).
            inplace: prune this object's GRADIEND; otherwise return a new ``ModelWithGradiend``
                (sharing the unchanged base model) and leave this one as it is.
            return_mask: also return the keep-mask, bool ``(old input_dim,)``.

        Returns:
            The pruned model, or ``(model, mask)`` with ``return_mask``.

        Raises:
            SelectionError: for invalid arguments or a selection that keeps nothing.
        """
        pruned, keep_mask = self.gradiend.prune(
            topk=topk, threshold=threshold, mask=mask, part=part, importance=importance, inplace=False, return_mask=True
        )
        if inplace:
            out = self
        else:
            out = copy.copy(self)
        out.gradiend = pruned
        if self.validation_record is not None:
            out.validation_record = self.validation_record.restricted(pruned.mapping.base_global_index())
        return (out, keep_mask) if return_mask else out

    # ------------------------------------------------------------------ rewriting the base model
    def rewrite_base_model(self, learning_rate: float, feature_factor: float | Sequence[float]) -> nn.Module:
        """A copy of the base model with ``learning_rate * decoder(feature_factor)`` added to the
        mapped entries.

        Args:
            learning_rate: step size (never negated by ``source``; the sign comes from
                ``feature_factor``, as in the reference).
            feature_factor: the latent value(s) to decode, a number or ``latent_dim`` numbers.

        Returns:
            A deep copy of the base model; entries outside the param_map are unchanged.

        Raises:
            ValueError: when ``feature_factor`` has the wrong length.
        """
        ff = [float(feature_factor)] if np.isscalar(feature_factor) else [float(v) for v in feature_factor]
        if len(ff) != self.gradiend.latent_dim:
            raise ValueError(f"feature_factor needs {self.gradiend.latent_dim} value(s), got {len(ff)}.")
        with torch.no_grad():
            update = self.gradiend.decoder(torch.tensor(ff, dtype=self.gradiend.torch_dtype))
        update = update.to(torch.float32) * float(learning_rate)
        new_model = copy.deepcopy(self.base_model)
        lookup = dict(new_model.named_parameters(remove_duplicate=False))
        offsets = self.gradiend.mapping.local_offsets
        with torch.no_grad():
            for i, e in enumerate(self.gradiend.mapping):
                if e.num_selected == 0:
                    continue
                if e.name not in lookup:
                    raise KeyError(f"the base model has no parameter {e.name!r}, which the GRADIEND maps.")
                p = lookup[e.name]
                chunk = update[int(offsets[i]) : int(offsets[i + 1])].to(device=p.device, dtype=p.dtype)
                delta = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                if e.positions is None:
                    delta += chunk
                else:
                    delta[torch.from_numpy(e.positions).to(p.device)] = chunk
                p.add_(delta.view(p.shape))
        return new_model

    # ------------------------------------------------------------------ saving
    def context(self) -> dict[str, Any]:
        """The content of ``gradiend_context.json`` (the reference's fields)."""
        ctx: dict[str, Any] = {"source": self.source, "target": self.target}
        if self.feature_class_encoding_direction:
            ctx["feature_class_encoding_direction"] = dict(self.feature_class_encoding_direction)
        return ctx

    def save_pretrained(self, save_directory: str | Path, *, training: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint directory in the reference format, atomically.

        Writes ``config.json`` (``metadata.base_model`` names the base model), the weights,
        mapping files, ``gradiend_context.json``, ``training.json`` (when ``training`` is given
        or the GRADIEND already carries one), and ``pre_prune.safetensors`` /
        ``validation_gradients.safetensors`` when those records are set. An existing directory
        is replaced.

        Returns:
            The directory written.
        """
        g = self.gradiend
        g.kwargs["base_model"] = base_model_id(self.base_model)
        g.side_files[CONTEXT_FILE] = self.context()
        if training is not None:
            g.side_files[TRAINING_FILE] = training
        files = {}
        if self.pre_prune_record is not None:
            files[PRE_PRUNE_FILE] = (self.pre_prune_record.tensors(), self.pre_prune_record.header())
        if self.validation_record is not None:
            rec = self.validation_record.restricted(g.mapping.base_global_index())
            files[VALIDATION_FILE] = (rec.tensors(), rec.header())
        out = g.save_pretrained(save_directory, overwrite=True, tensor_files=files)
        g.name_or_path = str(out)
        return out

    def __repr__(self) -> str:
        return (
            f"ModelWithGradiend(base_model={base_model_id(self.base_model)!r}, input_dim={self.gradiend.input_dim}, "
            f"unpruned_length={self.unpruned_length()}, source={self.source!r}, target={self.target!r})"
        )
