"""Importance of each GRADIEND input dimension, per ``part``.

Definitions follow the reference package (``GradiendModel.get_weight_importance``) and the
pruning guide: importance is the absolute value of the weights in that part,

* ``encoder-weight``: L1 norm of each encoder weight column, ``sum_j |W_enc[j, i]|``;
* ``decoder-weight``: L1 norm of each decoder weight row, ``sum_j |W_dec[i, j]|``;
* ``decoder-bias``: ``|b_dec[i]|`` (zeros when the decoder has no bias);
* ``decoder-sum``: ``|sum_j W_dec[i, j] + b_dec[i]|``.

Results are float32 of shape ``(input_dim,)``. They are computed with the same torch operations
in the weights' own dtype as the reference computes them (so float16/bfloat16 sums round exactly
as the reference's do, and selections agree), then converted to float32; in chunks of input
dimensions so that peak extra memory stays bounded for very large models.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Optional

import numpy as np
import torch

from .checkpoint import DEC_B, DEC_W, ENC_W

PARTS = ("encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum")
DEFAULT_PART = "decoder-weight"
#: Input dimensions processed per chunk (bounds the float32 temporaries to a few tens of MB).
CHUNK = 1 << 22


def validate_part(part: Optional[str]) -> str:
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
    with torch.no_grad():
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            if part == "encoder-weight":
                v = enc_w[:, start:stop].abs().sum(dim=0)
            elif part == "decoder-weight":
                v = dec_w[start:stop].abs().sum(dim=1)
            elif part == "decoder-bias":
                v = bias[start:stop].abs() if bias is not None else torch.zeros(stop - start)
            else:
                v = dec_w[start:stop].sum(dim=1)
                if bias is not None:
                    v = v + bias[start:stop]
                v = v.abs()
            out[start:stop] = v.to(torch.float32).numpy()
    return out


def warn_nonfinite(importance: np.ndarray, what: str) -> int:
    """Warn (once per call site and ``what``) when importance holds NaN or Inf; return the count."""
    bad = int(importance.size - np.count_nonzero(np.isfinite(importance)))
    if bad:
        warnings.warn(
            f"{what}: {bad} of {importance.size} importance values are NaN or Inf (the weights hold non-finite "
            "values). NaN ranks below every number and never passes a threshold; +Inf ranks first.",
            RuntimeWarning,
            stacklevel=2,
        )
    return bad
