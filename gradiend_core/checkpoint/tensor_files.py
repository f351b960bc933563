"""Tensor files: the safetensors layout (read in whole or in element ranges, sizes predicted) and
pickle-based ``.bin``/``.pth`` files loaded without running code.

Why our own safetensors reader beside ``safetensors.safe_open``: ``safe_open`` maps the file, so
every page read through it stays resident in the process (a 13 GB weight file read once makes a
13 GB process), and touching a 10^8-entry tensor through a mapping page-faults 4 KiB at a time
(about 1.5 s per 400 MB here, against 0.2 s for a plain read). Here tensors are read with plain
positional reads into fresh buffers, whole or by element range, so memory follows what the caller
keeps. The layout is safetensors' documented one (8-byte little-endian header length, JSON header,
then the data); every offset is checked before use. One reader serves every file size and every
dtype, so a file opens the same way at 1 KB and at 100 GB.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

__all__ = [
    "ProgressFn",
    "SafetensorsFile",
    "TensorInfo",
    "load_tensor_file",
    "safetensors_size",
]

#: ``progress(done_bytes, total_bytes)``, called while a large file is read.
ProgressFn = Callable[[int, int], None]

#: safetensors dtype names and the torch dtypes they hold.
_FROM_ST: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
_ST_DTYPE = {v: k for k, v in _FROM_ST.items()}
#: safetensors' own dtype order; its writer puts tensors of a higher order first, then by name.
_ST_ORDER = {"BOOL": 0, "U8": 4, "I8": 5, "I16": 9, "F16": 11, "BF16": 12, "I32": 13, "F32": 15, "F64": 17, "I64": 18}
#: Bytes per read call (progress is reported after each).
READ_BLOCK = 64 * 1024**2
#: Largest header accepted (safetensors' own limit is 100 MB).
MAX_HEADER = 100 * 1024**2


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file.

    Attributes:
        name: the tensor's key.
        dtype: its torch dtype.
        shape: its shape.
        start, stop: absolute byte offsets of its data in the file.
    """

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return torch.empty(0, dtype=self.dtype).element_size()

    @property
    def numel(self) -> int:
        """Elements in the tensor."""
        return math.prod(self.shape)


def _parse_info(name: str, info: Any, data_len: int, path: Path) -> tuple[torch.dtype, tuple[int, ...], int, int]:
    try:
        dtype = _FROM_ST[info["dtype"]]
        shape = tuple(int(x) for x in info["shape"])
        start, stop = (int(x) for x in info["data_offsets"])
    except KeyError as e:
        raise CheckpointError(f"{path}: tensor {name!r}: unsupported or missing dtype/shape/offsets ({e}).") from e
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"{path}: corrupted safetensors header at tensor {name!r} ({e}); copy the file again."
        ) from e
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{path}: corrupted safetensors header: tensor {name!r} has shape {list(shape)}.")
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if not (0 <= start <= stop <= data_len) or stop - start != nbytes:
        raise CheckpointError(
            f"{path}: tensor {name!r} lies outside the file or has the wrong size; the file is truncated or corrupted."
        )
    return dtype, shape, start, stop


class SafetensorsFile:
    """A safetensors file whose header has been read and checked; tensors are read on request.

    Args:
        path: the ``.safetensors`` file.

    Attributes:
        path: the file.
        size: its size in bytes.
        header_bytes: the raw JSON header (for identity digests).
        metadata: the header's ``__metadata__`` (str -> str), empty without one.
        tensors: :class:`TensorInfo` by key, in file order.

    Raises:
        CheckpointError: for a missing, unreadable, truncated or corrupted file (the message says
            which and what to do).
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{self.path}: truncated safetensors file (no header); copy it again.")
                hlen = struct.unpack("<Q", head)[0]
                if hlen > min(self.size - 8, MAX_HEADER):
                    raise CheckpointError(
                        f"{self.path}: corrupted safetensors header (length {hlen}); copy the file again."
                    )
                self.header_bytes = f.read(hlen)
        except PermissionError as e:
            raise CheckpointError(f"{self.path}: permission denied; make the file readable.") from e
        except FileNotFoundError as e:
            raise CheckpointError(f"{self.path}: file is missing; the checkpoint is incomplete, copy it again.") from e
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror or e}).") from e
        try:
            header = json.loads(self.header_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupted safetensors header ({e}); copy the file again.") from e
        if not isinstance(header, dict):
            raise CheckpointError(
                f"{self.path}: corrupted safetensors header (not a JSON object); copy the file again."
            )
        meta = header.pop("__metadata__", None)
        self.metadata: dict[str, str] = dict(meta) if isinstance(meta, dict) else {}
        self.data_start = 8 + hlen
        data_len = self.size - self.data_start
        infos = []
        for name, info in header.items():
            dtype, shape, start, stop = _parse_info(name, info, data_len, self.path)
            infos.append(TensorInfo(name, dtype, shape, self.data_start + start, self.data_start + stop))
        infos.sort(key=lambda t: (t.start, t.stop))
        nonempty = [t for t in infos if t.stop > t.start]
        if any(a.stop > b.start for a, b in zip(nonempty, nonempty[1:])):
            raise CheckpointError(f"{self.path}: tensors overlap in the file; it is corrupted.")
        if max((t.stop for t in infos), default=self.data_start) != self.size:
            raise CheckpointError(f"{self.path}: data after the last tensor; the file is corrupted, copy it again.")
        self.tensors: dict[str, TensorInfo] = {t.name: t for t in infos}

    # ------------------------------------------------------------------------------ reading
    def _pread_into(
        self, fd: int, view: memoryview, offset: int, progress: ProgressFn | None, done0: int, total: int
    ) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done : done + READ_BLOCK]], offset + done)
            if not got:
                raise CheckpointError(f"{self.path}: truncated while reading; copy the file again.")
            done += got
            if progress is not None:
                progress(done0 + done, total)

    def read_all(self, progress: ProgressFn | None = None) -> dict[str, torch.Tensor]:
        """Every tensor, read with one sequential pass into one buffer (tensors are views of it).

        Args:
            progress: optional ``progress(done_bytes, total_bytes)`` after each 64 MiB block.
        """
        data_len = self.size - self.data_start
        buf = torch.empty(data_len, dtype=torch.uint8)
        fd = self._open()
        try:
            self._pread_into(fd, memoryview(buf.numpy()), self.data_start, progress, 0, data_len)
        finally:
            os.close(fd)
        out = {}
        for t in self.tensors.values():
            chunk = buf[t.start - self.data_start : t.stop - self.data_start]
            aligned = (t.start - self.data_start) % t.itemsize == 0
            out[t.name] = (chunk.view(t.dtype) if aligned else chunk.clone().view(t.dtype)).reshape(t.shape)
        return out

    def read_range(self, name: str, start: int, stop: int, fd: int | None = None) -> torch.Tensor:
        """Elements ``[start, stop)`` of tensor ``name`` in row-major order, as a fresh 1-D tensor.

        Args:
            name: the tensor's key.
            start, stop: element range, ``0 <= start <= stop <= numel``.
            fd: an open descriptor of this file to reuse (see :meth:`open`); opened and closed
                here when omitted.

        Raises:
            CheckpointError: for an unknown key, a range outside the tensor, or a short read.
        """
        t = self.tensors.get(name)
        if t is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} is missing; the weight file is incomplete.")
        if not 0 <= start <= stop <= t.numel:
            raise CheckpointError(f"{self.path}: elements [{start}, {stop}) lie outside tensor {name!r} ({t.numel}).")
        out = torch.empty((stop - start) * t.itemsize, dtype=torch.uint8)
        own = fd is None
        fd = self._open() if own else fd
        try:
            self._pread_into(fd, memoryview(out.numpy()), t.start + start * t.itemsize, None, 0, 0)
        finally:
            if own:
                os.close(fd)
        return out.view(t.dtype)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror or e}).") from e

    def open(self) -> int:
        """An OS file descriptor for repeated :meth:`read_range` calls; close it with ``os.close``."""
        return self._open()


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e2:
            first_line = str(e2).strip().splitlines()[0] if str(e2).strip() else type(e2).__name__
            raise CheckpointError(
                f"{path}: refused or unreadable. Only plain tensor dicts are loaded (weights_only=True, no code is "
                f"executed); the file is corrupted or holds other Python objects, which are never unpickled here. "
                f"Re-save it as safetensors. ({first_line[:200]})"
            ) from e
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}.")
    return dict(obj)


def load_tensor_file(path: os.PathLike | str, progress: ProgressFn | None = None) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or pickle-based (``.bin``/``.pth``) tensor dict, never executing code.

    Pickle-based files are loaded with ``torch.load(weights_only=True, mmap=True)``, which refuses
    anything but tensors and plain containers.

    Args:
        path: the file.
        progress: optional ``progress(done_bytes, total_bytes)`` while a safetensors file is read.

    Raises:
        CheckpointError: for a missing, unreadable, refused or corrupted file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing; the checkpoint is incomplete, copy it again.")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied; make the file readable.")
    if path.suffix == ".safetensors":
        return SafetensorsFile(path).read_all(progress)
    return _load_pickle(path)


def safetensors_size(tensors: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]) -> int:
    """Exact size in bytes of the safetensors file that ``safetensors.torch.save_file`` writes.

    Computed from names, dtypes and shapes only (no data), so that a preview can report disk
    bytes before anything is written. The layout is safetensors' documented one: an 8-byte
    little-endian header length, a compact UTF-8 JSON header padded with spaces to a multiple of
    8, then the raw data ordered by safetensors' dtype order (descending) and name. A test pins
    this against files that safetensors actually writes.
    """
    order = sorted(tensors.items(), key=lambda kv: (-_ST_ORDER[_ST_DTYPE[kv[1][0]]], kv[0]))
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in order:
        n = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    hlen = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    hlen += (-hlen) % 8
    return 8 + hlen + offset
