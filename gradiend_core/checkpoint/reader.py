"""Reading a checkpoint directory: find it, parse its config and mapping, load its weights."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..space.param_map import ParamMap
from .files import BIN_WEIGHTS, CARRIED_JSON_FILES, CONFIG_FILE, PROVENANCE_FILE, SAFETENSORS_WEIGHTS
from .format import FORMAT_VERSION, Architecture, parse_architecture, parse_mapping
from .tensor_files import ProgressFn, load_tensor_file
from .weights import WeightSource

__all__ = [
    "CheckpointData",
    "find_weights",
    "open_checkpoint",
    "read_checkpoint",
    "read_config",
    "read_json",
    "resolve_checkpoint_dir",
]


class CheckpointData:
    """A checkpoint directory: its config, parameter map and side files, and its weights.

    Opened with :func:`open_checkpoint`, the weights stay in their file and are read in blocks
    (:attr:`weights`) by whatever needs them, so a checkpoint larger than memory can be explored;
    :attr:`state_dict` loads them whole on first use (the model API and the trainer need that).
    :func:`read_checkpoint` loads them at once.

    Attributes:
        path: the directory that holds ``config.json`` (the ``model/`` subfolder of an experiment
            directory when one was given).
        architecture: the parsed ``architecture`` block.
        param_map: the parameter map.
        metadata: the ``metadata`` block, unchanged.
        side_files: parsed JSON side files by file name (``training.json``, ...).
        weights_file: path of the weight file.
        weights: the weight file, read on request (``None`` for a model built in memory).
    """

    def __init__(
        self,
        path: Path,
        architecture: Architecture,
        param_map: ParamMap,
        state_dict: dict[str, torch.Tensor] | None = None,
        metadata: dict[str, Any] | None = None,
        side_files: dict[str, Any] | None = None,
        weights_file: Path | None = None,
        weights: WeightSource | None = None,
    ):
        self.path = path
        self.architecture = architecture
        self.param_map = param_map
        self._state_dict = state_dict
        self.metadata = dict(metadata or {})
        self.side_files = dict(side_files or {})
        self.weights_file = weights_file
        self.weights = weights
        if state_dict is None and weights is None:
            raise ValueError("a CheckpointData needs its weights: a state_dict or a WeightSource.")

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        """GRADIEND weights by key, in the architecture's dtype; loaded whole on first use."""
        if self._state_dict is None:
            self._state_dict = self.weights.read_all()
        return self._state_dict

    @property
    def loaded(self) -> bool:
        """Whether the weights are held in memory."""
        return self._state_dict is not None

    def carried_side_files(self) -> dict[str, Any]:
        """The JSON side files an export of this checkpoint carries over unchanged."""
        return {k: v for k, v in self.side_files.items() if k in CARRIED_JSON_FILES}

    def weight_dtypes(self) -> dict[str, torch.dtype]:
        """The dtype of each weight tensor, by key (without loading the weights)."""
        if self._state_dict is not None:
            return {k: v.dtype for k, v in self._state_dict.items()}
        return self.weights.dtypes()

    def __repr__(self) -> str:
        return f"CheckpointData({str(self.path)!r}, input_dim={self.architecture.input_dim}, loaded={self.loaded})"


def resolve_checkpoint_dir(path: os.PathLike | str) -> Path:
    """The directory holding ``config.json`` for a checkpoint or experiment directory.

    Raises:
        CheckpointError: if ``path`` does not exist or holds no checkpoint.
    """
    try:
        return _resolve_checkpoint_dir(Path(path).expanduser())
    except CheckpointError:  # already names the path (it is a ValueError too: do not wrap it again)
        raise
    except PermissionError as e:
        raise CheckpointError(f"{e.filename or path}: permission denied; make the checkpoint readable.") from e
    except (OSError, ValueError) as e:  # e.g. a NUL byte or an over-long name
        raise CheckpointError(f"{path!r}: not a usable path ({e}).") from e


def _resolve_checkpoint_dir(p: Path) -> Path:
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory. Give the path of a GRADIEND checkpoint directory.")
    if p.is_file():
        raise CheckpointError(
            f"{p} is a file; give the checkpoint directory that holds config.json "
            "(a .zip must be extracted first, e.g. with gradiend_core.checkpoint.archive.extract_checkpoint_zip)."
        )
    if (p / CONFIG_FILE).is_file():
        return p
    if (p / "model" / CONFIG_FILE).is_file():
        return p / "model"
    if not any(p.iterdir()):
        raise CheckpointError(f"{p} is an empty directory; it holds no GRADIEND checkpoint.")
    raise CheckpointError(
        f"{p} holds no {CONFIG_FILE} (nor model/{CONFIG_FILE}); is this a GRADIEND checkpoint directory "
        "written by save_pretrained?"
    )


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file.

    Raises:
        CheckpointError: for an unreadable file or invalid UTF-8 JSON, naming ``what`` it is.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {what} is not valid UTF-8 JSON ({e}). Re-save the checkpoint.") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e.strerror}).") from e


def find_weights(ckpt_dir: Path) -> Path:
    """The weight file of a checkpoint directory (``model.safetensors``, else ``pytorch_model.bin``).

    Raises:
        CheckpointError: when there is none.
    """
    for name in (SAFETENSORS_WEIGHTS, BIN_WEIGHTS):
        if (ckpt_dir / name).is_file():
            return ckpt_dir / name
    raise CheckpointError(
        f"{ckpt_dir}: no weight file ({SAFETENSORS_WEIGHTS} or {BIN_WEIGHTS}); the checkpoint is incomplete."
    )


def read_config(ckpt_dir: Path) -> dict[str, Any]:
    """``config.json`` of a resolved checkpoint directory, checked to be a format_version 0 object.

    Raises:
        CheckpointError: for a missing or malformed file or another format version.
    """
    cfg_path = ckpt_dir / CONFIG_FILE
    cfg = read_json(cfg_path, "config")
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{cfg_path}: expected a JSON object.")
    version = cfg.get("format_version", FORMAT_VERSION)
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version {version!r} is not supported (this tool reads {FORMAT_VERSION}); "
            "upgrade gradiend_core or re-save the model with gradiend 0.2.x."
        )
    return dict(cfg)


def read_side_files(ckpt_dir: Path) -> dict[str, Any]:
    """The JSON side files present (carried files and ``pruning.json``), parsed; broken ones are
    skipped, since they are informational and must not block opening the model."""
    side = {}
    for name in CARRIED_JSON_FILES + (PROVENANCE_FILE,):
        if (ckpt_dir / name).is_file():
            try:
                side[name] = read_json(ckpt_dir / name, name)
            except CheckpointError:
                pass
    return side


def open_checkpoint(path: os.PathLike | str) -> CheckpointData:
    """Open a GRADIEND checkpoint directory (or an experiment directory with ``model/``) without
    loading its weights: config, mapping and side files are read, the weight file's header is
    checked against the architecture, and the weights stay in the file.

    Returns:
        A :class:`CheckpointData` whose :attr:`~CheckpointData.weights` reads blocks on request.

    Raises:
        CheckpointError: with the file and field at fault and what to do, for every malformed input.
    """
    ckpt_dir = resolve_checkpoint_dir(path)
    cfg = read_config(ckpt_dir)
    arch = parse_architecture(cfg, ckpt_dir / CONFIG_FILE)
    pmap = parse_mapping(cfg, ckpt_dir, arch.input_dim, lambda name: load_tensor_file(ckpt_dir / name))
    weights_file = find_weights(ckpt_dir)
    meta = cfg.get("metadata") or {}
    return CheckpointData(
        path=ckpt_dir,
        architecture=arch,
        param_map=pmap,
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
        side_files=read_side_files(ckpt_dir),
        weights_file=weights_file,
        weights=WeightSource(weights_file, arch),
    )


def read_checkpoint(path: os.PathLike | str, progress: ProgressFn | None = None) -> CheckpointData:
    """Read a GRADIEND checkpoint directory (or an experiment directory with ``model/``) into memory.

    Args:
        path: checkpoint directory.
        progress: optional ``progress(done_bytes, total_bytes)`` callback while the weight file is
            read (every 64 MiB).

    Returns:
        A :class:`CheckpointData` with its weights loaded, cast to ``architecture.torch_dtype``.

    Raises:
        CheckpointError: with the file and field at fault and what to do, for every malformed input.
    """
    data = open_checkpoint(path)
    data._state_dict = data.weights.read_all(progress)
    return data
