"""``ParamMappedGradiendModel``: a GRADIEND with its parameter map, with the reference's API.

The names and signatures follow ``gradiend.model.param_mapped.ParamMappedGradiendModel`` so
that code written against the reference package ports by changing the import. Selection goes
through :func:`gradiend_core.selection.rule.select`, so ``prune``, ``get_enhancer_mask`` and
``get_topk_weights`` agree with each other (the reference's copies do not: its enhancer mask
rounds a fractional topk down and treats ``topk=1`` as "everything").

The architecture is the one of the GRADIEND paper (Drechsel et al. 2025,
https://arxiv.org/abs/2502.01406): ``encoded = act_enc(W_enc x + b_enc)`` with
``W_enc`` of shape (latent_dim, input_dim), ``decoded = act_dec(W_dec encoded + b_dec)`` with
``W_dec`` of shape (input_dim, latent_dim).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import ACTIVATIONS, DTYPES, Architecture, CheckpointData, read_checkpoint, write_checkpoint
from .checkpoint.files import PROVENANCE_FILE, TRAINING_FILE
from .errors import SelectionError
from .pruning.prune import prune_state_dict
from .ranking.importance import DEFAULT_PART, validate_part, warn_nonfinite, weight_importance
from .ranking.ranking import Ranking
from .selection.rule import Selection, select, topk_indices
from .space.param_map import ParamEntry, ParamMap

__all__ = ["ParamMappedGradiendModel", "activation_module"]


def activation_module(name: str, encoder: bool) -> nn.Module:
    """The torch module for an activation name of the reference format.

    ``id`` is a LayerNorm over the single latent unit for the encoder (as the reference builds it,
    which is why such checkpoints hold ``encoder.1.weight``/``bias``) and identity for the decoder.

    Raises:
        ValueError: for an unknown name.
    """
    name = name.lower()
    table = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leakyrelu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "elu": nn.ELU,
        "sigmoid": nn.Sigmoid,
        "smht": nn.Hardtanh,
    }
    if name == "id":
        return nn.LayerNorm(1) if encoder else nn.Identity()
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}.")
    return table[name]()


class _MappedLinear(nn.Module):
    """A linear layer held as ``.linear`` so state-dict keys read ``encoder.0.linear.weight``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        out_f, in_f = weight.shape
        self.linear = nn.Linear(in_f, out_f, bias=bias is not None, device="meta", dtype=weight.dtype)
        self.linear.weight = nn.Parameter(weight)
        if bias is not None:
            self.linear.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def _as_param_map(
    param_map: ParamMap | Mapping[str, Mapping[str, Any]] | Sequence[tuple[str, Sequence[int]]],
) -> ParamMap:
    """Accept our :class:`ParamMap`, the reference's ``name -> spec`` dict, or ``(name, shape)`` pairs."""
    if isinstance(param_map, ParamMap):
        return param_map
    if isinstance(param_map, Mapping):
        entries = []
        for name, spec in param_map.items():
            shape = tuple(int(s) for s in spec["shape"])
            rep = spec.get("repr", "all")
            if rep == "all":
                pos = None
            elif rep == "indices":
                pos = np.unique(torch.as_tensor(spec["indices"]).cpu().long().numpy().reshape(-1))
            elif rep == "mask":
                pos = np.flatnonzero(torch.as_tensor(spec["mask"]).cpu().bool().numpy().reshape(-1)).astype(np.int64)
            else:
                raise ValueError(f"param_map[{name!r}]: unknown repr {rep!r}")
            entries.append(ParamEntry(name, shape, pos))
        return ParamMap(entries)
    return ParamMap.full(param_map)


class ParamMappedGradiendModel(nn.Module):
    """GRADIEND encoder-decoder over mapped base-model parameter entries.

    Args:
        input_dim: GRADIEND input size (selected base-model entries).
        latent_dim: latent size (usually 1).
        param_map: a :class:`ParamMap`, the reference's ``name -> {"shape", "repr", ...}`` dict,
            or ``(name, shape)`` pairs meaning "every entry of these parameters".
        activation_encoder, activation_decoder: activation names (see :data:`ACTIVATIONS`).
        bias_decoder: whether the decoder has a bias.
        torch_dtype: parameter dtype (float32, float16, bfloat16 or float64).
        weights: optional state dict to use instead of a random initialisation.
        **kwargs: metadata, stored in ``self.kwargs`` and written to ``config.json``.

    Raises:
        ValueError: when the param_map does not select exactly ``input_dim`` entries.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        param_map: ParamMap | Mapping[str, Mapping[str, Any]] | Sequence[tuple[str, Sequence[int]]],
        activation_encoder: str = "tanh",
        activation_decoder: str = "id",
        bias_decoder: bool = True,
        torch_dtype: torch.dtype = torch.float32,
        weights: Mapping[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        pmap = _as_param_map(param_map)
        if pmap.input_dim != int(input_dim):
            raise ValueError(f"param_map selects {pmap.input_dim} entries but input_dim is {input_dim}.")
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        dtype_name = str(torch_dtype).replace("torch.", "")
        if dtype_name not in DTYPES:
            raise ValueError(f"torch_dtype must be one of {sorted(DTYPES)}, got {torch_dtype}.")
        self._arch = Architecture(
            int(input_dim),
            int(latent_dim),
            activation_encoder.lower(),
            activation_decoder,
            bool(bias_decoder),
            dtype_name,
        )
        self._map = pmap
        self.kwargs: dict[str, Any] = dict(kwargs)
        self.side_files: dict[str, Any] = {}
        self.name_or_path: str | None = None
        if weights is None:
            weights = self._random_weights()
        self._set_weights(weights)

    # ------------------------------------------------------------------ construction helpers
    def _random_weights(self) -> dict[str, torch.Tensor]:
        """A fresh initialisation like ``nn.Linear``'s; the decoder is drawn on the encoder's scale."""
        a = self._arch
        enc = nn.Linear(a.input_dim, a.latent_dim, dtype=a.dtype)
        scale = float(enc.weight.detach().abs().max())
        w = {
            "encoder.0.linear.weight": enc.weight.detach(),
            "encoder.0.linear.bias": enc.bias.detach(),
            "decoder.0.linear.weight": torch.empty(a.input_dim, a.latent_dim, dtype=a.dtype).uniform_(-scale, scale),
        }
        if a.bias_decoder:
            w["decoder.0.linear.bias"] = torch.empty(a.input_dim, dtype=a.dtype).uniform_(-scale, scale)
        return w

    def _set_weights(self, w: Mapping[str, torch.Tensor]) -> None:
        a = self._arch
        self.encoder = nn.Sequential(
            _MappedLinear(w["encoder.0.linear.weight"], w.get("encoder.0.linear.bias")),
            activation_module(a.activation_encoder, encoder=True),
        )
        self.decoder = nn.Sequential(
            _MappedLinear(w["decoder.0.linear.weight"], w.get("decoder.0.linear.bias") if a.bias_decoder else None),
            activation_module(a.activation_decoder, encoder=False),
        )
        if "encoder.1.weight" in w and isinstance(self.encoder[1], nn.LayerNorm):
            self.encoder[1].load_state_dict({"weight": w["encoder.1.weight"], "bias": w["encoder.1.bias"]})

    @classmethod
    def from_checkpoint_data(cls, data: CheckpointData) -> ParamMappedGradiendModel:
        """Build a model from :class:`CheckpointData` (shares its tensors)."""
        a = data.architecture
        m = cls(
            a.input_dim,
            a.latent_dim,
            data.param_map,
            a.activation_encoder,
            a.activation_decoder,
            a.bias_decoder,
            a.dtype,
            weights=data.state_dict,
        )
        # metadata may hold any key (even "weights" or "input_dim"); never splat it into the constructor.
        m.kwargs = dict(data.metadata)
        m.side_files = dict(data.side_files)
        m.name_or_path = str(data.path)
        return m

    @classmethod
    def from_pretrained(cls, load_directory: str | os.PathLike) -> ParamMappedGradiendModel:
        """Load a checkpoint directory written by ``gradiend`` or by us.

        Args:
            load_directory: checkpoint directory, or an experiment directory holding ``model/``.

        Raises:
            CheckpointError: for missing or malformed files (the message names file and field).
        """
        return cls.from_checkpoint_data(read_checkpoint(load_directory))

    def to_checkpoint_data(self) -> CheckpointData:
        """The model as :class:`CheckpointData` (tensors shared, not copied)."""
        state = {k: v.detach() for k, v in self.state_dict().items()}
        return CheckpointData(
            path=Path(self.name_or_path) if self.name_or_path else Path("."),
            architecture=self._arch,
            param_map=self._map,
            state_dict=state,
            metadata=dict(self.kwargs),
            side_files=dict(self.side_files),
        )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        use_safetensors: bool | None = None,
        overwrite: bool = False,
        tensor_files: Mapping[str, tuple[Mapping[str, torch.Tensor], Mapping[str, str]]] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Write the model in the reference format, atomically.

        Args:
            save_directory: target directory; must be new or empty unless ``overwrite``.
            use_safetensors: ``False`` writes ``pytorch_model.bin`` and ``.pth`` mapping files;
                otherwise safetensors (the reference's default).
            overwrite: replace a non-empty directory.
            tensor_files: extra safetensors files written in the same atomic step (file name ->
                ``(tensors, header metadata)``); the reference package ignores them.
            **kwargs: extra metadata merged into ``config.json``'s ``metadata``; a ``training``
                entry is written to ``training.json`` instead (as the reference does).

        Returns:
            The directory written.

        Raises:
            CheckpointError: for a refused target or a failed write.
        """
        self.kwargs.update(kwargs)
        meta = dict(self.kwargs)
        side = dict(self.side_files)
        side.pop(PROVENANCE_FILE, None)
        if "training" in meta:
            side[TRAINING_FILE] = meta.pop("training")
        data = self.to_checkpoint_data()
        return write_checkpoint(
            save_directory,
            architecture=data.architecture,
            param_map=data.param_map,
            state_dict=data.state_dict,
            metadata=meta,
            side_files=side,
            use_safetensors=use_safetensors is not False,
            overwrite=overwrite,
            tensor_files=tensor_files,
            source=self.name_or_path if self.name_or_path and Path(self.name_or_path).exists() else None,
        )

    # ------------------------------------------------------------------ properties
    @property
    def input_dim(self) -> int:
        """Current GRADIEND input size."""
        return self._arch.input_dim

    @property
    def latent_dim(self) -> int:
        return self._arch.latent_dim

    @property
    def torch_dtype(self) -> torch.dtype:
        return self._arch.dtype

    @property
    def activation(self) -> str:
        """Encoder activation name (the reference's attribute name)."""
        return self._arch.activation_encoder

    @property
    def activation_decoder(self) -> str:
        return self._arch.activation_decoder

    @property
    def bias_decoder(self) -> bool:
        return self._arch.bias_decoder

    @property
    def architecture(self) -> Architecture:
        return self._arch

    @property
    def mapping(self) -> ParamMap:
        """The parameter map as a :class:`ParamMap` (our form)."""
        return self._map

    @property
    def param_map(self) -> dict[str, dict[str, Any]]:
        """The parameter map in the reference's ``name -> spec`` form (a fresh copy)."""
        return self._map.to_reference_dict()

    def unpruned_length(self) -> int:
        """Entries of all mapped parameters, i.e. input_dim before any pruning."""
        return self._map.unpruned_length

    def pruned_length(self) -> int:
        """Current input_dim."""
        return self.input_dim

    def __len__(self) -> int:
        return self.input_dim

    def base_global_index(self) -> torch.Tensor:
        """Base-global index of each input dimension, int64 ``(input_dim,)``."""
        return torch.from_numpy(self._map.base_global_index())

    # ------------------------------------------------------------------ importance and selection
    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.state_dict().items()}

    def get_weight_importance(self, part: str = DEFAULT_PART) -> torch.Tensor:
        """Importance of each input dimension, float32 ``(input_dim,)`` on CPU.

        See :mod:`gradiend_core.ranking.importance` for the definition of each part.

        Raises:
            ValueError: for an unknown part.
        """
        imp = weight_importance(self._weights(), part)
        warn_nonfinite(imp, validate_part(part))
        return torch.from_numpy(imp)

    def select(
        self,
        *,
        topk: object = None,
        threshold: object = None,
        mask: object = None,
        part: str = DEFAULT_PART,
        importance: torch.Tensor | np.ndarray | None = None,
        mask_expr: str | None = None,
    ) -> Selection:
        """Which input dimensions mask -> threshold -> topk keeps (without pruning).

        ``importance`` (shape ``(input_dim,)``, e.g. a gradient mean from pre-pruning) replaces
        the weight importance of ``part`` when given. ``mask_expr`` (see
        :mod:`gradiend_core.selection.expr`) is evaluated on this model and ANDed into ``mask``.

        Raises:
            SelectionError: for invalid arguments or a selection that keeps nothing.
        """
        if mask_expr is not None:
            from .selection.expr.evaluate import apply_mask_expr

            mask = apply_mask_expr(mask_expr, self.to_checkpoint_data(), mask)[0]
        imp = None
        if threshold is not None or topk is not None:
            if importance is not None:
                imp = Ranking(importance)
                if imp.size != self.input_dim:
                    raise SelectionError(f"importance has length {imp.size} but input_dim is {self.input_dim}.")
            else:
                imp = Ranking(weight_importance(self._weights(), part))
        return select(imp, input_dim=self.input_dim, mask=mask, threshold=threshold, topk=topk)

    def get_topk_weights(self, part: str = DEFAULT_PART, topk: int | float = 1000) -> list[int]:
        """Local indices of the ``topk`` most important dimensions, most important first.

        ``topk`` is a count (int >= 1, clipped to input_dim) or a fraction in (0, 1] (rounded up).
        """
        return topk_indices(weight_importance(self._weights(), part), topk).tolist()

    def get_enhancer_mask(self, topk: int | float, part: str = DEFAULT_PART) -> torch.Tensor:
        """Bool mask ``(input_dim,)`` of the dimensions ``prune(topk=topk, part=part)`` keeps.

        It lives in the current input space, so it is valid for pruned models too.
        """
        return torch.from_numpy(self.select(topk=topk, part=part).mask())

    def prune(
        self,
        *,
        topk: object = None,
        threshold: object = None,
        mask: object = None,
        part: str = DEFAULT_PART,
        importance: torch.Tensor | np.ndarray | None = None,
        inplace: bool = False,
        return_mask: bool = False,
        mask_expr: str | None = None,
    ) -> ParamMappedGradiendModel | tuple[ParamMappedGradiendModel, torch.Tensor]:
        """Keep the selected input dimensions and physically shrink encoder, decoder and map.

        Args:
            topk: int >= 1 (count) or float in (0, 1] (fraction of what mask and threshold left).
            threshold: keep dimensions with importance >= threshold.
            mask: bool ``(input_dim,)`` in the current input space.
            part: importance source when ``importance`` is not given.
            importance: optional importance vector ``(input_dim,)``.
            mask_expr: optional mask expression (:mod:`gradiend_core.selection.expr`), e.g.
                ``"top(decoder-weight, 5%) & top(encoder-weight, 5%)"``, ANDed into ``mask``.
            inplace: modify this model; otherwise return a new one and leave this unchanged.
            return_mask: also return the combined keep-mask, bool ``(old input_dim,)``.

        Returns:
            The pruned model, or ``(model, mask)`` with ``return_mask``.

        Raises:
            SelectionError: for invalid arguments or a selection that keeps nothing.
        """
        sel = self.select(
            topk=topk, threshold=threshold, mask=mask, part=part, importance=importance, mask_expr=mask_expr
        )
        new_state = prune_state_dict(self._weights(), sel.keep)
        new_map = self._map.restrict(sel.keep)
        if inplace:
            target = self
        else:
            target = ParamMappedGradiendModel.__new__(ParamMappedGradiendModel)
            nn.Module.__init__(target)
            target.kwargs = dict(self.kwargs)
            target.side_files = dict(self.side_files)
            target.name_or_path = self.name_or_path
        target._arch = dataclasses.replace(self._arch, input_dim=sel.k)
        target._map = new_map
        target._set_weights(new_state)
        target.train(self.training)
        if return_mask:
            return target, torch.from_numpy(sel.mask())
        return target

    # ------------------------------------------------------------------ forward
    def flatten_gradient_dict(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Gather the mapped entries of per-parameter gradients into one ``(input_dim,)`` vector."""
        parts = []
        for e in self._map:
            if e.num_selected == 0:
                continue
            flat = grads[e.name].reshape(-1)
            parts.append(flat if e.positions is None else flat[torch.from_numpy(e.positions).to(flat.device)])
        return torch.cat(parts)

    def _prepare(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(x, Mapping):
            x = self.flatten_gradient_dict(x)
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a tensor or a dict of gradients, got {type(x).__name__}")
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"input has final dimension {x.shape[-1]}, expected input_dim={self.input_dim}")
        return x.to(self.torch_dtype)

    def forward_encoder(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encode ``x`` of shape ``(..., input_dim)`` to ``(..., latent_dim)``."""
        return self.encoder(self._prepare(x))

    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], return_encoded: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Decode the encoding of ``x``: ``(..., input_dim) -> (..., input_dim)``.

        ``x`` may also be a dict of full per-parameter gradients; the decoded output is then a
        dict of the same shapes (see :meth:`unflatten_to_dict`). With ``return_encoded`` also
        returns the latent ``(..., latent_dim)``.
        """
        encoded = self.encoder(self._prepare(x))
        decoded = self.decoder(encoded)
        if isinstance(x, Mapping):
            decoded = self.unflatten_to_dict(decoded)
        return (decoded, encoded) if return_encoded else decoded

    def unflatten_to_dict(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scatter a ``(input_dim,)`` vector back to per-parameter tensors of the full shapes.

        Entries the map does not select are 0 (the reference's dict output of ``forward``).
        """
        out: dict[str, torch.Tensor] = {}
        for i, e in enumerate(self._map):
            lo, hi = int(self._map.local_offsets[i]), int(self._map.local_offsets[i + 1])
            seg = vector[..., lo:hi]
            if e.positions is None:
                out[e.name] = seg.reshape(e.shape)
            else:
                full = torch.zeros(e.numel, dtype=vector.dtype, device=vector.device)
                full[torch.from_numpy(e.positions).to(vector.device)] = seg
                out[e.name] = full.reshape(e.shape)
        return out

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, latent_dim={self.latent_dim}, unpruned_length={self.unpruned_length()}, "
            f"dtype={self._arch.torch_dtype}"
        )
