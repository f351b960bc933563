"""Checks of a written export: file digests and bit-for-bit comparison with what was meant."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..checkpoint import CheckpointData, read_checkpoint
from ..errors import CheckpointError

__all__ = [
    "HASH_CHUNK",
    "same_bits",
    "sha256_file",
    "verify_export",
]


HASH_CHUNK = 1 << 24


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality of two tensors (NaN equals NaN with the same payload, unlike ``==``)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}.get(a.element_size())
    if a.is_floating_point() and as_int is not None:
        return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))
    return torch.equal(a, b)


def verify_export(path: Path, expected: CheckpointData) -> None:
    back = read_checkpoint(path)
    problems = []
    if back.architecture.input_dim != expected.architecture.input_dim:
        problems.append(f"input_dim {back.architecture.input_dim} != {expected.architecture.input_dim}")
    if not back.param_map.same_selection(expected.param_map):
        problems.append("kept base-model entries differ")
    for key, t in expected.state_dict.items():
        if key not in back.state_dict or not same_bits(back.state_dict[key], t):
            problems.append(f"tensor {key} differs")
    if problems:
        raise CheckpointError(
            f"verification of the export failed: {'; '.join(problems)}. Nothing was moved into place (a previous "
            "export in the target directory is unchanged)."
        )
