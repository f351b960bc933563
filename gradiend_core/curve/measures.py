"""What a pruning curve measures at each point, per latent unit, and the curve itself.

See :mod:`gradiend_core.curve.sums` for how the points are computed and what each measure means
(``label_correlation``, ``separation``, ``agreement``); :func:`cut_quality` measures one kept set
directly, :func:`smallest_topk_for` reads a curve, :func:`curve_csv` writes curves.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.cut_cost import class_separation, pearson
from ..checkpoint import ENC_B, ENC_W, CheckpointData
from ..errors import SelectionError

__all__ = [
    "Activation",
    "CHUNK",
    "Curve",
    "Encoder",
    "MEASURES",
    "check_inputs",
    "curve_csv",
    "cut_quality",
    "encode",
    "label_correlation",
    "point_measures",
    "smallest_topk_for",
]


#: Dims per chunk when streaming over an in-memory input space.
CHUNK = 1 << 20
#: The measures of a :class:`Curve`, in column order.
MEASURES = ("label_correlation", "separation", "agreement")
Activation = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------ the encoder
@dataclass(frozen=True)
class Encoder:
    """The parts of a GRADIEND encoder a curve needs.

    Attributes:
        weight: ``W_enc`` ``(latent_dim, input_dim)`` (any float dtype; not copied).
        bias: ``b_enc`` float64 ``(latent_dim,)``.
        activation: the encoder activation (the torch module of the checkpoint, applied in
            float32 as the reference applies it).
    """

    weight: torch.Tensor
    bias: np.ndarray
    activation: Activation

    @property
    def latent_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def of(cls, data: CheckpointData) -> Encoder:
        """The encoder of a checkpoint (weights shared with ``data``, not copied)."""
        from ..model import activation_module

        act = activation_module(data.architecture.activation_encoder, encoder=True)
        if isinstance(act, torch.nn.LayerNorm) and "encoder.1.weight" in data.state_dict:
            act.load_state_dict(
                {
                    "weight": data.state_dict["encoder.1.weight"].float(),
                    "bias": data.state_dict["encoder.1.bias"].float(),
                }
            )
        act = act.to(torch.float32).eval()

        def apply(pre: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return act(pre.to(torch.float32))

        bias = data.state_dict[ENC_B].detach().to(torch.float64).numpy().reshape(-1)
        return cls(data.state_dict[ENC_W], bias, apply)


# ------------------------------------------------------------------------------ measures
def label_correlation(encoded: np.ndarray, labels: np.ndarray) -> float:
    """The reference's encoder correlation: Pearson of the encoded values with the labels.

    ``gradiend.evaluator.encoder_metrics.get_correlation`` (gradiend 0.2.3): 0.0 for fewer than
    two rows, for constant labels or encoded values, and when the coefficient is NaN.

    Args:
        encoded: float ``(m,)`` encoded values of one latent unit.
        labels: float ``(m,)`` labels.
    """
    return pearson(np.asarray(labels, dtype=np.float64), np.asarray(encoded, dtype=np.float64))


def point_measures(pre: np.ndarray, encoded: np.ndarray, full: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The measures of one point per latent unit: ``pre``, ``encoded``, ``full`` ``(latent_dim, m)``."""
    lat = pre.shape[0]
    return {
        "label_correlation": np.array([label_correlation(encoded[u], labels) for u in range(lat)]),
        "separation": np.array([class_separation(pre[u], labels) for u in range(lat)]),
        "agreement": np.array([pearson(full[u], encoded[u]) for u in range(lat)]),
    }


def encode(activation: Activation, pre: np.ndarray) -> np.ndarray:
    """Encoded values of pre-activations ``(latent_dim, m)``; the activation sees ``(m, latent_dim)``
    rows as in the model (a LayerNorm activation normalises over the latent units)."""
    rows = torch.from_numpy(np.ascontiguousarray(pre.T)).to(torch.float32)
    return activation(rows).to(torch.float64).numpy().T


@dataclass(frozen=True)
class Curve:
    """The encoder's quality against the number of kept dims of one part.

    Attributes:
        part: the importance the dims are ranked by (a part or ``gradient-mean``).
        input_dim: dims of the checkpoint (the last point keeps all of them).
        n_samples: gradients the measures are taken on.
        ks: int64 ``(P,)`` kept dims at each point, ascending.
        requested: bool ``(P,)``: ``k`` is exactly a grid or asked-for value (False: moved to a
            bucket boundary; still exact for its own ``k``).
        label_correlation, separation, agreement: float64 ``(P, latent_dim)``, see the module
            docstring; column 0 is latent unit 0, the reference's headline unit.
        selection_k: the current selection's ``k`` when it was asked for, else ``None``.
    """

    part: str
    input_dim: int
    n_samples: int
    ks: np.ndarray
    requested: np.ndarray
    label_correlation: np.ndarray
    separation: np.ndarray
    agreement: np.ndarray
    selection_k: int | None = None

    @property
    def full(self) -> dict[str, float]:
        """The unpruned encoder's measures (unit 0)."""
        return {m: float(getattr(self, m)[-1, 0]) for m in MEASURES}

    def at(self, k: int) -> dict[str, float]:
        """The measures (unit 0) at a ``k`` that is one of the points.

        Raises:
            KeyError: when ``k`` is not a point of the curve.
        """
        hit = np.flatnonzero(self.ks == int(k))
        if hit.size == 0:
            raise KeyError(f"k={k} is not a point of the {self.part} curve; ask for it with exact=[{k}].")
        return {m: float(getattr(self, m)[hit[0], 0]) for m in MEASURES}


# ------------------------------------------------------------------------------ in memory
def check_inputs(encoder: Encoder, gradients: torch.Tensor, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.as_tensor(gradients)
    lab = np.asarray(labels, dtype=np.float64).reshape(-1)
    if g.ndim != 2 or g.shape[1] != encoder.input_dim:
        raise SelectionError(
            f"gradients must be (m, {encoder.input_dim}) (m samples over the input space); got {tuple(g.shape)}."
        )
    if lab.size != g.shape[0]:
        raise SelectionError(f"labels must have one entry per gradient row ({g.shape[0]}); got {lab.size}.")
    return g, lab


def cut_quality(encoder: Encoder, gradients: torch.Tensor, labels: np.ndarray, keep: np.ndarray) -> dict[str, object]:
    """The curve's measures for one kept set (any set, e.g. a selection with a mask).

    A direct computation: the encoder restricted to the kept columns on the gradients restricted
    to the kept entries (what the pruned model computes), against the unpruned encoder.

    Args:
        encoder: :meth:`Encoder.of` the checkpoint.
        gradients: ``(m, input_dim)`` source gradients.
        labels: ``(m,)`` labels (+1 / -1).
        keep: int local indices of the kept dims ``(k,)``.

    Returns:
        A JSON-ready dict: ``k``, ``input_dim``, ``n_samples``, and for unit 0
        ``label_correlation``, ``separation``, ``agreement``, with the unpruned encoder's
        ``label_correlation_full`` and ``separation_full``; for latent_dim > 1 also the per-unit
        lists ``*_by_unit``. Non-finite numbers are ``None``.

    Raises:
        SelectionError: for an empty, duplicated or out-of-range ``keep``.
    """
    g, lab = check_inputs(encoder, gradients, labels)
    n = encoder.input_dim
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    if keep.size == 0:
        raise SelectionError("the kept set is empty.")
    if keep.min() < 0 or keep.max() >= n or np.unique(keep).size != keep.size:
        raise SelectionError(f"kept indices must be unique and lie in [0, {n}).")
    kept = np.zeros(n, dtype=bool)
    kept[keep] = True
    bias = np.asarray(encoder.bias, dtype=np.float64).reshape(-1, 1)
    pre_full = np.repeat(bias, lab.size, axis=1)
    pre_cut = pre_full.copy()
    with torch.no_grad():
        for s in range(0, n, CHUNK):  # float64 products, one chunk of dims at a time
            w = encoder.weight[:, s : s + CHUNK].detach().to(torch.float64)
            x = g[:, s : s + CHUNK].to(torch.float64)
            pre_full += (w @ x.t()).numpy()
            t = torch.from_numpy(np.flatnonzero(kept[s : s + CHUNK]))
            if t.numel():
                pre_cut += (w[:, t] @ x[:, t].t()).numpy()
    full = encode(encoder.activation, pre_full)
    cut = encode(encoder.activation, pre_cut)
    m_cut = point_measures(pre_cut, cut, full, lab)
    m_full = point_measures(pre_full, full, full, lab)

    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    out: dict[str, object] = {"k": int(keep.size), "input_dim": n, "n_samples": int(lab.size)}
    for name in MEASURES:
        out[name] = num(m_cut[name][0])
    out["label_correlation_full"] = num(m_full["label_correlation"][0])
    out["separation_full"] = num(m_full["separation"][0])
    if encoder.latent_dim > 1:
        for name in MEASURES:
            out[f"{name}_by_unit"] = [num(v) for v in m_cut[name]]
    return out


# ------------------------------------------------------------------------------ acting on it
def smallest_topk_for(curve: Curve, fraction: float, measure: str = "label_correlation") -> int:
    """The smallest ``k`` among the curve's points whose measure keeps ``fraction`` of the full model's.

    A point qualifies when ``measure(k) >= fraction * measure(input_dim)`` (unit 0; for a negative
    full correlation the comparison is on the absolute values with the same sign). The answer is
    one of the measured points, so a smaller ``k`` between two points may also qualify.

    Args:
        curve: a :class:`Curve`.
        fraction: share to keep, in ``(0, 1]``.
        measure: one of :data:`MEASURES`.

    Raises:
        SelectionError: for a fraction outside ``(0, 1]``, an unknown measure, or a full model
            whose measure is 0 or not finite (nothing to keep a share of).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < float(fraction) <= 1:
        raise SelectionError(f"fraction must be in (0, 1]; got {fraction!r}.")
    if measure not in MEASURES:
        raise SelectionError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}.")
    values = getattr(curve, measure)[:, 0]
    full = float(values[-1])
    if not math.isfinite(full) or full == 0:
        raise SelectionError(
            f"the full model's {measure} is {full!r} on these gradients, so there is no share of it to keep."
        )
    sign = 1.0 if full > 0 else -1.0
    ok = np.flatnonzero(np.nan_to_num(sign * values, nan=-np.inf) >= float(fraction) * abs(full))
    return int(curve.ks[ok[0]])


def curve_csv(curves: Sequence[Curve]) -> str:
    """The curves as CSV text: one row per part and point.

    Columns: ``part``, ``k``, ``share`` (k / input_dim), ``exact_k`` (1 when k is the asked-for
    value, 0 when moved to a bucket boundary), ``selection`` (1 at the current selection), then
    ``label_correlation``, ``separation``, ``agreement`` of unit 0 and, for latent_dim > 1, the
    same per unit as ``<measure>_u<unit>``. Numbers use repr-precision; NaN and infinity are
    written as ``nan`` / ``inf``.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    lat = max((c.label_correlation.shape[1] for c in curves), default=1)
    extra = [f"{m}_u{u}" for u in range(1, lat) for m in MEASURES]
    w.writerow(["part", "k", "share", "exact_k", "selection", *MEASURES, *extra])
    for c in curves:
        for p, k in enumerate(c.ks):
            row = [c.part, int(k), repr(float(k) / c.input_dim), int(c.requested[p]), int(c.selection_k == int(k))]
            row += [repr(float(getattr(c, m)[p, 0])) for m in MEASURES]
            for u in range(1, lat):
                for m in MEASURES:
                    arr = getattr(c, m)
                    row.append(repr(float(arr[p, u])) if u < arr.shape[1] else "")
            w.writerow(row)
    return buf.getvalue()
