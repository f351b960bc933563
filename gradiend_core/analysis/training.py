"""The training record of a checkpoint: score and loss over steps, best step, convergence, pruning.

``training.json`` as the reference trainer writes it (``gradiend`` 0.2.3,
``trainer.core.stats.write_training_stats``)::

    {"training_stats": {"global_step": int, "correlation": float,
                        "scores": {"<step>": correlation, ...},        # evaluations
                        "encoder_norms": {"<step>": float}, "decoder_norms": {...},
                        "mean_by_class": {"<step>": {"<label>": mean}}, ...},
     "best_score_checkpoint": {"correlation": float|null, "global_step": int, "epoch": int, "loss"?: float},
     "training_args": {... "learning_rate", "num_train_epochs", "max_steps", "eval_steps",
                       "pre_prune_config": {...}|null, "post_prune_config": {...}|null ...},
     "time": {...}, "losses": [loss of step 1, step 2, ...],
     "convergence_info"?: {"converged": bool, "convergence_metric": str, "threshold": float, ...}}

gradiend_core's own trainer writes the same layout plus ``input_dims`` (input_dim after each
stage) and ``post_prune`` (dims before/after and the validation correlation after post-pruning).

``save_pretrained(training=...)`` writes any dict there, so every field is optional here. Pruning
configs are collected from ``training_args`` (dicts, or ``{"_type", "_repr"}`` strings when a
config object was serialised by repr), from ``config.json`` metadata and ``gradiend_context.json``
(only stages ``training.json`` does not record), and from our export provenance ``pruning.json``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PruningConfig", "TrainingRecord", "moving_average", "parse_config_repr", "step_series", "training_record"]

#: training_args keys shown as the run's settings, in this order, when present.
ARG_KEYS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "train_batch_size",
    "eval_steps",
    "source",
    "target",
    "latent_dim",
    "activation_encoder",
    "seed",
    "convergent_metric",
    "convergent_score_threshold",
)
_PRUNE_KEYS = {
    "pre_prune_config": "pre-pruning (before training)",
    "post_prune_config": "post-pruning (after training)",
}


@dataclass(frozen=True)
class PruningConfig:
    """One recorded pruning step.

    Attributes:
        stage: ``"pre-pruning (before training)"``, ``"post-pruning (after training)"`` or
            ``"export (gradiend_core)"``.
        source: where it was found (``training.json``, ``config.json metadata``, ``pruning.json``).
        settings: the recorded fields (topk, threshold, part, n_samples, ...).
    """

    stage: str
    source: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class TrainingRecord:
    """What a checkpoint records about its training (every part may be missing).

    Attributes:
        eval_steps: int64 ``(e,)``, steps with an encoder evaluation, ascending.
        scores: float64 ``(e,)``, the score (encoder correlation) at those steps.
        loss_steps: int64 ``(s,)``, training steps ``1..s``.
        losses: float64 ``(s,)``, the training loss of each step.
        best_step, best_epoch: of the best checkpoint (``None`` if not recorded).
        best_score: the best checkpoint's correlation (``None`` if not recorded).
        final_step: the last training step.
        convergence: ``convergence_info`` as recorded (empty if absent).
        settings: selected ``training_args`` (see :data:`ARG_KEYS`).
        pruning: recorded pruning steps.
        time_seconds: ``time`` as recorded (seconds per phase).
        input_dims: input_dim after each stage (``unpruned``, ``after_pre_prune``, ``final``) when
            the trainer records it (gradiend_core's trainer writes ``input_dims``).
        post_prune_result: what post-pruning measured (``input_dim_before``, ``input_dim_after``,
            ``validation_correlation``) when recorded (``post_prune``).
        notes: what is missing or could not be read, in words.
    """

    eval_steps: np.ndarray
    scores: np.ndarray
    loss_steps: np.ndarray
    losses: np.ndarray
    best_step: int | None = None
    best_epoch: int | None = None
    best_score: float | None = None
    final_step: int | None = None
    convergence: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    pruning: list[PruningConfig] = field(default_factory=list)
    time_seconds: dict[str, float] = field(default_factory=dict)
    input_dims: dict[str, int] = field(default_factory=dict)
    post_prune_result: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def has_curves(self) -> bool:
        return bool(self.eval_steps.size or self.loss_steps.size)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, str) and x.strip().lstrip("-").isdigit():
        return int(x)
    return None


def step_series(series: Any) -> tuple[np.ndarray, np.ndarray]:
    """``{"<step>": value}`` (JSON object keys are strings) -> sorted int64 steps and float64
    values; entries whose step or value is not a number are skipped."""
    if not isinstance(series, Mapping):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    pairs = sorted(
        (s, v) for s, v in ((_int(k), _number(v)) for k, v in series.items()) if s is not None and v is not None
    )
    return np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.float64)


def parse_config_repr(text: str) -> dict[str, Any]:
    """Fields of a dataclass repr such as ``"PrePruneConfig(n_samples=16, topk=0.1, source='diff')"``.

    Values that are Python literals are parsed (numbers, strings, None, booleans); others are
    kept as text. A repr cut short (the reference keeps 120 characters) yields the fields before
    the cut. Returns ``{}`` for text that is not ``Name(...``.
    """
    m = re.fullmatch(r"\s*\w+\((.*?)(\)?)\s*", text or "", flags=re.S)  # the reference cuts reprs at 120 chars
    if not m:
        return {}
    body, closed = m.group(1), bool(m.group(2))
    out: dict[str, Any] = {}
    for key, raw in re.findall(r"(\w+)=((?:'[^']*'|\"[^\"]*\"|\[[^\]]*\]|[^,])*)", body):
        raw = raw.strip()
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    if out and not closed and not body.rstrip().endswith(","):
        out.popitem()  # the last field was cut
    return out


def _config_settings(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Mapping):
        if "_repr" in value:
            parsed = parse_config_repr(str(value["_repr"]))
            return parsed or {"repr": str(value["_repr"])}
        return {
            k: v for k, v in value.items() if v is not None and k not in ("dataset", "mask", "inplace", "return_mask")
        }
    if isinstance(value, str):
        return parse_config_repr(value) or {"repr": value}
    return None


def _pruning_from(args: Any, source: str) -> list[PruningConfig]:
    out = []
    if isinstance(args, Mapping):
        for key, stage in _PRUNE_KEYS.items():
            settings = _config_settings(args.get(key))
            if settings:
                out.append(PruningConfig(stage, source, settings))
    return out


def training_record(
    training: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> TrainingRecord:
    """Read a training record, tolerating absent or partial files.

    Args:
        training: parsed ``training.json`` (or ``None``).
        metadata: ``config.json`` metadata (may hold pruning configs).
        provenance: parsed ``pruning.json`` of a gradiend_core export.
        context: parsed ``gradiend_context.json`` (may hold pruning configs too).

    Returns:
        A :class:`TrainingRecord`; ``notes`` says what was missing.
    """
    notes: list[str] = []
    t = training if isinstance(training, Mapping) else {}
    if training is None:
        notes.append("This checkpoint has no training.json.")
    elif not isinstance(training, Mapping):
        notes.append("training.json is not a JSON object; it was ignored.")
    stats = t.get("training_stats") if isinstance(t.get("training_stats"), Mapping) else {}
    eval_steps, scores = step_series(stats.get("scores"))
    if t and not eval_steps.size:
        notes.append("training.json records no evaluation scores (training_stats.scores).")
    raw_losses = t.get("losses")
    losses = (
        np.array([_number(v) if _number(v) is not None else np.nan for v in raw_losses], dtype=np.float64)
        if isinstance(raw_losses, list)
        else np.empty(0)
    )
    if t and not losses.size:
        notes.append("training.json records no per-step losses.")
    best = t.get("best_score_checkpoint") if isinstance(t.get("best_score_checkpoint"), Mapping) else {}
    args = t.get("training_args") if isinstance(t.get("training_args"), Mapping) else {}
    conv = t.get("convergence_info") if isinstance(t.get("convergence_info"), Mapping) else {}
    if t and not conv:
        notes.append("No convergence_info (the trainer writes it only when a convergence threshold is set).")
    pruning = _pruning_from(args, "training.json")
    for extra, where in ((metadata, "config.json metadata"), (context, "gradiend_context.json")):
        pruning += [p for p in _pruning_from(extra or {}, where) if all(p.stage != q.stage for q in pruning)]
    if isinstance(provenance, Mapping):
        keys = ("part", "topk", "threshold", "mask_file", "input_dim_before", "kept_dims", "created_utc", "source_path")
        pruning.append(
            PruningConfig(
                "export (gradiend_core)",
                "pruning.json",
                {k: provenance[k] for k in keys if provenance.get(k) is not None},
            )
        )
    time_s = (
        {k: float(v) for k, v in (t.get("time") or {}).items() if _number(v) is not None}
        if isinstance(t.get("time"), Mapping)
        else {}
    )
    final = _int(stats.get("global_step"))
    if final is None and losses.size:
        final = int(losses.size)
    return TrainingRecord(
        eval_steps=eval_steps,
        scores=scores,
        loss_steps=np.arange(1, losses.size + 1, dtype=np.int64),
        losses=losses,
        best_step=_int(best.get("global_step")),
        best_epoch=_int(best.get("epoch")),
        best_score=_number(best.get("correlation")),
        final_step=final,
        convergence=dict(conv),
        settings={k: args[k] for k in ARG_KEYS if k in args},
        pruning=pruning,
        time_seconds=time_s,
        input_dims={str(k): int(v) for k, v in (t.get("input_dims") or {}).items() if _int(v) is not None}
        if isinstance(t.get("input_dims"), Mapping)
        else {},
        post_prune_result=dict(t["post_prune"]) if isinstance(t.get("post_prune"), Mapping) else {},
        notes=notes,
    )


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (shorter at the start), float64, NaN-aware.

    Raises:
        ValueError: for ``window < 1``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, v.size + 1)
    lo = np.maximum(0, hi - window)
    count = ccount[hi] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[hi] - csum[lo]) / np.maximum(count, 1), np.nan)
