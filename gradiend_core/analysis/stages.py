"""Pre-pruning against post-pruning: how well the pre-prune ranking found the dims the trained
model ends up needing, and what both stages together save.

Everything is compared in **base-global index space** (the index of a dim over all mapped
base-model parameter entries in full, the same in every pruned model of one base), over the dims
``D`` of the checkpoint at hand (``n = |D|`` = its ``input_dim``).

Recall (:func:`stage_recall`), for a count ``k`` (the dashboard's: the current selection's size):

* ``T_k`` - the **post-prune top-k**: the ``k`` dims of ``D`` that post-pruning
  (``PostPruneConfig(topk=k, part=post_part)``) keeps, i.e. the top ``k`` by the trained model's
  weight importance (decoder-weight by default) under the one selection rule.
* ``P_k`` - the **pre-prune top-k**: the ``k`` dims of ``D`` with the highest pre-prune importance
  (the record's |mean source gradient|; dims the record did not measure rank last).
* ``R`` - the dims pre-pruning actually **kept** (``PrePruneRecord.kept_base_global()``).
* ``ranking recall@k = |P_k ∩ T_k| / k`` - of the trained model's top-k dims, the share that the
  pre-prune importance also ranks in its top k. It says how many of the dims post-pruning keeps
  would have survived had pre-pruning cut this model's dims down to ``k`` right away. Because both
  sets have ``k`` members it is also their precision and overlap; a random ranking scores
  ``k / n`` on average.
* ``kept-set recall@k = |R ∩ T_k| / k`` - the share of the post-prune top-k that the pre-prune
  selection kept. For a checkpoint trained on pre-pruned dims (``D ⊆ R``) it is 1 by
  construction; it is informative when the record's selection was not applied to the checkpoint
  (an unpruned checkpoint with a record), where it compares the record's kept set with the
  trained model's top-k.

Combined reduction (:func:`combined_reduction`): input dims, GRADIEND parameters and parameter
bytes in memory along the chain unpruned -> after pre-pruning -> this checkpoint (when it was
pruned further) -> after the current selection, from :mod:`gradiend_core.pruning.reduction`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..checkpoint import Architecture
from ..checkpoint.sizes import gradiend_param_counts, memory_bytes
from ..ranking.importance import DEFAULT_PART
from ..ranking.ranking import Ranking
from ..selection.rule import select

__all__ = [
    "MAX_TABLE",
    "ReductionStage",
    "StageRecall",
    "combined_reduction",
    "curve_counts",
    "membership",
    "stage_recall",
]

#: Default number of counts on the recall-vs-k curve (log-spaced from 1 to n).
CURVE_POINTS = 32


#: Largest bool lookup table :func:`membership` allocates (bytes); beyond it, it sorts instead.
MAX_TABLE = 1 << 28


def membership(base_global: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Which of ``base_global`` (int64 ``(n,)``) lie in ``members`` (int64, any order): bool ``(n,)``.

    A bool vector over the largest index (O(n + |members|), no sort) while that stays below
    :data:`MAX_TABLE` bytes; for a base model with more mapped entries, ``np.isin`` (a sort).
    """
    g = np.asarray(base_global, dtype=np.int64)
    m = np.asarray(members, dtype=np.int64)
    if g.size == 0 or m.size == 0:
        return np.zeros(g.shape, dtype=bool)
    if int(g.min()) < 0 or int(m.min()) < 0:
        raise ValueError("base-global indices must be >= 0.")
    size = max(int(g.max()), int(m.max())) + 1
    if size > MAX_TABLE:
        return np.isin(g, m)
    table = np.zeros(size, dtype=bool)
    table[m] = True
    return table[g]


def curve_counts(n: int, k: int, points: int = CURVE_POINTS) -> np.ndarray:
    """Sorted unique counts for a recall curve: about ``points`` log-spaced in ``[1, n]``, plus ``k``."""
    if n < 1:
        return np.empty(0, dtype=np.int64)
    ks = np.unique(np.round(np.geomspace(1, n, max(2, int(points)))).astype(np.int64))
    return np.unique(np.concatenate([ks, [min(max(int(k), 1), n)]])).astype(np.int64)


@dataclass(frozen=True)
class StageRecall:
    """Pre-prune selection against the post-prune top-k (see the module docstring).

    Attributes:
        k: size of both top-k sets.
        n_dims: the checkpoint's input dims ``n`` (the universe ``D``).
        post_part: weight part of the post-prune ranking.
        pre_pruned: every dim of the checkpoint was kept by pre-pruning (``D ⊆ R``).
        n_pre_measured: dims the record measured (its input space).
        n_pre_kept: dims pre-pruning kept, ``|R|``.
        n_pre_kept_in_model: ``|R ∩ D|``.
        n_unmeasured: dims of ``D`` without a pre-prune importance (ranked last in ``P_k``).
        post_topk: base-global indices of ``T_k``, sorted int64 ``(k,)``.
        pre_topk: base-global indices of ``P_k``, sorted int64 ``(k,)``.
        n_both: ``|P_k ∩ T_k|``.
        n_kept_in_post: ``|R ∩ T_k|``.
        curve_k: counts of the recall curve, int64 ascending (includes ``k``).
        curve_ranking_recall, curve_kept_recall: recall at each of ``curve_k`` (float64).
    """

    k: int
    n_dims: int
    post_part: str
    pre_pruned: bool
    n_pre_measured: int
    n_pre_kept: int
    n_pre_kept_in_model: int
    n_unmeasured: int
    post_topk: np.ndarray
    pre_topk: np.ndarray
    n_both: int
    n_kept_in_post: int
    curve_k: np.ndarray
    curve_ranking_recall: np.ndarray
    curve_kept_recall: np.ndarray

    @property
    def ranking_recall(self) -> float:
        """``|P_k ∩ T_k| / k``."""
        return self.n_both / self.k

    @property
    def kept_recall(self) -> float:
        """``|R ∩ T_k| / k``."""
        return self.n_kept_in_post / self.k

    @property
    def random_recall(self) -> float:
        """Expected ranking recall of a random ranking, ``k / n``."""
        return self.k / self.n_dims

    def to_dict(self) -> dict[str, object]:
        """The scalar numbers as plain JSON (no index arrays)."""
        return {
            "k": self.k,
            "n_dims": self.n_dims,
            "post_part": self.post_part,
            "pre_pruned": self.pre_pruned,
            "n_pre_measured": self.n_pre_measured,
            "n_pre_kept": self.n_pre_kept,
            "n_pre_kept_in_model": self.n_pre_kept_in_model,
            "n_unmeasured": self.n_unmeasured,
            "n_both": self.n_both,
            "n_kept_in_post": self.n_kept_in_post,
            "ranking_recall": self.ranking_recall,
            "kept_recall": self.kept_recall,
            "random_recall": self.random_recall,
        }


def stage_recall(
    base_global: np.ndarray,
    post_importance: Ranking | np.ndarray | torch.Tensor,
    pre_importance: Ranking | np.ndarray | torch.Tensor,
    pre_kept_base_global: np.ndarray,
    k: int,
    *,
    post_part: str = DEFAULT_PART,
    n_pre_measured: int | None = None,
    curve_points: int = CURVE_POINTS,
) -> StageRecall:
    """Recall of the pre-prune selection against the post-prune top-k, in base-global space.

    Args:
        base_global: int64 ``(n,)``, base-global index of each of the checkpoint's dims
            (``param_map.base_global_index()``).
        post_importance: the trained model's importance of ``post_part``, ``(n,)`` or its
            :class:`Ranking` (e.g. ``weight_importance(state_dict, "decoder-weight")``).
        pre_importance: the pre-prune importance of the same dims, ``(n,)`` or its Ranking
            (``PrePruneRecord.importance_for(base_global)``; NaN = not measured).
        pre_kept_base_global: int64, base-global indices pre-pruning kept
            (``PrePruneRecord.kept_base_global()``).
        k: size of the top-k sets, clipped to ``[1, n]``.
        post_part: label of ``post_importance``, for the record.
        n_pre_measured: dims the record measured (default: ``n``).
        curve_points: about how many counts the recall curve has (log-spaced, plus ``k``).

    Returns:
        A :class:`StageRecall`.

    Raises:
        ValueError: when the lengths disagree or ``n`` is 0.
    """
    g = np.asarray(base_global, dtype=np.int64)
    n = int(g.size)
    post = Ranking.coerce(post_importance)
    pre = Ranking.coerce(pre_importance)
    if n == 0 or post.size != n or pre.size != n:
        raise ValueError(
            f"base_global ({n}), post importance ({post.size}) and pre importance ({pre.size}) must have the same, "
            "non-zero length: all three describe the checkpoint's input dims."
        )
    k = min(max(int(k), 1), n)
    kept = np.asarray(pre_kept_base_global, dtype=np.int64)
    in_r = membership(g, kept)

    def at(kk: int):
        t = select(post, topk=int(kk)).keep
        p = select(pre, topk=int(kk)).keep
        mark = np.zeros(n, dtype=bool)
        mark[p] = True
        return t, p, int(np.count_nonzero(mark[t])), int(np.count_nonzero(in_r[t]))

    t, p, both, kept_in_t = at(k)
    ks = curve_counts(n, k, curve_points)
    rank_curve = np.empty(ks.size, dtype=np.float64)
    kept_curve = np.empty(ks.size, dtype=np.float64)
    for i, kk in enumerate(ks.tolist()):
        if kk == k:
            b, r = both, kept_in_t
        else:
            _, _, b, r = at(kk)
        rank_curve[i] = b / kk
        kept_curve[i] = r / kk
    return StageRecall(
        k=k,
        n_dims=n,
        post_part=post_part,
        pre_pruned=bool(in_r.all()),
        n_pre_measured=int(n_pre_measured if n_pre_measured is not None else n),
        n_pre_kept=int(np.unique(kept).size),
        n_pre_kept_in_model=int(np.count_nonzero(in_r)),
        n_unmeasured=int(pre.n_nan),
        post_topk=np.sort(g[t]),
        pre_topk=np.sort(g[p]),
        n_both=both,
        n_kept_in_post=kept_in_t,
        curve_k=ks,
        curve_ranking_recall=rank_curve,
        curve_kept_recall=kept_curve,
    )


@dataclass(frozen=True)
class ReductionStage:
    """One stage of the pruning chain.

    Attributes:
        name: what the stage is ("unpruned", "after pre-pruning", ...).
        input_dim: GRADIEND input dims (dims).
        params: GRADIEND parameters (count; encoder, decoder, biases, activation).
        memory_bytes: parameter bytes in memory at the checkpoint's dtype.
        is_checkpoint: this stage is the checkpoint as saved.
    """

    name: str
    input_dim: int
    params: int
    memory_bytes: int
    is_checkpoint: bool = False


def _stage(name: str, arch: Architecture, n: int, dtypes, is_checkpoint: bool = False) -> ReductionStage:
    a = dataclasses.replace(arch, input_dim=int(n))
    return ReductionStage(
        name, int(n), int(sum(gradiend_param_counts(a).values())), memory_bytes(a, dtypes), is_checkpoint
    )


def combined_reduction(
    arch: Architecture,
    unpruned_length: int,
    selected: int,
    *,
    pre_kept: int | None = None,
    dtypes: Mapping[str, torch.dtype] | None = None,
) -> list[ReductionStage]:
    """Sizes along unpruned -> after pre-pruning -> this checkpoint -> after the current selection.

    The checkpoint stage is merged into the stage before it when their input dims agree (an
    unpruned checkpoint is the "unpruned" stage; a pre-pruned one is the "after pre-pruning"
    stage), so only a checkpoint that was pruned further (post-pruned, or pruned without a
    record) adds a stage of its own.

    Args:
        arch: the checkpoint's architecture (latent_dim, decoder bias, activation, dtype).
        unpruned_length: input dims before any pruning (``param_map.unpruned_length``).
        selected: input dims the current selection keeps.
        pre_kept: dims pre-pruning kept, when the checkpoint was trained on them (``None``: no
            pre-pruning stage).
        dtypes: the dtype of each weight tensor (``CheckpointData.weight_dtypes()``; default: ``arch``'s dtype).

    Returns:
        The stages in order, each with dims, parameters and bytes (see :class:`ReductionStage`).
    """
    stages = [_stage("unpruned", arch, unpruned_length, dtypes)]
    if pre_kept is not None:
        stages.append(_stage("after pre-pruning", arch, pre_kept, dtypes))
    if stages[-1].input_dim == arch.input_dim:
        stages[-1] = dataclasses.replace(stages[-1], is_checkpoint=True)
    else:
        stages.append(_stage("this checkpoint", arch, arch.input_dim, dtypes, is_checkpoint=True))
    stages.append(_stage("after the current selection", arch, selected, dtypes))
    return stages
