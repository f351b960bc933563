"""Configuration of a GRADIEND training run: pre-pruning, post-pruning and training arguments.

Names, fields and defaults follow the reference package (``gradiend.trainer.core.pruning`` and
``gradiend.trainer.core.arguments`` in gradiend 0.2.3) so that a script written for it ports by
changing the import. Every config is validated on construction; topk, threshold and mask go
through :func:`validate_selection`, which uses the validators of :mod:`gradiend_core.selection.rule`
(the ones every selection in this package uses), so a config that constructs is a config that
prunes.

Deliberate differences from the reference (each one removes a way to fail late):

* ``topk=0`` (int) is rejected when the config is built. The reference's config check accepts
  an int >= 0, but its ``prune()`` then refuses ``k <= 0`` when pruning runs, after the
  gradients have been computed or the model trained. Counts are ints >= 1, fractions are floats
  in (0, 1] (``gradiend_core.selection.rule.validate_topk``).
* Invalid topk/threshold/mask values raise :class:`~gradiend_core.errors.SelectionError` (a
  ``ValueError``) for wrong types too, where the reference raises ``TypeError`` for some.
* ``PostPruneConfig.mask`` is checked (bool dtype, 1-D, not all False) when the config is built;
  its length is checked against the model when pruning runs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import SelectionError
from ..ranking.importance import PARTS
from ..selection.rule import TopK, validate_mask, validate_threshold, validate_topk

__all__ = ["PostPruneConfig", "PrePruneConfig", "SOURCES", "TrainingArguments", "validate_selection"]

#: Which gradient feeds the encoder (``source``) or is reconstructed (``target``).
SOURCES = ("factual", "alternative", "diff")
OPTIMIZERS = ("adamw", "adam")


def validate_selection(
    owner: str,
    *,
    topk: object = None,
    threshold: object = None,
    mask: object = None,
    allow_mask: bool = True,
) -> tuple[TopK | None, float | None, Any]:
    """Validate the selection criteria of a pruning config; the one check every config uses.

    Args:
        owner: name put in front of messages, e.g. ``"PrePruneConfig"``.
        topk: ``None``, an int >= 1 (a count) or a float in (0, 1] (a fraction).
        threshold: ``None`` or a number >= 0.
        mask: ``None`` or a 1-D torch/numpy bool tensor (only when ``allow_mask``).
        allow_mask: whether ``mask`` counts as a criterion.

    Returns:
        ``(topk, threshold, mask)`` normalised (numpy scalars become Python numbers).

    Raises:
        SelectionError: naming the owner, the field and what is accepted, for an invalid value or
            when no criterion is given.
    """
    try:
        topk = validate_topk(topk)
        threshold = validate_threshold(threshold)
        if mask is not None:
            if not allow_mask:
                raise SelectionError(
                    "mask is not a pre-pruning criterion (pre-pruning selects by gradient importance)."
                )
            if not (torch.is_tensor(mask) or isinstance(mask, np.ndarray)) or mask.ndim != 1:
                shape = tuple(mask.shape) if hasattr(mask, "shape") else type(mask).__name__
                raise SelectionError(
                    f"mask must be a 1-D torch or numpy bool tensor of shape (input_dim,), got {shape}."
                )
            validate_mask(mask, int(mask.shape[0]))
    except SelectionError as e:
        raise SelectionError(f"{owner}: {e}") from None
    if topk is None and threshold is None and mask is None:
        what = "topk, threshold or mask" if allow_mask else "topk or threshold"
        raise SelectionError(f"{owner}: set at least one of {what} (e.g. topk=0.05 keeps the top 5 %).")
    return topk, threshold, mask


def _check_int(owner: str, name: str, value: object, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}.")


def _check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {type(value).__name__} ({value!r}).")


def _check_choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(choices)}; got {value!r}.")


@dataclass
class PrePruneConfig:
    """Pre-pruning: importance = |mean source gradient| over ``n_samples`` stratified training
    examples, then keep the selected dimensions before training.

    Attributes:
        n_samples: examples to average over, split evenly over the two classes (the remainder goes
            to the first class); an int >= 1.
        topk: int >= 1 (count) or float in (0, 1] (fraction). ``1.0`` with no threshold keeps
            everything and skips the gradient pass, as in the reference.
        threshold: keep dimensions whose importance is >= threshold.
        source: which gradient is averaged: ``factual``, ``alternative`` or ``diff``.
        batch_size: accepted for compatibility with the reference (an int >= 1). Gradients are
            computed one example at a time, as in the reference, so the mean is a mean of
            per-example gradients whatever its value.
        seed: seed of the stratified draw; ``None`` uses ``TrainingArguments.seed``. A smaller
            ``n_samples`` with the same seed draws a subset of a larger one (per class).
    """

    n_samples: int = 8
    topk: TopK | None = 0.1
    threshold: float | None = None
    source: str = "alternative"
    batch_size: int = 8
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "PrePruneConfig"
        _check_int(owner, "n_samples", self.n_samples, 1)
        self.topk, self.threshold, _ = validate_selection(
            owner, topk=self.topk, threshold=self.threshold, allow_mask=False
        )
        _check_choice(owner, "source", self.source, SOURCES)
        _check_int(owner, "batch_size", self.batch_size, 1)
        _check_int(owner, "seed", self.seed, 0, allow_none=True)

    @property
    def is_noop(self) -> bool:
        """True when the config keeps every dimension (``topk=1.0``, no threshold)."""
        return self.threshold is None and isinstance(self.topk, float) and self.topk >= 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the reference writes its configs with ``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


@dataclass
class PostPruneConfig:
    """Post-pruning: weight-based importance of ``part`` after training, then prune.

    Attributes:
        topk: int >= 1 (count) or float in (0, 1] (fraction of what mask and threshold left).
        threshold: keep dimensions whose importance is >= threshold.
        mask: optional bool keep-mask of shape ``(input_dim,)`` of the trained model (after any
            pre-pruning). Not written to JSON.
        part: ``encoder-weight``, ``decoder-weight``, ``decoder-bias`` or ``decoder-sum``.
        inplace: prune the trainer's model (required when ``train()`` runs it).
        return_mask: ``post_prune`` also gives back the keep-mask.
    """

    topk: TopK | None = 0.01
    threshold: float | None = None
    mask: Any | None = field(default=None, repr=False)
    part: str = "decoder-weight"
    inplace: bool = True
    return_mask: bool = False

    def __post_init__(self) -> None:
        owner = "PostPruneConfig"
        self.topk, self.threshold, self.mask = validate_selection(
            owner, topk=self.topk, threshold=self.threshold, mask=self.mask
        )
        _check_choice(owner, "part", self.part, PARTS)
        _check_bool(owner, "inplace", self.inplace)
        _check_bool(owner, "return_mask", self.return_mask)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; ``mask`` is written as ``None`` (as the reference does)."""
        return {
            "topk": self.topk,
            "threshold": self.threshold,
            "mask": None,
            "part": self.part,
            "inplace": self.inplace,
            "return_mask": self.return_mask,
        }


@dataclass
class TrainingArguments:
    """Arguments of one GRADIEND training run (a subset of the reference's, same names/defaults).

    Output:
        experiment_dir: run directory; the model is written to ``experiment_dir/model``.
        output_dir: model directory; overrides ``experiment_dir/model``.

    GRADIEND:
        source: gradient fed to the encoder (``factual``, ``alternative`` or ``diff``).
        target: gradient the decoder reconstructs (same choices). Defaults ``alternative`` ->
            ``diff`` are the reference's.
        params: base-model parameter names or ``fnmatch`` wildcards to map (``None``: every
            trainable parameter; the Hugging Face adapter defaults to the backbone).
        latent_dim, activation_encoder, activation_decoder, bias_decoder, torch_dtype: the
            GRADIEND's architecture.

    Training loop:
        train_batch_size: examples of one class merged into one loss, i.e. one gradient vector
            per GRADIEND step (the reference's ``train_batch_size``).
        learning_rate, weight_decay, adam_epsilon, optim (``adamw`` or ``adam``): the optimizer.
        num_train_epochs, max_steps: length; ``max_steps > 0`` overrides the epochs.
        seed: seeds the GRADIEND initialisation, the batch order and the pre-prune draw
            (``None``: not seeded).

    Evaluation:
        eval_steps: evaluate the encoder on the validation split every ``eval_steps`` steps, at
            step 0 and at the last step; ``do_eval=False`` switches it off.
        encoder_eval_max_size: cap on validation examples (stratified); ``None`` uses all.
        save_only_best: keep the weights of the best evaluated step (by |correlation|, steps
            > 0, as the reference) instead of the last.
        normalize_gradiend: flip the encoding when the correlation is below -0.6 so that the first
            class encodes positive (the reference's rule).
        convergent_score_threshold, convergent_mean_by_class_threshold: the reference's
            convergence test written to ``training.json`` (``convergence_info``).
        save_validation_gradients: also save the source gradients of this many validation
            examples (stratified) next to the model, for :func:`~gradiend_core.analysis.cut_cost.cut_cost`.

    Pruning:
        pre_prune_config, post_prune_config: see :class:`PrePruneConfig`, :class:`PostPruneConfig`.

    Raises:
        TypeError, ValueError: naming the field, for an invalid value.
    """

    experiment_dir: str | None = None
    output_dir: str | None = None
    source: str = "alternative"
    target: str = "diff"
    params: list[str] | None = None
    latent_dim: int = 1
    activation_encoder: str = "tanh"
    activation_decoder: str = "id"
    bias_decoder: bool = True
    torch_dtype: torch.dtype = torch.float32
    train_batch_size: int = 32
    learning_rate: float = 1e-5
    weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    optim: str = "adamw"
    num_train_epochs: int = 3
    max_steps: int = -1
    seed: int | None = 0
    eval_steps: int = 250
    do_eval: bool = True
    encoder_eval_max_size: int | None = None
    save_only_best: bool = True
    normalize_gradiend: bool = True
    convergent_score_threshold: float = 0.5
    convergent_mean_by_class_threshold: float | None = 0.5
    save_validation_gradients: int = 0
    pre_prune_config: PrePruneConfig | None = None
    post_prune_config: PostPruneConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one validator per group of the docstring, in field order: the first invalid field is reported
        owner = "TrainingArguments"
        self._check_output(owner)
        self._check_gradiend(owner)
        self._check_training_loop(owner)
        self._check_evaluation(owner)
        self._check_pruning(owner)
        if not isinstance(self.metadata, dict):
            raise TypeError(f"{owner}: metadata must be a dict, got {type(self.metadata).__name__}.")

    def _check_output(self, owner: str) -> None:
        for name in ("experiment_dir", "output_dir"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, bytes)) and not hasattr(v, "__fspath__"):
                raise TypeError(f"{owner}: {name} must be a path or None, got {type(v).__name__}.")
            if v is not None:
                setattr(self, name, str(v))

    def _check_gradiend(self, owner: str) -> None:
        _check_choice(owner, "source", self.source, SOURCES)
        _check_choice(owner, "target", self.target, SOURCES)
        if self.params is not None:
            if isinstance(self.params, str) or not all(isinstance(p, str) for p in self.params) or not self.params:
                raise TypeError(
                    f"{owner}: params must be a non-empty list of parameter names or wildcards, got {self.params!r}."
                )
            self.params = list(self.params)
        _check_int(owner, "latent_dim", self.latent_dim, 1)
        for name in ("activation_encoder", "activation_decoder"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(
                    f"{owner}: {name} must be an activation name such as 'tanh', got {getattr(self, name)!r}."
                )
        _check_bool(owner, "bias_decoder", self.bias_decoder)
        if self.torch_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(
                f"{owner}: torch_dtype must be torch.float32, torch.float16 or torch.bfloat16, got {self.torch_dtype}."
            )

    def _check_training_loop(self, owner: str) -> None:
        _check_int(owner, "train_batch_size", self.train_batch_size, 1)
        for name in ("learning_rate", "adam_epsilon"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{owner}: {name} must be a positive number, got {v!r}.")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not math.isfinite(wd) or wd < 0:
            raise ValueError(f"{owner}: weight_decay must be a number >= 0, got {wd!r}.")
        _check_choice(owner, "optim", self.optim, OPTIMIZERS)
        _check_int(owner, "num_train_epochs", self.num_train_epochs, 1)
        _check_int(owner, "max_steps", self.max_steps, -1)
        if self.max_steps == 0:
            raise ValueError(f"{owner}: max_steps must be > 0, or -1 to train for num_train_epochs.")
        _check_int(owner, "seed", self.seed, 0, allow_none=True)

    def _check_evaluation(self, owner: str) -> None:
        _check_int(owner, "eval_steps", self.eval_steps, 1)
        _check_bool(owner, "do_eval", self.do_eval)
        _check_int(owner, "encoder_eval_max_size", self.encoder_eval_max_size, 2, allow_none=True)
        _check_bool(owner, "save_only_best", self.save_only_best)
        _check_bool(owner, "normalize_gradiend", self.normalize_gradiend)
        _check_int(owner, "save_validation_gradients", self.save_validation_gradients, 0)

    def _check_pruning(self, owner: str) -> None:
        if self.pre_prune_config is not None and not isinstance(self.pre_prune_config, PrePruneConfig):
            raise TypeError(
                f"{owner}: pre_prune_config must be a PrePruneConfig, got {type(self.pre_prune_config).__name__}."
            )
        if self.post_prune_config is not None and not isinstance(self.post_prune_config, PostPruneConfig):
            raise TypeError(
                f"{owner}: post_prune_config must be a PostPruneConfig, got {type(self.post_prune_config).__name__}."
            )

    def resolved_output_dir(self) -> str | None:
        """``output_dir``, else ``experiment_dir/model``, else ``None``."""
        if self.output_dir is not None:
            return self.output_dir
        if self.experiment_dir is not None:
            return os.path.join(self.experiment_dir, "model")
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form written to ``training.json`` (``training_args``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (PrePruneConfig, PostPruneConfig)):
                v = v.to_dict()
            elif isinstance(v, torch.dtype):
                v = str(v).replace("torch.", "")
            elif isinstance(v, dict):
                v = dict(v)
            out[f.name] = v
        return out

    def cache_fingerprint(self) -> dict[str, Any]:
        """What decides whether a saved run answers this configuration (the reference's fields).

        The reference normalises a pre-prune ``topk`` to float; we keep it as given, because an
        int count and a float fraction mean different things (``1`` vs ``1.0``).
        """
        fp: dict[str, Any] = {}
        if self.pre_prune_config is not None:
            fp["pre_prune_config"] = self.pre_prune_config.to_dict()
        if self.post_prune_config is not None:
            fp["post_prune_config"] = self.post_prune_config.to_dict()
        fp["source"] = self.source
        fp["target"] = self.target
        return fp
