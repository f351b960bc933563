"""What a cut costs: the encoder before and after pruning, on saved validation gradients.

A cut keeps the input dimensions ``keep``. The pruned encoder is the same encoder restricted to
those columns (``prune`` keeps the encoder bias), applied to the same gradients restricted to
those entries. On the validation gradients saved with the checkpoint
(:class:`~gradiend_core.checkpoint.records.ValidationRecord`) we compare

* how the pruned encoder's outputs follow the unpruned ones (Pearson correlation), and
* how far apart the two classes stay: ``|mean(class A) - mean(class B)| / pooled std``
  (Cohen's d), before and after, and the encoder's correlation with the class labels.

A trained encoder's tanh often saturates (outputs of exactly +-1 in float32), which makes the
output separation infinite and its output correlation uninformative. The same two numbers are
therefore also reported on the pre-activations ``W x + b``, which never saturate, and the
``separation_retained`` ratio is taken there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import ENC_B, ENC_W, CheckpointData
from ..checkpoint.files import VALIDATION_FILE
from ..checkpoint.records import ValidationRecord, align_columns
from ..errors import SelectionError
from ..model import ParamMappedGradiendModel

__all__ = ["CutCost", "class_separation", "cut_cost", "pearson"]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (the reference's convention)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    r = float(np.corrcoef(x, y)[0, 1])
    return 0.0 if math.isnan(r) else r


def class_separation(encoded: np.ndarray, labels: np.ndarray) -> float:
    """``|mean(label > 0) - mean(label < 0)| / pooled std`` (Cohen's d); ``inf`` when both classes
    are constant but apart, ``nan`` with fewer than two examples in total or a missing class."""
    e = np.asarray(encoded, dtype=np.float64)
    a, b = e[labels > 0], e[labels < 0]
    if a.size == 0 or b.size == 0 or a.size + b.size < 3:
        return float("nan")
    va = a.var(ddof=1) if a.size > 1 else 0.0
    vb = b.var(ddof=1) if b.size > 1 else 0.0
    pooled = math.sqrt(((a.size - 1) * va + (b.size - 1) * vb) / (a.size + b.size - 2))
    gap = abs(a.mean() - b.mean())
    if pooled == 0:
        return float("inf") if gap > 0 else float("nan")
    return float(gap / pooled)


@dataclass(frozen=True)
class CutCost:
    """The encoder with and without a cut, on the same validation gradients.

    Attributes:
        n: examples.
        input_dim: dims before the cut; ``k``: dims kept.
        encoder_correlation: Pearson correlation of pruned vs unpruned encoder outputs.
        label_correlation_before, label_correlation_after: outputs vs the +-1 labels.
        separation_before, separation_after: Cohen's d of the outputs (``inf`` when both classes
            saturate apart).
        preactivation_correlation: pruned vs unpruned ``W x + b``.
        preactivation_separation_before, preactivation_separation_after: Cohen's d of ``W x + b``.
        separation_retained: pre-activation separation after / before (``nan`` when before is 0).
        max_abs_change: largest change of an output.
    """

    n: int
    input_dim: int
    k: int
    encoder_correlation: float
    label_correlation_before: float
    label_correlation_after: float
    separation_before: float
    separation_after: float
    preactivation_correlation: float
    preactivation_separation_before: float
    preactivation_separation_after: float
    separation_retained: float
    max_abs_change: float

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers by field name."""
        return asdict(self)


def cut_cost(
    checkpoint_data: CheckpointData | ParamMappedGradiendModel,
    keep: np.ndarray | torch.Tensor,
    validation_record: ValidationRecord,
    *,
    latent_unit: int = 0,
) -> CutCost:
    """Compare the encoder with and without the cut on saved validation gradients.

    Args:
        checkpoint_data: the checkpoint (or model) the cut applies to.
        keep: int ``(k,)``, local indices into its current input space (e.g.
            ``Selection.keep``); need not be sorted.
        validation_record: validation gradients covering (at least) the checkpoint's dimensions,
            matched by base-global index.
        latent_unit: which latent unit to compare (GRADIENDs usually have one).

    Returns:
        A :class:`CutCost`.

    Raises:
        SelectionError: for indices out of range, duplicated or empty.
        CheckpointError: when the record does not cover the checkpoint's dimensions.
    """
    data = (
        checkpoint_data.to_checkpoint_data()
        if isinstance(checkpoint_data, ParamMappedGradiendModel)
        else checkpoint_data
    )
    model = ParamMappedGradiendModel.from_checkpoint_data(data)
    d = model.input_dim
    kept = torch.as_tensor(np.array(keep, dtype=np.int64)).reshape(-1)  # a copy: index sets may be read-only
    if kept.numel() == 0:
        raise SelectionError("keep is empty: the cut keeps nothing.")
    if int(kept.min()) < 0 or int(kept.max()) >= d:
        raise SelectionError(f"keep must lie in [0, {d}) (the checkpoint's input_dim).")
    kept = torch.unique(kept)
    if kept.numel() != np.asarray(keep).size:
        raise SelectionError("keep holds duplicates.")
    if not 0 <= latent_unit < model.latent_dim:
        raise SelectionError(f"latent_unit must be in [0, {model.latent_dim}).")

    cols = align_columns(validation_record.base_global_index, data.param_map.base_global_index(), VALIDATION_FILE)
    x = validation_record.gradients[:, torch.from_numpy(cols)].to(torch.float32)
    labels = validation_record.labels.to(torch.float32).numpy()
    w = data.state_dict[ENC_W].to(torch.float32)
    b = data.state_dict[ENC_B].to(torch.float32)
    act = model.encoder[1].to(torch.float32)
    with torch.no_grad():
        pre_before = F.linear(x, w, b)
        pre_after = F.linear(x[:, kept], w[:, kept], b)
        before = act(pre_before)[:, latent_unit].numpy()
        after = act(pre_after)[:, latent_unit].numpy()
    pre_before, pre_after = pre_before[:, latent_unit].numpy(), pre_after[:, latent_unit].numpy()
    pre_sep_before = class_separation(pre_before, labels)
    pre_sep_after = class_separation(pre_after, labels)
    ok = math.isfinite(pre_sep_before) and pre_sep_before > 0
    return CutCost(
        n=int(x.shape[0]),
        input_dim=int(d),
        k=int(kept.numel()),
        encoder_correlation=pearson(before, after),
        label_correlation_before=pearson(before, labels),
        label_correlation_after=pearson(after, labels),
        separation_before=class_separation(before, labels),
        separation_after=class_separation(after, labels),
        preactivation_correlation=pearson(pre_before, pre_after),
        preactivation_separation_before=pre_sep_before,
        preactivation_separation_after=pre_sep_after,
        separation_retained=float(pre_sep_after / pre_sep_before) if ok else float("nan"),
        max_abs_change=float(np.max(np.abs(after - before))) if before.size else 0.0,
    )
