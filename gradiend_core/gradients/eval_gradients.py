"""Labelled source gradients to evaluate a checkpoint's encoder on (for the pruning curve).

Two sources, for any checkpoint:

* **saved**: the ``validation_gradients.safetensors`` that gradiend_core's trainer writes next to
  a checkpoint (:class:`~gradiend_core.checkpoint.records.ValidationRecord`);
* **computed**: from the base model named in the checkpoint (``metadata.base_model``, a local
  directory; relative paths are looked up from the working directory and from the checkpoint's
  parent directories) and a labelled text file in the layout of ``gradiend``'s text trainer
  (:mod:`gradiend_core.gradients.reference_text`), exactly as that trainer computes them for its
  encoder evaluation. This works for checkpoints written by the reference's trainer as well as
  by ours. Computed gradients are cached in the user cache directory
  (:func:`gradiend_core.util.cache.cache_dir` ``("eval-gradients")``), keyed by the checkpoint's weight,
  config and mapping files (path, size, modification time), the data file's sha256 and the base
  model's files, the split, classes and source.

Labels are the reference's (see :func:`gradiend_core.gradients.reference_text.reference_labels`):
the label of the *encoded* gradient, +1 for the first class of the trained pair, negated for
the alternative source. The trained pair and the source come from ``gradiend_context.json``
(``feature_class_encoding_direction``: the class with +1 first; ``source``), unless given.

Note on gradiend_core's own trainer: it labels a validation gradient by its example's class
without negating for the alternative source, so on its checkpoints (source ``alternative``) the
reference's measure, and hence the curve, has the opposite sign of ``training.json``'s
correlation. Ratios such as "the share of the full correlation a cut keeps" are unaffected.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..checkpoint import CheckpointData
from ..checkpoint.files import CONFIG_FILE, CONTEXT_FILE, MAPPING_STEMS
from ..errors import CheckpointError
from ..space.param_map import ParamMap
from ..util.cache import cache_dir

if TYPE_CHECKING:  # the trainer is imported when gradients are computed, not with this module
    from .data import Example
    from .gather import GradientSource

__all__ = [
    "CACHE_SUBDIR",
    "EvalGradients",
    "GradientsCancelled",
    "compute_eval_gradients",
    "describe_data",
    "eval_gradients",
    "from_validation_record",
    "gradients_cache_key",
    "resolve_base_model",
    "trained_pair_and_source",
]

CACHE_SUBDIR = "eval-gradients"
#: The config file of a checkpoint directory and of a Hugging Face model directory alike.
CACHE_FORMAT = "gradiend_core.eval_gradients/1"
SOURCES = ("factual", "alternative", "diff")
#: ``progress(done_examples, total_examples)``, called between examples.
Progress = Callable[[int, int], None]
#: A callable returning True to stop, or an object with ``is_set()`` (``threading.Event``).
Cancel = Callable[[], bool] | Any


class GradientsCancelled(Exception):
    """The computation of gradients was cancelled; nothing was cached."""


@dataclass
class EvalGradients:
    """Source gradients of labelled examples, in a checkpoint's input space.

    Attributes:
        gradients: float32 ``(m, input_dim)``; column ``i`` is the checkpoint's local dim ``i``.
        labels: float64 ``(m,)``: the reference's label of each encoded gradient (+1 / -1).
        classes: the trained pair (first class -> +1 for its factual gradient).
        source: which gradient each row is (``factual``, ``alternative`` or ``diff``).
        origin: where they come from (the record file, or the data file they were computed from).
        split: the data split(s) used.
        cache_file: the cache file holding them, when computed.
    """

    gradients: torch.Tensor
    labels: np.ndarray
    classes: tuple[str, str]
    source: str
    origin: str
    split: str = ""
    cache_file: Path | None = None

    @property
    def n_samples(self) -> int:
        return int(self.labels.size)


def _is_cancelled(cancel: Cancel | None) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def trained_pair_and_source(data: CheckpointData) -> tuple[tuple[str, str] | None, str | None]:
    """The trained pair and the source from ``gradiend_context.json`` (either may be ``None``).

    The pair is read from ``feature_class_encoding_direction`` (class -> +1 / -1, the reference's
    record of its ``target_classes``).
    """
    ctx = data.side_files.get(CONTEXT_FILE)
    if not isinstance(ctx, dict):
        p = data.path / CONTEXT_FILE
        try:
            ctx = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        except (OSError, ValueError):
            ctx = {}
    source = ctx.get("source") if ctx.get("source") in SOURCES else None
    direction = ctx.get("feature_class_encoding_direction")
    pair = None
    if isinstance(direction, dict):
        pos = [str(c) for c, v in direction.items() if isinstance(v, (int, float)) and v > 0]
        neg = [str(c) for c, v in direction.items() if isinstance(v, (int, float)) and v < 0]
        if len(pos) == 1 and len(neg) == 1:
            pair = (pos[0], neg[0])
    return pair, source


def from_validation_record(data: CheckpointData, record: Any) -> EvalGradients:
    """The saved validation gradients of a checkpoint, on its columns, with the reference's labels.

    Args:
        data: the checkpoint.
        record: its :class:`~gradiend_core.checkpoint.records.ValidationRecord` (labels +1 for the
            record's first class, by example).

    Raises:
        CheckpointError: when the record does not cover the checkpoint's dims.
    """
    from ..checkpoint.files import VALIDATION_FILE
    from ..checkpoint.records import align_columns

    cols = align_columns(record.base_global_index, data.param_map.base_global_index(), VALIDATION_FILE)
    x = (
        record.gradients
        if np.array_equal(cols, np.arange(cols.size)) and record.gradients.shape[1] == cols.size
        else record.gradients[:, torch.from_numpy(cols)]
    )
    labels = record.labels.to(torch.float64).numpy().copy()
    if record.source == "alternative":
        labels = -labels
    return EvalGradients(
        x.to(torch.float32), labels, tuple(record.classes), record.source, VALIDATION_FILE, "validation"
    )


def resolve_base_model(data: CheckpointData, base_model: str | os.PathLike | None = None) -> Path:
    """The local directory of the checkpoint's base model.

    Args:
        data: the checkpoint (``metadata.base_model`` names its base model).
        base_model: a directory to use instead.

    Raises:
        CheckpointError: when no such directory exists (the message says to pass one).
    """
    if base_model is not None:
        p = Path(base_model).expanduser()
        if not (p / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{p}: not a model directory (no {CONFIG_FILE}); give the base model's local directory."
            )
        return p.resolve()
    name = data.metadata.get("base_model")
    if not isinstance(name, str) or not name:
        raise CheckpointError(
            f"{data.path}: config.json names no base_model; give the base model's local directory (--base-model DIR)."
        )
    candidates = [Path(name).expanduser()]
    if not candidates[0].is_absolute():
        candidates = [Path.cwd() / name] + [parent / name for parent in data.path.resolve().parents]
    for c in candidates:
        if (c / CONFIG_FILE).is_file():
            return c.resolve()
    raise CheckpointError(
        f"base model {name!r} (metadata.base_model of {data.path}) is not a local directory here "
        "(looked in the working directory and the checkpoint's parent directories); "
        "give its directory (--base-model DIR). Models are not downloaded."
    )


def _identity(p: Path) -> str:
    st = p.stat()
    return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def gradients_cache_key(data: CheckpointData, data_file: Path, base_model: Path, settings: dict[str, Any]) -> str:
    """The cache key of computed gradients (hex sha256).

    Covers the checkpoint's weight file, ``config.json`` and mapping files (path, size,
    modification time: they define the input space), the data file's content, every file of the
    base model directory (path, size, modification time) and ``settings`` (split, classes,
    source, ...).
    """
    h = hashlib.sha256(CACHE_FORMAT.encode())
    files = [data.weights_file] if data.weights_file is not None else []
    files += sorted(p for p in data.path.iterdir() if p.name == CONFIG_FILE or p.name.split(".", 1)[0] in MAPPING_STEMS)
    for p in files:
        h.update(_identity(p).encode())
    h.update(_sha256(data_file).encode())
    for p in sorted(base_model.iterdir()):
        if p.is_file():
            h.update(_identity(p).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _read_cache(path: Path, data_file: Path) -> EvalGradients | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != CACHE_FORMAT:
                return None
            grads, labels, order = f.get_tensor("gradients"), f.get_tensor("labels"), f.get_tensor("order")
        info = json.loads(meta["info"])
    except Exception:
        return None  # a damaged cache file is recomputed, never trusted
    if not torch.equal(order, torch.arange(order.numel())):
        grads, labels = grads[order], labels[order]
    return EvalGradients(
        grads,
        labels.to(torch.float64).numpy(),
        tuple(info["classes"]),
        info["source"],
        str(data_file),
        info["split"],
        path,
    )


def _write_cache(path: Path, grads: torch.Tensor, labels: np.ndarray, order: list[int], info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(
            {
                "gradients": grads.contiguous(),
                "labels": torch.from_numpy(labels.astype(np.float32)),
                "order": torch.tensor(order, dtype=torch.int64),
            },
            tmp,
            metadata={"format": CACHE_FORMAT, "info": json.dumps(info)},
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prepare(data: CheckpointData, data_file, split, classes, source):
    """``(data file, examples, pair, source, split text)`` of a data file for a checkpoint."""
    from .reference_text import read_text_data, text_examples

    data_path = Path(data_file).expanduser()
    df = read_text_data(data_path)
    if data_path.is_dir():
        data_path = next(
            data_path / f"training{e}" for e in (".csv", ".parquet") if (data_path / f"training{e}").is_file()
        )
    ctx_pair, ctx_source = trained_pair_and_source(data)
    if classes is None:
        classes = ctx_pair
    if classes is None:
        found = sorted(set(df["label_class"].astype(str)))
        if len(found) != 2:
            raise CheckpointError(
                "the checkpoint does not record its trained pair (gradiend_context.json) "
                f"and the data has {len(found)} classes ({', '.join(found)}); "
                "say which two, first class first (classes=(A, B) / --classes A,B)."
            )
        classes = (found[0], found[1])
    pair = (str(classes[0]), str(classes[1]))
    source = source or ctx_source or "alternative"
    if source not in SOURCES:
        raise CheckpointError(f"source must be one of {', '.join(SOURCES)}; got {source!r}.")
    examples, split_text = text_examples(df, pair, split)
    return data_path, examples, pair, source, split_text


def describe_data(
    data: CheckpointData,
    data_file: str | os.PathLike,
    *,
    split: str | Sequence[str] | None = None,
    classes: tuple[str, str] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """What :func:`compute_eval_gradients` would compute, without computing it.

    Returns:
        ``examples`` (distinct examples, one base-model gradient each, two for ``diff``),
        ``split``, ``classes`` and ``source``.

    Raises:
        CheckpointError: as :func:`compute_eval_gradients` for unreadable data or missing classes.
    """
    _, examples, pair, source, split_text = _prepare(data, data_file, split, classes, source)
    return {"examples": len(examples), "split": split_text, "classes": pair, "source": source}


def compute_eval_gradients(
    data: CheckpointData,
    data_file: str | os.PathLike,
    *,
    base_model: str | os.PathLike | None = None,
    split: str | Sequence[str] | None = None,
    classes: tuple[str, str] | None = None,
    source: str | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    use_cache: bool = True,
    cache_only: bool = False,
) -> EvalGradients | None:
    """Source gradients of a labelled text file's examples, as the reference's trainer computes them.

    Args:
        data: the checkpoint (its param_map says which base-model entries are gradient dims).
        data_file: ``.csv`` / ``.parquet`` in the reference's text-trainer layout.
        base_model: the base model's local directory (default: ``metadata.base_model``).
        split: split(s) of the data to use (default: ``validation`` if present, else ``test``,
            else all rows).
        classes: the trained pair (default: from ``gradiend_context.json``; else the data's two
            classes in sorted order, as the reference infers them).
        source: ``factual``, ``alternative`` or ``diff`` (default: from ``gradiend_context.json``,
            else ``alternative``, the reference's default).
        progress: ``progress(done, total)`` called after each example (``total`` distinct
            examples); not called when the gradients come from the cache.
        cancel: checked before each example: a callable returning True, or a ``threading.Event``.
        use_cache: read and write the cache.
        cache_only: only look in the cache; return ``None`` when the gradients are not there.

    Returns:
        :class:`EvalGradients` with one row per example the reference's evaluation encodes
        (:func:`~gradiend_core.gradients.reference_text.eval_order`); ``None`` for a cache miss with
        ``cache_only``.

    Raises:
        CheckpointError: unreadable data, unknown base model, classes or parameters that do not fit.
        GradientsCancelled: when ``cancel`` fired (nothing is cached).
    """
    from .gather import GradientSource
    from .masked_lm import load_masked_lm
    from .reference_text import eval_order, mlm_loss, reference_labels

    data_path, examples, pair, source, split_text = _prepare(data, data_file, split, classes, source)
    order = eval_order(examples, pair, source)
    labels = reference_labels(examples, pair, source)
    base_dir = resolve_base_model(data, base_model)
    settings = {
        "split": split_text,
        "classes": list(pair),
        "source": source,
        "max_length": 256,
        "placeholder": "[MASK]",
    }
    key = gradients_cache_key(data, data_path, base_dir, settings)
    cache_file = cache_dir(CACHE_SUBDIR) / f"{key[:40]}.safetensors" if use_cache else None
    if cache_file is not None and cache_file.is_file():
        hit = _read_cache(cache_file, data_path)
        if hit is not None and hit.gradients.shape[1] == data.architecture.input_dim:
            return hit
    if cache_only:
        return None

    model, tokenizer = load_masked_lm(str(base_dir))
    gsrc = GradientSource(model, mlm_loss(tokenizer), _mapped_parameters(model, data.param_map, base_dir))
    grads = _source_gradients(gsrc, examples, source, data.param_map, progress, cancel)
    info = {"classes": list(pair), "source": source, "split": split_text, "examples": len(examples)}
    if cache_file is not None:
        try:
            _write_cache(cache_file, grads, labels, order, info)
        except OSError:
            cache_file = None  # an unwritable cache must not fail the computation
    if order != list(range(len(examples))):
        idx = torch.tensor(order, dtype=torch.int64)
        grads, labels = grads[idx], labels[np.asarray(order)]
    return EvalGradients(grads, labels, pair, source, str(data_path), split_text, cache_file)


def _mapped_parameters(model: torch.nn.Module, pmap: ParamMap, base_dir: Path) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of the base model for every parameter the param_map lists, in its order.

    Raises:
        CheckpointError: the base model lacks a mapped parameter.
    """
    named = dict(model.named_parameters())
    params = []
    for e in pmap:
        if e.name not in named:
            raise CheckpointError(
                f"the checkpoint maps parameter {e.name!r}, which the base model {base_dir} does not have; "
                "give the base model the GRADIEND was trained on."
            )
        params.append((e.name, named[e.name]))
    return params


def _source_gradients(
    gsrc: GradientSource,
    examples: Sequence[Example],
    source: str,
    pmap: ParamMap,
    progress: Progress | None,
    cancel: Cancel | None,
) -> torch.Tensor:
    """The ``source`` gradient of each example at the mapped dims: float32 ``(len(examples), input_dim)``.

    Raises:
        GradientsCancelled: ``cancel`` fired before an example.
        CheckpointError: an example the base model cannot score (e.g. a target that is not one token).
    """
    from .gather import needs, pick

    need_f, need_a = needs(source)
    grads = torch.empty(len(examples), pmap.input_dim, dtype=torch.float32)
    for i, ex in enumerate(examples):
        if _is_cancelled(cancel):
            raise GradientsCancelled(f"cancelled after {i} of {len(examples)} examples; nothing was cached.")
        try:
            f, a = gsrc.pair([ex], need_f, need_a, pmap)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"example {i} ({ex.inputs!r}): {e}") from e
        grads[i] = pick(source, f, a)
        if progress is not None:
            progress(i + 1, len(examples))
    return grads


def eval_gradients(
    data: CheckpointData,
    *,
    data_file: str | os.PathLike | None = None,
    **kwargs: Any,
) -> EvalGradients:
    """Gradients for a checkpoint: computed from ``data_file`` when given, else its saved record.

    Args:
        data: the checkpoint.
        data_file: a labelled text file (see :func:`compute_eval_gradients`, which gets ``kwargs``).

    Raises:
        CheckpointError: when neither is available (the message says what to give).
    """
    if data_file is not None:
        return compute_eval_gradients(data, data_file, **kwargs)
    from ..checkpoint.files import VALIDATION_FILE
    from ..checkpoint.records import load_validation_record

    record = load_validation_record(data.path)
    if record is None:
        raise CheckpointError(
            f"{data.path} has no saved validation gradients ({VALIDATION_FILE}); give a labelled data file in the "
            "reference's text layout (columns masked, label, label_class, split) to compute them from the base model "
            "(--data FILE)."
        )
    return from_validation_record(data, record)
