"""The GRADIEND training loop with pre-pruning and post-pruning.

One run, in order (``Trainer.train``):

1. **Pre-prune** (``pre_prune_config``): average the source gradient of ``n_samples``
   stratified training examples over the full input space, importance = |mean|, select with
   :func:`gradiend_core.selection.rule.select`, and build the GRADIEND directly at the selected size
   (``ParamMap.restrict`` + a fresh ``ParamMappedGradiendModel``): the full-size GRADIEND is never
   allocated.
2. **Train**: per step one class-pure batch of ``train_batch_size`` examples; its factual and
   alternative gradients give ``source`` and ``target`` (``diff = factual - alternative``); loss
   ``MSE(GRADIEND(source), target)``; Adam(W). Every ``eval_steps`` the encoder is evaluated on
   the validation split (Pearson correlation of its output with the +-1 class labels); the best
   step's weights are kept.
3. **Post-prune** (``post_prune_config``): weight importance of ``part``, the same ``select``,
   ``prune``. Post-pruning indexes the (pre-pruned) trained model's input space, so both stages
   compose.
4. **Save** to ``experiment_dir/model`` (or ``output_dir``): the checkpoint in the reference
   format, ``gradiend_context.json``, ``training.json`` and, when used, ``pre_prune.safetensors``
   and ``validation_gradients.safetensors``.

The base model is never modified; gradients are taken in eval mode (no dropout).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis.cut_cost import pearson
from ..checkpoint.records import PrePruneRecord, ValidationRecord, align_columns
from ..gradients.data import Example, epoch_batches, label_of, resolve_classes, split_validation, stratified_indices
from ..gradients.gather import GradientSource, LossFn, needs, pick, resolve_params
from ..model import ParamMappedGradiendModel
from ..selection.rule import select
from ..space.param_map import ParamMap
from .config import PostPruneConfig, PrePruneConfig, TrainingArguments
from .model_with_gradiend import ModelWithGradiend, base_model_id

__all__ = ["Trainer"]

#: Fraction of each class held out for validation when no eval_data is given.
VALIDATION_FRACTION = 0.2
#: The reference inverts the encoding when the validation correlation is below this.
NORMALIZE_BELOW = -0.6
#: Validation gradients are encoded in chunks of this many rows.
EVAL_CHUNK = 256


@dataclass
class _Run:
    """The state of one ``Trainer.train`` run."""

    model: ModelWithGradiend
    opt: torch.optim.Optimizer
    do_eval: bool
    loss_fn: nn.Module = field(default_factory=nn.MSELoss)
    stats: dict[str, Any] = field(
        default_factory=lambda: {
            "global_step": 0,
            "correlation": None,
            "scores": {},
            "mean_by_class": {},
            "mean_by_feature_class": {},
            "encoder_norms": {},
            "decoder_norms": {},
        }
    )
    losses: list[float] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"correlation": None, "global_step": None, "epoch": None})
    best_state: dict[str, torch.Tensor] | None = None
    step: int = 0
    epoch: int = 0


class Trainer:
    """Train a GRADIEND for any torch base model.

    Args:
        model: the base model (``nn.Module``) or a :class:`ModelWithGradiend` to continue from.
        train_data: :class:`Example` objects of exactly two classes.
        loss_fn: ``(model, batch, which) -> scalar loss`` with ``batch`` a list of examples and
            ``which`` ``"factual"`` or ``"alternative"`` (the target to score). For Hugging Face
            masked LMs use :meth:`for_masked_lm`.
        eval_data: validation examples; default: a stratified 20 % of ``train_data`` (seeded).
        args: :class:`TrainingArguments`.
        classes: the two class names in label order (first -> +1); default: order of first
            appearance in ``train_data``.

    Raises:
        ValueError: for data that does not hold exactly two classes, or a missing loss_fn.
    """

    def __init__(
        self,
        model: nn.Module | ModelWithGradiend,
        train_data: Sequence[Example],
        loss_fn: LossFn | None = None,
        *,
        eval_data: Sequence[Example] | None = None,
        args: TrainingArguments | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.args = args if args is not None else TrainingArguments()
        if not isinstance(self.args, TrainingArguments):
            raise TypeError(f"args must be gradiend_core.trainer.TrainingArguments, got {type(self.args).__name__}.")
        self._model: ModelWithGradiend | None = None
        if isinstance(model, ModelWithGradiend):
            self._model = model
            self.base_model = model.base_model
            loss_fn = loss_fn or model.loss_fn
        elif isinstance(model, nn.Module):
            self.base_model = model
        else:
            raise TypeError(f"model must be a torch nn.Module or a ModelWithGradiend, got {type(model).__name__}.")
        if loss_fn is None:
            raise ValueError(
                "loss_fn is required: (model, batch, which) -> scalar loss (or use Trainer.for_masked_lm)."
            )
        self.loss_fn = loss_fn
        train_data = list(train_data)
        self.classes = resolve_classes(train_data, classes)
        if eval_data is None:
            train_data, eval_data = split_validation(train_data, self.classes, VALIDATION_FRACTION, self.args.seed)
        self.train_data: list[Example] = train_data
        self.eval_data: list[Example] = list(eval_data)
        resolve_classes(self.eval_data, self.classes)
        names = None if self._model is None else [e.name for e in self._model.gradiend.mapping]
        self.gradients = GradientSource(
            self.base_model, loss_fn, resolve_params(self.base_model, names or self.args.params)
        )
        self.training_stats: dict[str, Any] | None = None
        self.post_prune_mask: torch.Tensor | None = None
        # validation source gradients (X, labels) and the map they were taken over
        self._val_cache: tuple[ParamMap, torch.Tensor, torch.Tensor] | None = None
        self._time: dict[str, float] = {
            "pre_prune": 0.0,
            "data_preparation": 0.0,
            "model_with_gradiend": 0.0,
            "eval": 0.0,
        }
        self._dims: dict[str, int | None] = {"unpruned": None, "after_pre_prune": None, "final": None}
        self._post_prune_info: dict[str, Any] | None = None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_masked_lm(
        cls,
        model: str | nn.Module,
        train_data: Sequence[Example],
        *,
        tokenizer: Any = None,
        eval_data: Sequence[Example] | None = None,
        args: TrainingArguments | None = None,
        classes: Sequence[str] | None = None,
    ) -> Trainer:
        """A trainer for a Hugging Face masked LM (needs ``transformers``).

        ``Example.inputs`` is a text with one mask token, ``factual``/``alternative`` are the
        single-token words to predict there. ``params`` defaults to the backbone (the model's
        ``base_model_prefix``, e.g. ``bert.*``), leaving out the MLM head, as the reference.

        Args:
            model: a path/name for ``AutoModelForMaskedLM.from_pretrained`` or a loaded model.
            tokenizer: required when ``model`` is a module.
        """
        from ..gradients import masked_lm

        if isinstance(model, str):
            model, loaded_tok = masked_lm.load_masked_lm(model)
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            raise ValueError("pass tokenizer=... when model is a loaded module.")
        args = args if args is not None else TrainingArguments()
        if args.params is None:
            args = dataclasses.replace(args, params=masked_lm.backbone_params(model))
        loss = masked_lm.masked_lm_loss(tokenizer)
        return cls(model, train_data, loss, eval_data=eval_data, args=args, classes=classes)

    @property
    def output_dir(self) -> str | None:
        """Where ``train()`` writes the model (``output_dir`` or ``experiment_dir/model``)."""
        return self.args.resolved_output_dir()

    model_path = output_dir  # the reference Trainer's name, for scripts ported from it

    def _direction(self) -> dict[str, int]:
        return {self.classes[0]: 1, self.classes[1]: -1}

    def _seed_torch(self) -> None:
        if self.args.seed is not None:
            torch.manual_seed(self.args.seed)

    def _build(self, pmap: ParamMap) -> ModelWithGradiend:
        """A fresh GRADIEND over ``pmap`` (seeded), wrapped with the base model."""
        a = self.args
        self._seed_torch()
        g = ParamMappedGradiendModel(
            pmap.input_dim,
            a.latent_dim,
            pmap,
            activation_encoder=a.activation_encoder,
            activation_decoder=a.activation_decoder,
            bias_decoder=a.bias_decoder,
            torch_dtype=a.torch_dtype,
            base_model=base_model_id(self.base_model),
        )
        return ModelWithGradiend(
            self.base_model,
            g,
            source=a.source,
            target=a.target,
            feature_class_encoding_direction=self._direction(),
            loss_fn=self.loss_fn,
        )

    def get_model(self) -> ModelWithGradiend:
        """The current model; builds the full-size GRADIEND on first use if none exists yet."""
        if self._model is None:
            self._model = self._build(self.gradients.full_map())
        return self._model

    # ------------------------------------------------------------------ pre-pruning
    def gradient_mean(self, cfg: PrePruneConfig, pmap: ParamMap) -> tuple[np.ndarray, list[int]]:
        """|mean ``cfg.source`` gradient| over ``cfg.n_samples`` stratified training examples.

        Each example is one batch of one (one gradient per example, as the reference). The sum is
        accumulated in float64.

        Returns:
            ``(importance float32 (pmap.input_dim,), example positions used)``.
        """
        seed = cfg.seed if cfg.seed is not None else self.args.seed
        idx = stratified_indices(self.train_data, self.classes, cfg.n_samples, seed)
        need_f, need_a = needs(cfg.source)
        total = torch.zeros(pmap.input_dim, dtype=torch.float64)
        for i in idx:
            f, a = self.gradients.pair([self.train_data[i]], need_f, need_a, pmap)
            total += pick(cfg.source, f, a).to(torch.float64)
        return (total / len(idx)).abs().to(torch.float32).numpy(), idx

    def pre_prune(self, pre_cfg: PrePruneConfig | None = None, *, inplace: bool = True) -> Trainer | ModelWithGradiend:
        """Pre-prune by gradient importance before training.

        Args:
            pre_cfg: the config; default ``args.pre_prune_config``.
            inplace: use the pruned model for training and return the trainer; otherwise return
                a new pruned :class:`ModelWithGradiend` and leave the trainer unchanged.

        Returns:
            The trainer (``inplace``) or the pruned model.

        Raises:
            ValueError: when no config is given.
            SelectionError: when the selection keeps nothing.
        """
        cfg = pre_cfg if pre_cfg is not None else self.args.pre_prune_config
        if cfg is None:
            raise ValueError(
                "pre_prune needs a config: pass PrePruneConfig(...) or set TrainingArguments(pre_prune_config=...)."
            )
        start = time.time()
        current = self._model
        pmap = current.gradiend.mapping if current is not None else self.gradients.full_map()
        if self._dims["unpruned"] is None:
            self._dims["unpruned"] = pmap.unpruned_length
        if cfg.is_noop:  # topk=1.0 keeps everything; like the reference, skip the gradient pass
            model = current if current is not None else self._build(pmap)
            if not inplace:
                model = copy.copy(model)
        else:
            importance, used = self.gradient_mean(cfg, pmap)
            sel = select(importance, topk=cfg.topk, threshold=cfg.threshold)
            record = PrePruneRecord(
                importance, sel.keep, pmap.base_global_index().copy(), cfg.to_dict(), cfg.source, len(used)
            )
            if current is None:
                model = self._build(pmap.restrict(sel.keep))  # never allocate the full-size GRADIEND
            else:
                model = current.prune_gradiend(mask=sel.mask(), inplace=inplace)
            model.pre_prune_record = record
        self._time["pre_prune"] += time.time() - start
        if not inplace:
            return model
        self._model = model
        self._dims["after_pre_prune"] = model.gradiend.input_dim
        return self

    # ------------------------------------------------------------------ post-pruning
    def post_prune(
        self, post_cfg: PostPruneConfig | None = None
    ) -> Trainer | ModelWithGradiend | tuple[ModelWithGradiend, torch.Tensor]:
        """Post-prune the trained model by weight importance of ``part``.

        Args:
            post_cfg: the config; default ``args.post_prune_config``.

        Returns:
            With ``inplace`` (the default): the trainer, whose model is now pruned (the mask is
            in ``post_prune_mask`` when ``return_mask``). Otherwise what
            ``ModelWithGradiend.prune_gradiend(inplace=False, return_mask=...)`` returns.
        """
        cfg = post_cfg if post_cfg is not None else self.args.post_prune_config
        if cfg is None:
            raise ValueError(
                "post_prune needs a config: pass PostPruneConfig(...) or set TrainingArguments(post_prune_config=...)."
            )
        model = self.get_model()
        before = model.gradiend.input_dim
        pruned, mask = model.prune_gradiend(
            topk=cfg.topk, threshold=cfg.threshold, mask=cfg.mask, part=cfg.part, inplace=cfg.inplace, return_mask=True
        )
        if not cfg.inplace:
            return (pruned, mask) if cfg.return_mask else pruned
        self.post_prune_mask = mask if cfg.return_mask else None
        info: dict[str, Any] = {"input_dim_before": before, "input_dim_after": pruned.gradiend.input_dim}
        if self.args.do_eval and self.eval_data:
            info["validation_correlation"] = self.evaluate_encoder()["correlation"]
        self._post_prune_info = info
        return self

    # ------------------------------------------------------------------ evaluation
    def _eval_examples(self) -> list[Example]:
        cap = self.args.encoder_eval_max_size
        if cap is None or cap >= len(self.eval_data):
            return self.eval_data
        return [
            self.eval_data[i] for i in sorted(stratified_indices(self.eval_data, self.classes, cap, self.args.seed))
        ]

    def validation_gradients(self, pmap: ParamMap | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Source gradients of the validation examples over ``pmap`` (default: the model's map).

        The base model is frozen, so they are computed once per input space and cached; a
        pruned space takes the columns of the cached one.

        Returns:
            ``(X float32 (n, input_dim), labels float32 (n,))``.
        """
        pmap = pmap if pmap is not None else self.get_model().gradiend.mapping
        if self._val_cache is not None:
            cached_map, x, labels = self._val_cache
            if cached_map is pmap:
                return x, labels
            have, want = cached_map.base_global_index(), pmap.base_global_index()
            if np.isin(want, have).all():  # a pruned space: its columns of the cached gradients
                return x[:, torch.from_numpy(align_columns(have, want, "validation cache"))], labels
        examples = self._eval_examples()
        need_f, need_a = needs(self.args.source)
        rows = []
        for ex in examples:
            f, a = self.gradients.pair([ex], need_f, need_a, pmap)
            rows.append(pick(self.args.source, f, a))
        x = torch.stack(rows) if rows else torch.zeros(0, pmap.input_dim)
        labels = torch.tensor([label_of(ex.feature_class, self.classes) for ex in examples], dtype=torch.float32)
        self._val_cache = (pmap, x, labels)
        return x, labels

    def evaluate_encoder(self, model: ModelWithGradiend | None = None) -> dict[str, Any]:
        """Encoder metrics on the validation split (the reference's keys).

        Returns:
            ``correlation`` (Pearson of latent unit 0 with the +-1 labels), ``mean_by_class``
            (label -> mean), ``std_by_class``, ``n_by_class``, ``mean_by_feature_class``
            (class name -> mean), ``label_value_to_class_name``.
        """
        model = model if model is not None else self.get_model()
        x, labels = self.validation_gradients(model.gradiend.mapping)
        g = model.gradiend
        was = g.training
        g.eval()
        with torch.no_grad():
            enc = torch.cat([g.forward_encoder(x[i : i + EVAL_CHUNK]) for i in range(0, x.shape[0], EVAL_CHUNK)])
        g.train(was)
        e = enc[:, 0].to(torch.float64).numpy()
        lab = labels.numpy()
        out: dict[str, Any] = {
            "correlation": pearson(e, lab),
            "mean_by_class": {},
            "std_by_class": {},
            "n_by_class": {},
            "mean_by_feature_class": {},
            "label_value_to_class_name": {},
        }
        for name in self.classes:
            lv = label_of(name, self.classes)
            vals = e[lab == lv]
            out["mean_by_class"][lv] = float(vals.mean()) if vals.size else float("nan")
            out["std_by_class"][lv] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
            out["n_by_class"][lv] = int(vals.size)
            out["mean_by_feature_class"][name] = out["mean_by_class"][lv]
            out["label_value_to_class_name"][lv] = name
        return out

    # ------------------------------------------------------------------ training
    def _optimizer(self, g: ParamMappedGradiendModel) -> torch.optim.Optimizer:
        a = self.args
        cls = torch.optim.AdamW if a.optim == "adamw" else torch.optim.Adam
        return cls(g.parameters(), lr=a.learning_rate, weight_decay=a.weight_decay, eps=a.adam_epsilon)

    @staticmethod
    def _flip_optimizer_state(opt: torch.optim.Optimizer, g: ParamMappedGradiendModel) -> None:
        """Negate Adam's first moments of the parameters :meth:`ModelWithGradiend.invert_encoding`
        negates, so the optimizer continues on the mirrored trajectory."""
        flipped = [g.encoder[0].linear.weight, g.decoder[0].linear.weight]
        if g.encoder[0].linear.bias is not None:
            flipped.append(g.encoder[0].linear.bias)
        for p in flipped:
            st = opt.state.get(p)
            if st and "exp_avg" in st:
                st["exp_avg"].neg_()

    def _record_eval(self, stats: dict[str, Any], step: int, result: dict[str, Any]) -> None:
        stats["correlation"] = result["correlation"]
        stats["scores"][step] = result["correlation"]
        for key in ("mean_by_class", "std_by_class", "n_by_class", "mean_by_feature_class"):
            stats.setdefault(key, {})[step] = result[key]
        stats["label_value_to_class_name"] = result["label_value_to_class_name"]

    def train(self) -> Trainer:
        """Pre-prune (if configured), train, post-prune (if configured) and save.

        Returns:
            The trainer; ``get_model()`` is the saved model, ``training_stats`` the run history.

        Raises:
            ValueError: when neither ``experiment_dir`` nor ``output_dir`` is set, or
                ``post_prune_config.inplace`` is False.
        """
        a = self.args
        out_dir = self.output_dir
        if out_dir is None:
            raise ValueError(
                "set TrainingArguments(experiment_dir=...) or output_dir=... so the trained model can be saved."
            )
        if a.post_prune_config is not None and not a.post_prune_config.inplace:
            raise ValueError("post_prune_config.inplace=False makes no sense when train() runs it; use inplace=True.")
        start = time.time()
        model = self._pre_pruned_model()
        run = _Run(model, self._optimizer(model.gradiend), do_eval=a.do_eval and len(self.eval_data) > 0)
        self._train_loop(run)
        self._keep_best(run)
        if a.post_prune_config is not None:
            self.post_prune()
            model = self.get_model()
        self._dims["final"] = model.gradiend.input_dim
        if a.save_validation_gradients and run.do_eval:
            model.validation_record = self._validation_record(model, a.save_validation_gradients)
        self._time["total"] = time.time() - start
        self.training_stats = run.stats
        model.save_pretrained(out_dir, training=self._training_json(run.stats, run.best, run.losses))
        return self

    def _pre_pruned_model(self) -> ModelWithGradiend:
        """Run the configured pre-pruning (unless ``pre_prune()`` already did) and note the dims."""
        cfg = self.args.pre_prune_config
        record = self._model.pre_prune_record if self._model is not None else None
        if cfg is not None and (record is None or record.config != cfg.to_dict()):
            self.pre_prune(inplace=True)
        model = self.get_model()
        g = model.gradiend
        if self._dims["unpruned"] is None:
            self._dims["unpruned"] = g.unpruned_length()
        if self._dims["after_pre_prune"] is None:
            self._dims["after_pre_prune"] = g.input_dim
        return model

    def _evaluate(self, run: _Run, step: int, epoch: int) -> None:
        """Evaluate the encoder, orient it (normalize_gradiend) and remember the best state."""
        a, model, g = self.args, run.model, run.model.gradiend
        t = time.time()
        result = self.evaluate_encoder(model)
        if a.normalize_gradiend and g.latent_dim == 1 and result["correlation"] < NORMALIZE_BELOW:
            model.invert_encoding()
            self._flip_optimizer_state(run.opt, g)
            result = self.evaluate_encoder(model)
        self._record_eval(run.stats, step, result)
        corr = result["correlation"]
        if step > 0 and (run.best["correlation"] is None or abs(corr) > abs(run.best["correlation"])):
            run.best.update(correlation=corr, global_step=step, epoch=epoch)
            run.best_state = {k: v.detach().clone() for k, v in g.state_dict().items()}
        self._time["eval"] += time.time() - t

    def _train_step(self, run: _Run, batch_idx: list[int], need_f: bool, need_a: bool) -> None:
        """One optimiser step on one batch: gradients of the base model in, source -> target."""
        a, g = self.args, run.model.gradiend
        t = time.time()
        f, alt = self.gradients.pair([self.train_data[i] for i in batch_idx], need_f, need_a, g.mapping)
        source = pick(a.source, f, alt).to(g.torch_dtype)
        target = pick(a.target, f, alt).to(g.torch_dtype)
        t2 = time.time()
        self._time["data_preparation"] += t2 - t
        loss = run.loss_fn(g(source), target)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        self._time["model_with_gradiend"] += time.time() - t2
        run.step += 1
        run.losses.append(float(loss.item()))
        run.stats["global_step"] = run.step
        with torch.no_grad():
            run.stats["encoder_norms"][run.step] = float(torch.linalg.vector_norm(g.encoder[0].linear.weight.float()))
            run.stats["decoder_norms"][run.step] = float(torch.linalg.vector_norm(g.decoder[0].linear.weight.float()))

    def _train_loop(self, run: _Run) -> None:
        """Epochs (or max_steps) of batches, evaluating every ``eval_steps`` and at the end."""
        a, g = self.args, run.model.gradiend
        need_f, need_a = needs(a.source, a.target)
        rng = random.Random(a.seed)
        if run.do_eval:
            self._evaluate(run, 0, 0)
        max_steps = a.max_steps if a.max_steps > 0 else None
        g.train()
        for run.epoch in range(a.num_train_epochs) if max_steps is None else itertools.count():
            batches = epoch_batches(self.train_data, self.classes, a.train_batch_size, rng)
            for bi, batch_idx in enumerate(batches):
                self._train_step(run, batch_idx, need_f, need_a)
                last = (max_steps is not None and run.step >= max_steps) or (
                    max_steps is None and run.epoch == a.num_train_epochs - 1 and bi == len(batches) - 1
                )
                if run.do_eval and (run.step % a.eval_steps == 0 or last):
                    self._evaluate(run, run.step, run.epoch)
                if last:
                    g.eval()
                    return
        g.eval()

    def _keep_best(self, run: _Run) -> None:
        """Restore the best evaluated state (save_only_best), oriented like the final one."""
        a, model, g = self.args, run.model, run.model.gradiend
        if a.save_only_best and run.best_state is not None:
            g.load_state_dict(run.best_state)
            if a.normalize_gradiend and g.latent_dim == 1 and run.best["correlation"] < NORMALIZE_BELOW:
                # the best step predates a later normalisation flip: orient it the same way
                model.invert_encoding()
                run.best["correlation"] = -run.best["correlation"]
        if not run.do_eval:
            run.best.update(global_step=run.step, epoch=run.epoch)

    def _validation_record(self, model: ModelWithGradiend, n: int) -> ValidationRecord:
        x, labels = self.validation_gradients(model.gradiend.mapping)
        pos = np.arange(labels.numel())
        if n < labels.numel():
            lab = labels.numpy()
            rng = np.random.default_rng(self.args.seed)
            picks = []
            for i, lv in enumerate((1.0, -1.0)):
                pool = pos[lab == lv]
                need = n // 2 + (1 if i < n % 2 else 0)
                picks.append(rng.permutation(pool)[:need])
            pos = np.sort(np.concatenate(picks))
        idx = torch.from_numpy(pos)
        return ValidationRecord(
            x[idx].clone(),
            labels[idx].clone(),
            model.gradiend.mapping.base_global_index().copy(),
            self.classes,
            self.args.source,
        )

    def _training_json(self, stats: dict[str, Any], best: dict[str, Any], losses: list[float]) -> dict[str, Any]:
        """``training.json`` in the reference's layout (plus ``input_dims`` and ``post_prune``)."""
        a = self.args
        fp = a.cache_fingerprint()
        fp["gradiend_input_dim"] = self._dims["final"]
        out: dict[str, Any] = {
            "training_stats": _jsonable(stats),
            "best_score_checkpoint": _jsonable(best),
            "training_args": _jsonable(a.to_dict()),
            "time": _jsonable(self._time),
            "losses": _jsonable(losses),
            "convergence_info": _jsonable(self._convergence(stats, best)),
            "cache_fingerprint": _jsonable(fp),
            "input_dims": dict(self._dims),
        }
        if self._post_prune_info is not None:
            out["post_prune"] = _jsonable(self._post_prune_info)
        return out

    def _convergence(self, stats: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
        """The reference's convergence test at the best step: |correlation| >= threshold, the two
        class means of opposite sign and each at least ``convergent_mean_by_class_threshold``."""
        a = self.args
        step = best.get("global_step")
        corr = best.get("correlation")
        means = stats.get("mean_by_class", {}).get(step) or {}
        vals = [float(v) for v in means.values()]
        min_abs = min(abs(v) for v in vals) if len(vals) == 2 else None
        converged = (
            step is not None
            and step > 0
            and corr is not None
            and abs(corr) >= a.convergent_score_threshold
            and len(vals) == 2
            and vals[0] * vals[1] < 0
            and (
                a.convergent_mean_by_class_threshold is None
                or (min_abs is not None and min_abs >= a.convergent_mean_by_class_threshold)
            )
        )
        return {
            "converged": bool(converged),
            "convergent_count": 1 if converged else 0,
            "min_convergent_seeds": 1,
            "convergence_metric": "correlation",
            "threshold": a.convergent_score_threshold,
            "convergent_mean_by_class_threshold": a.convergent_mean_by_class_threshold,
            "convergent_min_target_class_abs_mean": min_abs,
        }


def _jsonable(value: Any) -> Any:
    """Plain JSON types; dict keys become strings (as the reference's ``to_jsonable``); non-finite
    floats become ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value
