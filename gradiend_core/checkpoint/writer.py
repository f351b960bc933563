"""Writing a checkpoint directory atomically: stage every file beside the target, verify the
staged copy, then swap it into place.

At every instant the target holds either its old content (or nothing, for a new target) or the
complete, verified new checkpoint: files are written into a hidden staging directory beside the
target (``.<name>.tmp-<pid>-<random>``), checked there by the caller's ``verify``, and moved into
place by one atomic directory exchange (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two
renames). A staging directory left by a killed process is removed by the next write beside it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..space.param_map import ParamMap
from .files import BIN_WEIGHTS, CONFIG_FILE, SAFETENSORS_WEIGHTS
from .format import Architecture, MappingSpecs, build_mapping, render_config, side_file_text
from .targets import check_target

__all__ = ["write_checkpoint"]

#: Extra safetensors files: file name -> ``(tensors, header metadata)``.
TensorFiles = Mapping[str, tuple[Mapping[str, torch.Tensor], Mapping[str, str]]]


def _materialise(specs: MappingSpecs) -> dict[str, torch.Tensor]:
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
    if use_safetensors and header:
        _save_with_sorted_metadata(path, tensors, header)
    elif use_safetensors:
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path))


def _save_with_sorted_metadata(path: Path, tensors: Mapping[str, torch.Tensor], header: Mapping[str, str]) -> None:
    """``safetensors.torch.save`` with the header metadata in sorted key order.

    Why: safetensors writes ``__metadata__`` in hash-map order, which changes from run to run, so
    two exports of one checkpoint would differ in bytes. The layout is safetensors' documented one
    (8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, data);
    only the order of the metadata keys changes. Used for the small record and mask files.
    """
    from safetensors.torch import save

    raw = save(dict(tensors), metadata={str(k): str(v) for k, v in header.items()})
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8 : 8 + n])
    meta = head.pop("__metadata__", {})
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **head}, separators=(",", ":"), ensure_ascii=False)
    body = text.encode("utf-8")
    body += b" " * (-len(body) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)))
        f.write(body)
        f.write(memoryview(raw)[8 + n :])


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
    side_files: Mapping[str, Any] | None,
    use_safetensors: bool,
    tensor_files: TensorFiles | None,
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


def _creation_mode(directory: Path) -> int:
    """The permission bits a new directory gets here (``0o777`` less the umask, or what a default
    ACL gives), found by creating one.

    Why not ``os.umask``: reading the umask means setting it, and the umask is process-wide; the
    dashboard serves every session from one process, so a file another thread creates in between
    would get mode 0666. Creating a probe changes nothing outside ``directory``.
    """
    probe = directory / f".mode-{uuid.uuid4().hex[:8]}"
    os.mkdir(probe, 0o777)
    try:
        return os.stat(probe).st_mode & 0o777
    finally:
        os.rmdir(probe)


def _make_durable(tmp: Path) -> None:
    """Give the staged files the usual modes (0666 and 0777 less the umask) and flush them to disk."""
    mode = _creation_mode(tmp)
    for f in tmp.iterdir():
        # safetensors creates files 0600; a checkpoint is shared data, so use what open() would give.
        os.chmod(f, mode & 0o666)
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.chmod(tmp, mode)


# ------------------------------------------------------------------------------- the swap
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the directories ``a`` and ``b`` (both exist); ``False`` where the system
    cannot (no ``renameat2``, or a file system without RENAME_EXCHANGE).

    Why ctypes: the standard library has no ``renameat2``, and only an exchange keeps a complete
    checkpoint under the target name at every instant (two renames leave a moment with none).
    """
    func = getattr(_libc(), "renameat2", None)
    if func is None:
        return False
    sys.audit("gradiend_core.checkpoint.exchange", str(a), str(b))  # like os.rename's "os.rename" event
    rc = func(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _remove_replaced(old: Path, target: Path) -> None:
    """Delete the replaced checkpoint; a failure is reported, never left behind silently."""
    problems = []

    def note(_fn, path, exc_info) -> None:
        e = exc_info[1]
        problems.append(f"{path}: {getattr(e, 'strerror', None) or e}")

    shutil.rmtree(old, onerror=note)  # onerror, not onexc: Python 3.11
    if problems or old.exists():
        raise CheckpointError(
            f"{target} now holds the new, verified checkpoint, but the one it replaced could not be deleted "
            f"({problems[0] if problems else old}); delete {old} by hand."
        )


def _swap_into_place(tmp: Path, target: Path, parent: Path) -> Path:
    """Move the verified staging directory to ``target``; an existing target is exchanged with it
    in one step and then deleted."""
    final = target.resolve()
    if not final.exists():
        os.rename(tmp, final)
        _fsync_dir(parent)
        return final
    if _exchange(tmp, final):
        old = tmp  # the staging name now holds the replaced checkpoint
    else:
        old = parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
    _fsync_dir(parent)
    _remove_replaced(old, target)
    return final


# ------------------------------------------------------------------------- before writing
def _check_replaceable(final: Path, target: Path) -> None:
    """Refuse to replace a checkpoint this process could not delete afterwards (a read-only
    directory in it), before anything is written."""
    if not final.is_dir():
        return
    for root, _dirs, _files in os.walk(final):
        if not os.access(root, os.W_OK | os.X_OK):
            raise CheckpointError(
                f"cannot replace {target}: {root} is read-only, so the old checkpoint could not be deleted after "
                "the swap. Make it writable (chmod -R u+w) or choose another directory; nothing was written."
            )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Delete staging and replaced directories that a killed write of ``name`` left in ``parent``
    (their names carry the writer's process id; a live writer's are kept)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(?:tmp|old)-(\d+)-[0-9a-z_]+$")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)


def _make_staging_dir(target: Path, parent: Path) -> Path:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent, target.name)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise CheckpointError(
            f"cannot create {target}: {e.strerror or e} ({e.filename or parent}); choose a directory you can write."
        ) from e


def write_checkpoint(
    target: os.PathLike | str,
    *,
    architecture: Architecture,
    param_map: ParamMap,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    side_files: Mapping[str, Any] | None = None,
    use_safetensors: bool = True,
    overwrite: bool = False,
    source: os.PathLike | str | None = None,
    tensor_files: TensorFiles | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Files are written into a fresh hidden directory beside ``target``, flushed, checked by
    ``verify`` there, and only then moved into place (an existing target is exchanged with it in
    one atomic step where the system allows, then deleted). A failure, a failed verification, a
    KeyboardInterrupt or a killed process leaves ``target`` as it was: its old content, or nothing.

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
        verify: called with the staging directory once every file is written and flushed; raise
            (preferably :class:`CheckpointError`) to abandon the write. The target is untouched
            until it returns.

    Returns:
        The target path.

    Raises:
        CheckpointError: for a refused target (see :func:`check_target`), a target that could
            not be deleted after replacing it (read-only), a failed write or a failed ``verify``.
    """
    target = Path(target).expanduser()
    check_target(target, overwrite, Path(source) if source is not None else None)
    parent = target.resolve().parent
    if overwrite:
        _check_replaceable(target.resolve(), target)
    tmp = _make_staging_dir(target, parent)
    try:
        _stage_files(
            tmp,
            architecture=architecture,
            param_map=param_map,
            state_dict=state_dict,
            metadata=metadata,
            side_files=side_files,
            use_safetensors=use_safetensors,
            tensor_files=tensor_files,
        )
        _make_durable(tmp)
        if verify is not None:
            verify(tmp)
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
