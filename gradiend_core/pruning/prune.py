"""Physical pruning: keep a subset of input dimensions and shrink encoder, decoder and param_map.

For kept local indices ``keep`` (sorted, int64):

* encoder weight ``(latent_dim, input_dim)`` -> columns ``keep``; encoder bias unchanged;
* decoder weight ``(input_dim, latent_dim)`` -> rows ``keep``; decoder bias -> entries ``keep``;
* the param_map keeps, per parameter, the selected positions that survive (``ParamMap.restrict``).

Pruning composes: pruning a pruned model indexes its current input space, and the param_map
always stores positions in each base-model parameter's own flat space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from ..checkpoint import DEC_B, DEC_W, ENC_W, CheckpointData

__all__ = ["prune_state_dict", "prune_checkpoint", "gather_pruned_weights"]


def prune_state_dict(state_dict: Mapping[str, torch.Tensor], keep: np.ndarray) -> dict[str, torch.Tensor]:
    """Slice GRADIEND weights to the kept input dimensions.

    Args:
        state_dict: weights with ``encoder.0.linear.weight`` (latent_dim, input_dim),
            ``decoder.0.linear.weight`` (input_dim, latent_dim), optional ``decoder.0.linear.bias``
            (input_dim,); other tensors (encoder bias, LayerNorm activation) are copied.
        keep: sorted unique local indices, int64 ``(k,)``.

    Returns:
        A new state dict (new, contiguous tensors in the original dtype; the input is untouched).
    """
    idx = torch.from_numpy(np.array(keep, dtype=np.int64))  # a copy: kept index sets are shared and read-only
    out: dict[str, torch.Tensor] = {}
    for key, t in state_dict.items():
        if key == ENC_W:
            out[key] = t.index_select(1, idx).contiguous()
        elif key in (DEC_W, DEC_B):
            out[key] = t.index_select(0, idx).contiguous()
        else:
            out[key] = t.detach().clone()
    return out


def gather_pruned_weights(ckpt: CheckpointData, keep: np.ndarray) -> dict[str, torch.Tensor]:
    """The pruned weights read from the checkpoint's weight file in one streaming pass over the
    kept dims (memory: the pruned model plus one block), equal to :func:`prune_state_dict` of the
    loaded weights bit for bit."""
    block = ckpt.weights.gather(keep)
    sliced = {ENC_W: block.enc_w, DEC_W: block.dec_w, DEC_B: block.dec_b}
    # in the file's key order, as a loaded state dict has it (torch.save writes storages in that order)
    return {
        k: sliced[k].contiguous() if sliced.get(k) is not None else ckpt.weights.read(k) for k in ckpt.weights.keys()
    }


def prune_checkpoint(ckpt: CheckpointData, keep: np.ndarray) -> CheckpointData:
    """A pruned copy of a checkpoint (the source object is not modified).

    The weights are sliced in memory when the checkpoint holds them, else gathered from its
    weight file (:func:`gather_pruned_weights`), so pruning never needs the whole model in memory.

    Args:
        ckpt: the checkpoint to prune.
        keep: sorted unique local indices to keep, int64 ``(k,)``.

    Returns:
        A :class:`CheckpointData` with ``input_dim == len(keep)``, the sliced weights and the
        restricted param_map; metadata and side files are carried over.
    """
    keep = np.asarray(keep, dtype=np.int64)
    arch = dataclasses.replace(ckpt.architecture, input_dim=int(keep.size))
    if ckpt.loaded or ckpt.weights is None:
        weights = prune_state_dict(ckpt.state_dict, keep)
    else:
        weights = gather_pruned_weights(ckpt, keep)
    return CheckpointData(
        path=ckpt.path,
        architecture=arch,
        param_map=ckpt.param_map.restrict(keep),
        state_dict=weights,
        metadata=dict(ckpt.metadata),
        side_files=dict(ckpt.side_files),
        weights_file=None,
    )
