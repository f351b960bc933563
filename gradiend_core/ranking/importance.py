"""Importance of each GRADIEND input dimension, by ``source``.

A source is one of the four weight ``part`` s or ``gradient-mean``. The parts follow the reference
package (``GradiendModel.get_weight_importance``) and the pruning guide: importance is the
absolute value of the weights in that part,

* ``encoder-weight``: L1 norm of each encoder weight column, ``sum_j |W_enc[j, i]|``;
* ``decoder-weight``: L1 norm of each decoder weight row, ``sum_j |W_dec[i, j]|``;
* ``decoder-bias``: ``|b_dec[i]|`` (zeros when the decoder has no bias);
* ``decoder-sum``: ``|sum_j W_dec[i, j] + b_dec[i]|``.

``gradient-mean`` is the pre-prune importance, ``|mean source gradient|`` over the examples
pre-pruning averaged (``pre_prune.safetensors`` beside a checkpoint written by a training run with
a ``pre_prune_config``), matched to the checkpoint's dims by base-global index; dims pre-pruning did
not measure get NaN (they rank last and never pass a threshold).

Results are float32 of shape ``(input_dim,)``. Weight parts are computed with the same torch
operations in the weights' own dtype as the reference computes them (so float16/bfloat16 sums
round exactly as the reference's do, and selections agree), then converted to float32; in chunks
of input dimensions so that peak extra memory stays bounded for very large models.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..checkpoint import DEC_B, DEC_W, ENC_W, CheckpointData
from ..errors import CheckpointError

__all__ = [
    "DEFAULT_PART",
    "GRADIENT_MEAN",
    "PARTS",
    "SOURCES",
    "gradient_mean_importance",
    "iter_part_importance",
    "nonfinite_warning",
    "part_importance_at",
    "part_importance",
    "source_importance",
    "validate_part",
    "validate_source",
    "weight_importance",
]

PARTS = ("encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum")
DEFAULT_PART = "decoder-weight"
#: The pre-prune importance, |mean source gradient| from ``pre_prune.safetensors``.
GRADIENT_MEAN = "gradient-mean"
#: Every importance source: the four weight parts, then the pre-prune gradient mean.
SOURCES = PARTS + (GRADIENT_MEAN,)
#: Input dimensions processed per chunk (bounds the float32 temporaries to a few tens of MB).
CHUNK = 1 << 22


def validate_part(part: str | None) -> str:
    """Normalise ``part`` (case-insensitive; ``None`` means ``decoder-weight``).

    Raises:
        ValueError: if ``part`` is not one of :data:`PARTS`.
    """
    if part is not None and not isinstance(part, str):
        raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part!r}.")
    p = (part or DEFAULT_PART).lower()
    if p not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part!r}.")
    return p


def validate_source(source: str | None) -> str:
    """Normalise an importance ``source`` (a part or ``gradient-mean``; ``None`` means ``decoder-weight``).

    Raises:
        ValueError: for anything else.
    """
    if source is not None and isinstance(source, str) and source.lower() == GRADIENT_MEAN:
        return GRADIENT_MEAN
    try:
        return validate_part(source)
    except ValueError:
        raise ValueError(f"importance source must be one of {', '.join(SOURCES)}; got {source!r}.") from None


def part_importance(
    enc_w: torch.Tensor | None, dec_w: torch.Tensor | None, dec_b: torch.Tensor | None, part: str, length: int
) -> torch.Tensor:
    """Importance of a block of ``length`` input dims from that block's weights (the definitions above).

    Args:
        enc_w: encoder weight columns of the block, ``(latent_dim, length)`` (for encoder-weight).
        dec_w: decoder weight rows of the block, ``(length, latent_dim)`` (for decoder-weight/-sum).
        dec_b: decoder bias entries of the block, ``(length,)``, or ``None`` without a bias.
        part: one of :data:`PARTS` (already validated).
        length: dims in the block.

    Returns:
        ``(length,)`` in the weights' dtype (as the reference computes it); zeros for
        decoder-bias without a bias.
    """
    with torch.no_grad():
        # with one latent unit the sum has one term, so abs() alone gives the same bits
        if part == "encoder-weight":
            return enc_w.abs().reshape(-1) if enc_w.shape[0] == 1 else enc_w.abs().sum(dim=0)
        if part == "decoder-weight":
            return dec_w.abs().reshape(-1) if dec_w.shape[1] == 1 else dec_w.abs().sum(dim=1)
        if part == "decoder-bias":
            return dec_b.abs() if dec_b is not None else torch.zeros(length)
        v = dec_w.reshape(-1) if dec_w.shape[1] == 1 else dec_w.sum(dim=1)
        return (v + dec_b if dec_b is not None else v).abs()


def weight_importance(state_dict: Mapping[str, torch.Tensor], part: str = DEFAULT_PART) -> np.ndarray:
    """Importance of every input dimension from the GRADIEND weights.

    Args:
        state_dict: GRADIEND weights with keys ``encoder.0.linear.weight`` (latent_dim, input_dim),
            ``decoder.0.linear.weight`` (input_dim, latent_dim) and optionally
            ``decoder.0.linear.bias`` (input_dim,); any float dtype.
        part: one of :data:`PARTS`.

    Returns:
        float32 array of shape ``(input_dim,)``.

    Raises:
        ValueError: for an unknown part.
    """
    part = validate_part(part)
    dec_w = state_dict[DEC_W]
    n = int(dec_w.shape[0])
    out = np.empty(n, dtype=np.float32)
    bias = state_dict.get(DEC_B)
    enc_w = state_dict[ENC_W]
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        b = bias[start:stop] if bias is not None else None
        imp = part_importance(enc_w[:, start:stop], dec_w[start:stop], b, part, stop - start)
        out[start:stop] = imp.to(torch.float32).numpy()
    return out


def iter_part_importance(
    data: CheckpointData, part: str, block_dims: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float32 importance of dims start..start+len)`` over the whole input space, in order.

    Reads the checkpoint's weight file block by block (only the tensors ``part`` needs), so memory
    stays at one block however large the checkpoint; the values equal :func:`weight_importance` of
    the loaded weights bit for bit.
    """
    from ..checkpoint.weights import BLOCK_DIMS, part_tensors

    part = validate_part(part)
    for block in data.weights.blocks(part_tensors(part), block_dims or BLOCK_DIMS):
        imp = part_importance(block.enc_w, block.dec_w, block.dec_b, part, block.stop - block.start)
        yield block.start, imp.to(torch.float32).numpy()


def part_importance_at(data: CheckpointData, part: str, idx: np.ndarray) -> np.ndarray:
    """float32 importance of the dims ``idx`` (any order) of a weight part, read from the weight file."""
    from ..checkpoint.weights import part_tensors

    part = validate_part(part)
    idx = np.asarray(idx, dtype=np.int64)
    uniq, inverse = np.unique(idx, return_inverse=True)
    block = data.weights.gather(uniq, part_tensors(part))
    imp = part_importance(block.enc_w, block.dec_w, block.dec_b, part, uniq.size).to(torch.float32).numpy()
    return imp[inverse]


def gradient_mean_importance(data: CheckpointData, record: Any = None) -> np.ndarray:
    """The pre-prune importance (|mean source gradient|) of each of the checkpoint's input dims.

    It is read from ``pre_prune.safetensors`` next to the checkpoint and matched to the
    checkpoint's dims by base-global index, so it applies to a pre-pruned or pre- and post-pruned
    checkpoint as well as to an unpruned one.

    Args:
        data: the checkpoint.
        record: its :class:`~gradiend_core.checkpoint.records.PrePruneRecord` if already loaded.

    Returns:
        float32 ``(input_dim,)``; NaN for dims pre-pruning did not measure.

    Raises:
        CheckpointError: when the checkpoint has no pre-prune record, or it is malformed.
    """
    if record is None:
        from ..checkpoint.files import PRE_PRUNE_FILE
        from ..checkpoint.records import load_pre_prune_record

        record = load_pre_prune_record(data.path)
        if record is None:
            raise CheckpointError(
                f"{data.path} has no {PRE_PRUNE_FILE}, so there is no {GRADIENT_MEAN} importance: it is written by a "
                "gradiend_core training run with a pre_prune_config. Rank by a weight part instead (--part)."
            )
    return record.importance_for(data.param_map.base_global_index())


def source_importance(data: CheckpointData, source: str = DEFAULT_PART, record: Any = None) -> np.ndarray:
    """Importance of ``source`` for every input dim of a checkpoint, float32 ``(input_dim,)``.

    The one place that chooses between a weight part and the pre-prune gradient mean.

    Raises:
        ValueError: for an unknown source; CheckpointError: for ``gradient-mean`` without a record.
    """
    source = validate_source(source)
    if source == GRADIENT_MEAN:
        return gradient_mean_importance(data, record)
    if data.loaded or data.weights is None:
        return weight_importance(data.state_dict, source)
    out = np.empty(data.architecture.input_dim, dtype=np.float32)
    for start, v in iter_part_importance(data, source):
        out[start : start + v.size] = v
    return out


def nonfinite_warning(source: str, n_nan: int, n_inf: int, n: int) -> str | None:
    """The one warning text for NaN or infinite importance (``None`` when there is none)."""
    if source == GRADIENT_MEAN:
        if not n_nan:
            return None
        return (
            f"pre-pruning did not measure {n_nan:,} of the {n:,} dims; they have no {GRADIENT_MEAN} importance, "
            "rank last and never pass a threshold."
        )
    if not (n_nan or n_inf):
        return None
    return (
        f"{n_nan + n_inf:,} of {n:,} {source} importance values are NaN or Inf (the weights hold non-finite values). "
        "NaN ranks below every number and never passes a threshold; +Inf ranks first; neither counts as importance "
        "kept."
    )


def warn_nonfinite(importance: np.ndarray, what: str) -> int:
    """Warn (a ``RuntimeWarning``) when importance holds NaN or Inf; return the count."""
    nan = int(np.count_nonzero(np.isnan(importance)))
    bad = int(importance.size - np.count_nonzero(np.isfinite(importance)))
    text = nonfinite_warning(what, nan, bad - nan, importance.size)
    if text:
        warnings.warn(text, RuntimeWarning, stacklevel=2)
    return bad
