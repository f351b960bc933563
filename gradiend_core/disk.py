"""Size on disk: one definition for the checkpoint header, the preview, the export banner and the CLI.

A checkpoint's *size on disk* is the bytes of its model files, the files ``save_pretrained``
writes for the model: ``config.json``, the weight file (``model.safetensors`` or
``pytorch_model.bin``) and the mapping files (``mapping_indices.*``, ``mapping_masks.*``). Every
other file in the directory (``training.json``, ``gradiend_context.json``, ``pruning.json``,
training records such as ``pre_prune.safetensors``) is a side file: listed apart, never counted
in the size, so the size of an export can be compared with the size of its source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

from .checkpoint import BIN_WEIGHTS, CONFIG_FILE, SAFETENSORS_WEIGHTS, CheckpointData
from .reduction import ReductionReport

__all__ = ["DiskSize", "directory_disk_size", "export_disk_size", "is_model_file", "preview_disk_sizes"]

#: Stems of the mapping files (``.safetensors`` or ``.pth``).
MAPPING_STEMS = ("mapping_indices", "mapping_masks")


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

    model_files: Dict[str, int] = field(default_factory=dict)
    side_files: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, int]) -> "DiskSize":
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

        def listed(files: Dict[str, int]) -> str:
            return ", ".join(f"{k} {v:,} B" for k, v in sorted(files.items()))

        text = "Model files (config, weights, mapping): " + listed(self.model_files)
        if self.side_files:
            text += ". Side files, not counted: " + listed(self.side_files)
        return text + "."


def directory_disk_size(path: Union[str, os.PathLike]) -> DiskSize:
    """The files of a checkpoint directory as they are on disk (sub-directories are ignored).

    Raises:
        OSError: when the directory cannot be listed.
    """
    return DiskSize.from_sizes({f.name: f.stat().st_size for f in Path(path).iterdir() if f.is_file()})


def export_disk_size(report: ReductionReport) -> DiskSize:
    """The files an export of ``report``'s selection writes, as planned (safetensors; the export's
    own ``pruning.json`` is written beside them and is a side file)."""
    return DiskSize.from_sizes(report.disk_files_after)


def preview_disk_sizes(data: CheckpointData, report: ReductionReport) -> Tuple[DiskSize, DiskSize]:
    """``(before, after)`` of the preview: the source checkpoint's files on disk (the size the
    checkpoint header shows) and the files an export of the selection writes."""
    return directory_disk_size(data.path), export_disk_size(report)
