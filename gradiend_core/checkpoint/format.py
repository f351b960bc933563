"""The checkpoint format of ``gradiend`` (format_version 0): names, ``config.json`` and the mapping.

The directory is the unit of exchange, as with Hugging Face ``save_pretrained``:

* ``config.json`` - ``format_version``, ``architecture`` (input_dim, latent_dim,
  activation_encoder, activation_decoder, bias_decoder, torch_dtype), ``mapping`` (mode,
  param_map entries with name/shape/repr/key/num_selected, indices_file, masks_file) and
  ``metadata``;
* weights in ``model.safetensors`` or ``pytorch_model.bin`` with keys
  ``encoder.0.linear.weight`` (latent_dim, input_dim), ``encoder.0.linear.bias`` (latent_dim,),
  ``decoder.0.linear.weight`` (input_dim, latent_dim), ``decoder.0.linear.bias`` (input_dim,)
  and, when the encoder activation is ``id`` (a LayerNorm(1) in the reference), ``encoder.1.*``;
* ``mapping_indices.*`` / ``mapping_masks.*`` (.safetensors or .pth) when some parameter is not
  fully selected;
* optional ``training.json``, ``gradiend_context.json`` and our ``pruning.json`` provenance.

This module parses and renders the JSON parts and plans the mapping files; it reads no weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..space.param_map import ParamEntry, ParamMap
from .files import CONFIG_FILE, MAPPING_INDICES, MAPPING_MASKS, SAFETENSORS_WEIGHTS
from .tensor_files import safetensors_size

__all__ = [
    "ACTIVATIONS",
    "Architecture",
    "DEC_B",
    "DEC_W",
    "DTYPES",
    "ENC_B",
    "ENC_W",
    "FORMAT_VERSION",
    "build_mapping",
    "expected_weight_shapes",
    "parse_architecture",
    "parse_mapping",
    "planned_file_sizes",
    "render_config",
    "side_file_text",
]

FORMAT_VERSION = 0

ENC_W = "encoder.0.linear.weight"
ENC_B = "encoder.0.linear.bias"
DEC_W = "decoder.0.linear.weight"
DEC_B = "decoder.0.linear.bias"

#: ``architecture.torch_dtype`` values the format allows (the reference writes ``str(dtype)`` without
#: ``torch.``, so any float dtype it trains in appears here).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
#: Activation names of the reference format ("smht" is its hard tanh; "id" is LayerNorm(1) in the encoder).
ACTIVATIONS = ("tanh", "relu", "leakyrelu", "gelu", "silu", "elu", "sigmoid", "smht", "id")


@dataclass
class Architecture:
    """The ``architecture`` block of ``config.json``."""

    input_dim: int
    latent_dim: int
    activation_encoder: str = "tanh"
    activation_decoder: str = "id"
    bias_decoder: bool = True
    torch_dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "activation_encoder": self.activation_encoder,
            "activation_decoder": self.activation_decoder,
            "bias_decoder": self.bias_decoder,
            "torch_dtype": self.torch_dtype,
        }

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.torch_dtype]


# ------------------------------------------------------------------------------ architecture
def _activation(arch: Mapping[str, Any], key: str, default: str, cfg_path: Path) -> str:
    value = arch.get(key, default)
    if value is None or value == "":
        value = arch.get("activation_encoder", "tanh") if key == "activation_decoder" else default
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise CheckpointError(
            f"{cfg_path}: architecture.{key} {value!r} is not an activation of the format; "
            f"use one of {', '.join(ACTIVATIONS)}."
        )
    return value


def _flag(arch: Mapping[str, Any], key: str, default: bool, cfg_path: Path) -> bool:
    value = arch.get(key, default)
    if not isinstance(value, bool):
        raise CheckpointError(f"{cfg_path}: architecture.{key} must be true or false, got {value!r}.")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {value!r}.")
    return tuple(value)


def parse_architecture(cfg: Mapping[str, Any], cfg_path: Path) -> Architecture:
    """Validate and parse the ``architecture`` block.

    Raises:
        CheckpointError: naming the field that is missing or invalid.
    """
    arch = cfg.get("architecture")
    if not isinstance(arch, Mapping):
        raise CheckpointError(
            f"{cfg_path}: field 'architecture' is missing or not an object, so this is not a GRADIEND checkpoint "
            "(a base model's directory, perhaps?). Give the directory that gradiend's save_pretrained wrote."
        )
    for key in ("input_dim", "latent_dim"):
        v = arch.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CheckpointError(f"{cfg_path}: architecture.{key} must be a positive integer, got {v!r}.")
    dtype = arch.get("torch_dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(
            f"{cfg_path}: architecture.torch_dtype {dtype!r} is not supported; use one of {sorted(DTYPES)}."
        )
    return Architecture(
        input_dim=int(arch["input_dim"]),
        latent_dim=int(arch["latent_dim"]),
        activation_encoder=_activation(arch, "activation_encoder", "tanh", cfg_path).lower(),
        activation_decoder=_activation(arch, "activation_decoder", "id", cfg_path),
        bias_decoder=_flag(arch, "bias_decoder", True, cfg_path),
        torch_dtype=dtype,
    )


def expected_weight_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes a checkpoint with this architecture must hold."""
    shapes = {
        ENC_W: (arch.latent_dim, arch.input_dim),
        ENC_B: (arch.latent_dim,),
        DEC_W: (arch.input_dim, arch.latent_dim),
    }
    if arch.bias_decoder:
        shapes[DEC_B] = (arch.input_dim,)
    if arch.activation_encoder == "id":  # the reference uses LayerNorm(1) as the "identity" encoder activation
        shapes["encoder.1.weight"] = (1,)
        shapes["encoder.1.bias"] = (1,)
    return shapes


# ----------------------------------------------------------------------------------- mapping
#: ``load(file_name) -> {key: tensor}``: how :func:`parse_mapping` reads a mapping file.
TensorFileLoader = Callable[[str], Mapping[str, torch.Tensor]]


def _indices_positions(t: torch.Tensor, numel: int, where: str) -> np.ndarray:
    if t.dtype not in (torch.int32, torch.int64):
        raise CheckpointError(f"{where}: indices must be int32 or int64, got {t.dtype}.")
    positions = t.detach().cpu().to(torch.int64).numpy().reshape(-1)
    if positions.size > 1 and not bool(np.all(positions[1:] > positions[:-1])):
        # gradiend maps input dim i to indices[i] in stored order and always stores them
        # increasing; a file that does not is refused rather than silently re-ordered.
        dup = np.unique(positions).size != positions.size
        raise CheckpointError(
            f"{where}: indices {'contain duplicates' if dup else 'are not in increasing order'}; "
            "this mapping file was not written by save_pretrained. Re-save the checkpoint with gradiend."
        )
    if positions.size and (positions[0] < 0 or positions[-1] >= numel):
        raise CheckpointError(f"{where}: indices must lie in [0, {numel}).")
    return positions


def _mask_positions(t: torch.Tensor, shape: tuple[int, ...], numel: int, where: str) -> np.ndarray:
    if tuple(t.shape) != shape and t.numel() != numel:
        raise CheckpointError(
            f"{where}: mask tensor has shape {tuple(t.shape)} but the parameter shape is {list(shape)}."
        )
    return np.flatnonzero(t.detach().cpu().reshape(-1).to(torch.bool).numpy()).astype(np.int64)


def _parse_entry(
    i: int, entry: Any, mapping: Mapping[str, Any], tensors: Mapping[str, Mapping[str, torch.Tensor]], cfg_path: Path
) -> ParamEntry:
    where = f"{cfg_path}: mapping.param_map[{i}]"
    if not isinstance(entry, Mapping) or not all(k in entry for k in ("name", "shape", "repr")):
        raise CheckpointError(f"{where} needs 'name', 'shape' (list of ints) and 'repr'.")
    name = str(entry["name"])
    where = f"{where} ({name})"
    shape = _shape(entry["shape"], where)
    rep = entry["repr"]
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    positions: np.ndarray | None = None
    if rep in ("indices", "mask"):
        file_field = "indices_file" if rep == "indices" else "masks_file"
        if file_field not in tensors:
            raise CheckpointError(f"{where} has repr {rep!r} but mapping.{file_field} is missing.")
        key = entry.get("key")
        if not isinstance(key, str) or key not in tensors[file_field]:
            raise CheckpointError(
                f"{where}: key {key!r} is not in {mapping[file_field]}; "
                "the mapping file does not belong to this config."
            )
        t = tensors[file_field][key]
        positions = _indices_positions(t, numel, where) if rep == "indices" else _mask_positions(t, shape, numel, where)
    elif rep != "all":
        raise CheckpointError(f"{where}: unknown repr {rep!r}; expected 'all', 'indices' or 'mask'.")
    e = ParamEntry(name, shape, positions)
    declared = entry.get("num_selected")
    if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)):
        raise CheckpointError(f"{where}: num_selected must be an integer, got {declared!r}.")
    if declared is not None and declared != e.num_selected:
        raise CheckpointError(f"{where}: num_selected is {declared} but the mapping selects {e.num_selected} entries.")
    return e


def parse_mapping(cfg: Mapping[str, Any], ckpt_dir: Path, input_dim: int, load: TensorFileLoader) -> ParamMap:
    """Read the ``mapping`` block and its tensor files into a :class:`ParamMap`.

    Args:
        cfg: the parsed ``config.json``.
        ckpt_dir: the checkpoint directory (for messages).
        input_dim: ``architecture.input_dim``, which the map must add up to.
        load: reads a mapping file named in the block (a name relative to ``ckpt_dir``).

    Raises:
        CheckpointError: for a missing block, file or key, a shape that disagrees with a mask
            tensor, or ``num_selected`` values that do not add up to ``input_dim``.
    """
    cfg_path = ckpt_dir / CONFIG_FILE
    mapping = cfg.get("mapping")
    if not isinstance(mapping, Mapping) or not isinstance(mapping.get("param_map"), list):
        raise CheckpointError(
            f"{cfg_path}: field 'mapping.param_map' is missing; this is a weights-only GradiendModel, "
            "not a ParamMappedGradiendModel, and cannot be mapped onto a base model."
        )
    tensors = {f: load(str(mapping[f])) for f in ("indices_file", "masks_file") if f in mapping}
    entries: list[ParamEntry] = [
        _parse_entry(i, e, mapping, tensors, cfg_path) for i, e in enumerate(mapping["param_map"])
    ]
    try:
        pmap = ParamMap(entries)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e
    if pmap.input_dim != input_dim:
        raise CheckpointError(
            f"{cfg_path}: the mapping selects {pmap.input_dim} entries in total but architecture.input_dim is "
            f"{input_dim}; config and mapping files do not belong together."
        )
    return pmap


#: ``key -> (dtype, shape, entry)`` of one mapping file's tensors, planned before any is built.
MappingSpecs = dict[str, tuple[torch.dtype, tuple[int, ...], ParamEntry]]


def build_mapping(
    param_map: ParamMap, use_safetensors: bool = True
) -> tuple[dict[str, Any], MappingSpecs, MappingSpecs]:
    """The ``mapping`` block of ``config.json`` and what the two mapping files will hold.

    No tensor is built here, so previews of huge models stay cheap.

    Returns:
        ``(mapping_json, index_specs, mask_specs)``, the specs mapping each key (``L{i}``) to
        ``(dtype, shape, entry)``: int32 indices (int64 for parameters over 2**31-1 entries) of
        shape ``(num_selected,)``, uint8 masks of the parameter shape.
    """
    entries = []
    idx: MappingSpecs = {}
    masks: MappingSpecs = {}
    for e, rep, key in param_map.storage_plan():
        item: dict[str, Any] = {"name": e.name, "shape": list(e.shape), "repr": rep}
        if rep == "indices":
            idx[key] = (torch.int32 if e.numel <= 2**31 - 1 else torch.int64, (e.num_selected,), e)
            item["key"] = key
        elif rep == "mask":
            masks[key] = (torch.uint8, tuple(e.shape), e)
            item["key"] = key
        item["num_selected"] = e.num_selected
        entries.append(item)
    reprs = sorted({item["repr"] for item in entries})
    mode = reprs[0] if len(reprs) == 1 else "mixed"
    mapping: dict[str, Any] = {"mode": mode, "param_map": entries}
    ext = "safetensors" if use_safetensors else "pth"
    if idx:
        mapping["indices_file"] = f"{MAPPING_INDICES}.{ext}"
    if masks:
        mapping["masks_file"] = f"{MAPPING_MASKS}.{ext}"
    return mapping, idx, masks


def render_config(arch: Architecture, mapping: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """The exact text of ``config.json`` (indent 2, the reference's key order)."""
    cfg = {
        "format_version": FORMAT_VERSION,
        "architecture": arch.to_json(),
        "mapping": mapping,
        "metadata": dict(metadata),
    }
    return json.dumps(cfg, indent=2)


def side_file_text(obj: Any) -> str:
    """The exact text a JSON side file is written with."""
    return json.dumps(obj, indent=2)


def planned_file_sizes(
    architecture: Architecture,
    param_map: ParamMap,
    weight_shapes: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
    metadata: Mapping[str, Any],
    side_files: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Bytes of every file :func:`~gradiend_core.checkpoint.write_checkpoint` writes with safetensors.

    Args:
        architecture, param_map, metadata, side_files: as for ``write_checkpoint``.
        weight_shapes: ``key -> (dtype, shape)`` of the weights to write.

    Returns:
        File name -> size in bytes (config.json, model.safetensors, mapping files, side files).
    """
    mapping, idx, masks = build_mapping(param_map, True)
    sizes = {
        CONFIG_FILE: len(render_config(architecture, mapping, metadata).encode("utf-8")),
        SAFETENSORS_WEIGHTS: safetensors_size(weight_shapes),
    }
    if idx:
        sizes[mapping["indices_file"]] = safetensors_size({k: (d, s) for k, (d, s, _) in idx.items()})
    if masks:
        sizes[mapping["masks_file"]] = safetensors_size({k: (d, s) for k, (d, s, _) in masks.items()})
    for name, obj in (side_files or {}).items():
        sizes[name] = len(side_file_text(obj).encode("utf-8"))
    return sizes
