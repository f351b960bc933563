"""Sizes of a checkpoint: in memory (its parameters) and on disk (its model files).

A checkpoint's *size on disk* is the bytes of its model files, the files ``save_pretrained``
writes for the model: ``config.json``, the weight file (``model.safetensors`` or
``pytorch_model.bin``) and the mapping files (``mapping_indices.*``, ``mapping_masks.*``). Every
other file in the directory (``training.json``, ``gradiend_context.json``, ``pruning.json``,
training records such as ``pre_prune.safetensors``) is a side file: listed apart, never counted
in the size, so the size of an export can be compared with the size of its source. One
definition for the checkpoint header, the preview, the export banner and the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import BIN_WEIGHTS, CONFIG_FILE, MAPPING_STEMS, SAFETENSORS_WEIGHTS
from .format import Architecture, expected_weight_shapes

__all__ = [
    "DiskSize",
    "directory_disk_size",
    "gradiend_param_counts",
    "is_model_file",
    "memory_bytes",
    "weight_specs",
]


def gradiend_param_counts(arch: Architecture) -> dict[str, int]:
    """Parameters of each GRADIEND tensor (encoder weight/bias, decoder weight/bias, activation)."""
    counts = {
        "encoder_weight": arch.latent_dim * arch.input_dim,
        "encoder_bias": arch.latent_dim,
        "decoder_weight": arch.input_dim * arch.latent_dim,
        "decoder_bias": arch.input_dim if arch.bias_decoder else 0,
    }
    counts["activation"] = 2 if arch.activation_encoder == "id" else 0
    return counts


def weight_specs(arch: Architecture, dtypes: Mapping[str, torch.dtype] | None = None):
    return {key: ((dtypes or {}).get(key, arch.dtype), shape) for key, shape in expected_weight_shapes(arch).items()}


def memory_bytes(arch: Architecture, dtypes: Mapping[str, torch.dtype] | None = None) -> int:
    """Bytes of the GRADIEND's parameters in memory at their dtypes (``key -> dtype``; the
    architecture's dtype for keys not given)."""
    total = 0
    for dtype, shape in weight_specs(arch, dtypes).values():
        total += int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
    return total


def is_model_file(name: str) -> bool:
    """True for the files that make up the model (config, weights, mapping), by file name."""
    return name in (CONFIG_FILE, SAFETENSORS_WEIGHTS, BIN_WEIGHTS) or Path(name).stem in MAPPING_STEMS


@dataclass(frozen=True)
class DiskSize:
    """Bytes per file of a checkpoint directory (written or planned), split by :func:`is_model_file`.

    Attributes:
        model_files: model file name -> bytes.
        side_files: every other file name -> bytes.
    """

    model_files: dict[str, int] = field(default_factory=dict)
    side_files: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, int]) -> DiskSize:
        """Split ``file name -> bytes`` into model and side files."""
        model = {k: int(v) for k, v in sizes.items() if is_model_file(k)}
        side = {k: int(v) for k, v in sizes.items() if not is_model_file(k)}
        return cls(model, side)

    @property
    def model_bytes(self) -> int:
        """The size on disk: bytes of the model files."""
        return sum(self.model_files.values())

    @property
    def side_bytes(self) -> int:
        """Bytes of the side files (not part of the size on disk)."""
        return sum(self.side_files.values())

    def describe(self) -> str:
        """One line naming every file and its bytes: model files first, side files apart."""

        def listed(files: dict[str, int]) -> str:
            return ", ".join(f"{k} {v:,} B" for k, v in sorted(files.items()))

        text = "Model files (config, weights, mapping): " + listed(self.model_files)
        if self.side_files:
            text += ". Side files, not counted: " + listed(self.side_files)
        return text + "."


def directory_disk_size(path: str | os.PathLike) -> DiskSize:
    """The files of a checkpoint directory as they are on disk (sub-directories are ignored).

    Raises:
        OSError: when the directory cannot be listed.
    """
    return DiskSize.from_sizes({f.name: f.stat().st_size for f in Path(path).iterdir() if f.is_file()})
