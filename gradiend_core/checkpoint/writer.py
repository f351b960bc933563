"""Writing a checkpoint directory atomically: stage every file beside the target, then swap."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..errors import CheckpointError
from ..param_map import ParamMap
from .format import (
    BIN_WEIGHTS,
    CONFIG_FILE,
    SAFETENSORS_WEIGHTS,
    Architecture,
    MappingSpecs,
    build_mapping,
    render_config,
    side_file_text,
)
from .targets import check_target

__all__ = ["write_checkpoint"]

#: Extra safetensors files: file name -> ``(tensors, header metadata)``.
TensorFiles = Mapping[str, Tuple[Mapping[str, torch.Tensor], Mapping[str, str]]]


def _materialise(specs: MappingSpecs) -> Dict[str, torch.Tensor]:
    out = {}
    for key, (dtype, shape, e) in specs.items():
        if dtype == torch.uint8:
            m = np.zeros(e.numel, dtype=np.uint8)
            m[e.selected_positions()] = 1
            out[key] = torch.from_numpy(m.reshape(shape))
        else:
            out[key] = torch.from_numpy(e.selected_positions().astype(np.int32 if dtype == torch.int32 else np.int64))
    return out


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], use_safetensors: bool, header=None) -> None:
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    if use_safetensors:
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata=dict(header) if header else None)
    else:
        torch.save(tensors, str(path))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage_files(
    tmp: Path,
    *,
    architecture: Architecture,
    param_map: ParamMap,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    side_files: Optional[Mapping[str, Any]],
    use_safetensors: bool,
    tensor_files: Optional[TensorFiles],
) -> None:
    """Write every file of the checkpoint into the staging directory ``tmp``."""
    mapping, idx, masks = build_mapping(param_map, use_safetensors)
    _save_tensors(tmp / (SAFETENSORS_WEIGHTS if use_safetensors else BIN_WEIGHTS), state_dict, use_safetensors)
    if idx:
        _save_tensors(tmp / mapping["indices_file"], _materialise(idx), use_safetensors)
    if masks:
        _save_tensors(tmp / mapping["masks_file"], _materialise(masks), use_safetensors)
    (tmp / CONFIG_FILE).write_text(render_config(architecture, mapping, metadata), encoding="utf-8")
    for name, obj in (side_files or {}).items():
        (tmp / name).write_text(side_file_text(obj), encoding="utf-8")
    for name, (tensors, header) in (tensor_files or {}).items():
        _save_tensors(tmp / name, tensors, True, header)


def _make_durable(tmp: Path) -> None:
    """Give the staged files the usual 0644 (less umask) and flush them to disk."""
    umask = os.umask(0)
    os.umask(umask)
    for f in tmp.iterdir():
        # safetensors creates files 0600; a checkpoint is shared data, so use the usual 0644 (less umask).
        os.chmod(f, 0o666 & ~umask)
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.chmod(tmp, 0o755)


def _swap_into_place(tmp: Path, target: Path, parent: Path) -> Path:
    """Move the staged directory to ``target``; an existing target is moved aside first, so the
    swap is two renames, never a half-written tree."""
    final = target.resolve()
    if final.exists():
        trash = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(parent)
    return final


def write_checkpoint(
    target: os.PathLike | str,
    *,
    architecture: Architecture,
    param_map: ParamMap,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    side_files: Optional[Mapping[str, Any]] = None,
    use_safetensors: bool = True,
    overwrite: bool = False,
    source: Optional[os.PathLike | str] = None,
    tensor_files: Optional[TensorFiles] = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Files are written into a fresh temporary directory beside ``target`` and moved into place
    with one rename, so a failure (full disk, crash) leaves either nothing or the old content.

    Args:
        target: directory to create.
        architecture, param_map, state_dict, metadata: the model.
        side_files: JSON-serialisable objects by file name (e.g. ``training.json``).
        use_safetensors: ``model.safetensors`` and ``.safetensors`` mapping files if true, else
            ``pytorch_model.bin`` and ``.pth`` (the reference's two layouts).
        overwrite: replace a non-empty ``target``.
        source: the checkpoint this one derives from; ``target`` may not be or contain it.
        tensor_files: extra safetensors files written in the same atomic step, as file name ->
            ``(tensors, header metadata)`` (e.g. the trainer's pre-prune record).

    Returns:
        The target path.

    Raises:
        CheckpointError: for a refused target (see :func:`check_target`) or a failed write.
    """
    target = Path(target).expanduser()
    check_target(target, overwrite, Path(source) if source is not None else None)
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as e:
        raise CheckpointError(
            f"cannot create {target}: {e.strerror or e} ({e.filename or parent}); choose a directory you can write."
        ) from e
    try:
        _stage_files(
            tmp, architecture=architecture, param_map=param_map, state_dict=state_dict, metadata=metadata,
            side_files=side_files, use_safetensors=use_safetensors, tensor_files=tensor_files,
        )
        _make_durable(tmp)
        return _swap_into_place(tmp, target, parent)
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (OSError, RuntimeError) as e:  # safetensors and torch.save raise their own types for I/O errors
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1][:200]
        raise CheckpointError(f"writing {target} failed ({reason}); nothing was written.") from e
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if type(e).__name__ == "SafetensorError":
            raise CheckpointError(f"writing {target} failed ({e}); nothing was written.") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
