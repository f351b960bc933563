"""A checkpoint's weight file, read in pieces: blocks of input dims, or the dims at given indices.

The GRADIEND weights are all indexed by input dim: encoder weight columns ``(latent_dim, n)``,
decoder weight rows ``(n, latent_dim)``, decoder bias entries ``(n,)``. :class:`WeightSource`
reads the slice of each that belongs to a block of dims, so a pass over a 10^9-dim checkpoint
holds one block at a time. Values are cast to the architecture's dtype as the reference's
``load_state_dict`` casts them, so importance computed from blocks equals importance computed from
the whole loaded model, bit for bit.

Safetensors files are read with positional reads (:class:`~.tensor_files.SafetensorsFile`);
pickle-based ``.bin`` files through ``torch.load(mmap=True, weights_only=True)``, whose tensors
page in on use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from .format import DEC_B, DEC_W, ENC_W, Architecture, expected_weight_shapes
from .tensor_files import ProgressFn, SafetensorsFile, load_tensor_file

__all__ = ["BLOCK_DIMS", "WeightBlock", "WeightSource", "file_identity", "file_stat_key", "part_tensors"]

#: Input dims per block of a streaming pass (bounds the temporaries to a few tens of MB).
BLOCK_DIMS = 1 << 22
#: Largest gap (elements) between wanted indices that is read through rather than skipped.
_GATHER_GAP = 4096


#: Bytes of each sampled block of :func:`file_identity` (besides the whole first MiB).
_SAMPLE_BLOCK = 1 << 16
#: Sampled blocks spread over the file.
_SAMPLE_BLOCKS = 16


def _digest_check(identity: str, digest: str) -> str:
    return hashlib.sha256(f"{identity}:{digest}".encode()).hexdigest()[:16]


def file_stat_key(path: Path) -> str:
    """What the file system says about a file that a user cannot set back: device, inode, size,
    modification and inode change time (ns). Rewriting bytes changes the change time even when the
    modification time is restored (``touch -d``, ``cp -p``, ``rsync -t``); replacing the file changes
    the inode."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_identity(path: Path) -> str:
    """A digest that changes whenever the file's bytes can have changed.

    It covers the resolved path, :func:`file_stat_key` (device, inode, size, modification and
    change time) and the bytes of the first MiB, of 16 blocks of 64 KiB spread evenly over the
    file and of its last 64 KiB (about 2 MiB read, in 18 positional reads). The change time alone
    catches every rewrite on a local file system; the sampled bytes catch rewrites on file systems
    whose times are coarse or not kept.
    """
    path = Path(path)
    h = hashlib.sha256(f"{path.resolve()}|{file_stat_key(path)}".encode())
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(os.pread(fd, 1 << 20, 0))
        if size > 1 << 20:
            for i in range(_SAMPLE_BLOCKS + 1):
                at = (1 << 20) + (size - (1 << 20) - _SAMPLE_BLOCK) * i // _SAMPLE_BLOCKS
                h.update(os.pread(fd, _SAMPLE_BLOCK, max(at, 1 << 20)))
    finally:
        os.close(fd)
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class WeightBlock:
    """The weights of input dims ``start .. stop``.

    Attributes:
        start, stop: the block's dims.
        enc_w: ``(latent_dim, stop - start)``; dec_w: ``(stop - start, latent_dim)``;
        dec_b: ``(stop - start,)`` or ``None`` without a decoder bias. In the architecture's dtype.
    """

    start: int
    stop: int
    enc_w: torch.Tensor | None
    dec_w: torch.Tensor | None
    dec_b: torch.Tensor | None


class WeightSource:
    """The weight file of a checkpoint, checked against its architecture, read on request.

    Args:
        path: ``model.safetensors`` or ``pytorch_model.bin``.
        architecture: what the file must hold (keys, shapes; floating point).

    Raises:
        CheckpointError: for an unreadable file, a missing tensor, a non-float tensor or a shape
            that disagrees with the architecture.
    """

    def __init__(self, path: Path, architecture: Architecture):
        self.path = Path(path)
        self.architecture = architecture
        self._st: SafetensorsFile | None = None
        self._pickled: dict[str, torch.Tensor] | None = None
        self._identity: str | None = None
        self._stat_key = file_stat_key(self.path) if self.path.exists() else ""
        if self.path.suffix == ".safetensors":
            if not self.path.is_file():
                raise CheckpointError(f"{self.path}: file is missing; the checkpoint is incomplete, copy it again.")
            self._st = SafetensorsFile(self.path)
            infos = {k: (t.dtype, t.shape) for k, t in self._st.tensors.items()}
        else:
            self._pickled = load_tensor_file(self.path)
            infos = {k: (t.dtype, tuple(t.shape)) for k, t in self._pickled.items()}
        self.stored_dtypes: dict[str, torch.dtype] = {}
        for key, shape in expected_weight_shapes(architecture).items():
            if key not in infos:
                raise CheckpointError(f"{self.path}: tensor {key!r} is missing; the weight file is incomplete.")
            dtype, got = infos[key]
            if not dtype.is_floating_point:
                raise CheckpointError(
                    f"{self.path}: tensor {key!r} has dtype {dtype}; GRADIEND weights are floating point."
                )
            if tuple(got) != shape:
                raise CheckpointError(
                    f"{self.path}: tensor {key!r} has shape {list(got)} but config.json's architecture requires "
                    f"{list(shape)}; weights and config do not belong together."
                )
            self.stored_dtypes[key] = dtype

    # ------------------------------------------------------------------------------ facts
    @property
    def size(self) -> int:
        """Bytes of the weight file."""
        return self.path.stat().st_size

    def keys(self) -> tuple[str, ...]:
        """The weight tensors' keys in the order of the file (the order a loaded state dict has)."""
        names = self._st.tensors if self._st is not None else self._pickled
        return tuple(k for k in names if k in self.stored_dtypes)

    def dtypes(self) -> dict[str, torch.dtype]:
        """The dtype of each weight tensor once loaded (the architecture's; ``encoder.1.*`` as stored)."""
        a = self.architecture.dtype
        return {k: (d if k.startswith("encoder.1.") else a) for k, d in self.stored_dtypes.items()}

    def sha256(self) -> str:
        """Hex sha256 of the weight file, computed once per file identity and kept in the user
        cache (a 10^9-dim checkpoint takes tens of seconds to hash; a second export takes none)."""
        from ..util.cache import usable_cache_dir

        root = usable_cache_dir("sha256")
        where = root / self.identity() if root is not None else None
        try:
            cached = where.read_text().split() if where is not None else []
            # "<digest> <check>": the check (sha256 of identity and digest) refuses a damaged or edited file
            if len(cached) == 2 and cached[1] == _digest_check(self.identity(), cached[0]):
                return cached[0]
        except OSError:
            pass
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        digest = h.hexdigest()
        self.check_unchanged()  # a digest of bytes that changed while hashing is no digest of the file
        if where is not None:
            try:
                tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
                tmp.write_text(f"{digest} {_digest_check(self.identity(), digest)}")
                os.replace(tmp, where)  # never truncated in place: a reader sees the old or the new text
            except OSError:
                pass
        return digest

    def identity(self) -> str:
        """:func:`file_identity` of the weight file (computed once per source; see
        :meth:`check_unchanged`)."""
        if self._identity is None:
            self._identity = file_identity(self.path)
        return self._identity

    def unchanged(self) -> bool:
        """Whether the weight file is still the one this source opened (same device, inode, size,
        modification and change time)."""
        try:
            return file_stat_key(self.path) == self._stat_key
        except OSError:
            return False

    def check_unchanged(self) -> None:
        """Raise unless the weight file is still the one this source opened.

        Raises:
            CheckpointError: when it was rewritten, replaced or removed since: what was read from it
                may mix old and new bytes, so the checkpoint must be opened again.
        """
        if not self.unchanged():
            raise CheckpointError(
                f"{self.path} changed while it was open (rewritten, replaced or removed); open the checkpoint again."
            )

    # ------------------------------------------------------------------------------ reads
    def _cast(self, key: str, t: torch.Tensor) -> torch.Tensor:
        return (
            t if key.startswith("encoder.1.") or t.dtype == self.architecture.dtype else t.to(self.architecture.dtype)
        )

    def _range(self, key: str, start: int, stop: int, fd: int | None) -> torch.Tensor:
        """Flat elements ``[start, stop)`` of ``key``, cast."""
        if self._st is not None:
            return self._cast(key, self._st.read_range(key, start, stop, fd))
        return self._cast(key, self._pickled[key].reshape(-1)[start:stop].clone())

    def read(self, key: str) -> torch.Tensor:
        """One whole tensor, cast (for the small ones: encoder bias, activation)."""
        shape = expected_weight_shapes(self.architecture)[key]
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        return self._range(key, 0, n, None).reshape(shape)

    def read_all(self, progress: ProgressFn | None = None) -> dict[str, torch.Tensor]:
        """Every tensor of the file, cast (the whole model in memory)."""
        if self._st is not None:
            state = self._st.read_all(progress)
        else:
            state = dict(self._pickled)
        return {k: self._cast(k, v) for k, v in state.items()}

    def block(
        self, start: int, stop: int, parts: tuple[str, ...] = (ENC_W, DEC_W, DEC_B), fd: int | None = None
    ) -> WeightBlock:
        """The weights of dims ``start .. stop`` (only the tensors named in ``parts``)."""
        a = self.architecture
        n, latent = a.input_dim, a.latent_dim
        enc = dec = bias = None
        if ENC_W in parts:
            rows = [self._range(ENC_W, r * n + start, r * n + stop, fd) for r in range(latent)]
            enc = torch.stack(rows) if latent > 1 else rows[0].reshape(1, -1)
        if DEC_W in parts:
            dec = self._range(DEC_W, start * latent, stop * latent, fd).reshape(stop - start, latent)
        if DEC_B in parts and a.bias_decoder:
            bias = self._range(DEC_B, start, stop, fd)
        return WeightBlock(start, stop, enc, dec, bias)

    def blocks(
        self, parts: tuple[str, ...] = (ENC_W, DEC_W, DEC_B), block_dims: int = BLOCK_DIMS
    ) -> Iterator[WeightBlock]:
        """Every block of the input space in order (one open file for the whole pass)."""
        fd = self._st.open() if self._st is not None else None
        try:
            for start in range(0, self.architecture.input_dim, block_dims):
                yield self.block(start, min(start + block_dims, self.architecture.input_dim), parts, fd)
        finally:
            if fd is not None:
                os.close(fd)

    def gather(self, idx: np.ndarray, parts: tuple[str, ...] = (ENC_W, DEC_W, DEC_B)) -> WeightBlock:
        """The weights of the dims ``idx`` (sorted unique int64), as one block in that order.

        Neighbouring indices are read in one go (gaps under a few thousand elements are read
        through), so a sparse set costs about one small read per run of close indices.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            a = self.architecture
            empty = torch.empty(0, dtype=a.dtype)
            return WeightBlock(
                0, 0, empty.reshape(a.latent_dim, 0), empty.reshape(0, a.latent_dim), empty if a.bias_decoder else None
            )
        # runs of close indices, each at most BLOCK_DIMS wide, so memory stays at one block
        breaks = np.flatnonzero((np.diff(idx) > _GATHER_GAP) | (np.diff(idx // BLOCK_DIMS) != 0)) + 1
        runs = np.split(idx, breaks)
        fd = self._st.open() if self._st is not None else None
        try:
            pieces = []
            for run in runs:
                lo, hi = int(run[0]), int(run[-1]) + 1
                b = self.block(lo, hi, parts, fd)
                local = torch.from_numpy(run - lo)
                pieces.append(
                    (
                        b.enc_w.index_select(1, local) if b.enc_w is not None else None,
                        b.dec_w.index_select(0, local) if b.dec_w is not None else None,
                        b.dec_b.index_select(0, local) if b.dec_b is not None else None,
                    )
                )
        finally:
            if fd is not None:
                os.close(fd)

        def cat(i: int, dim: int):
            got = [p[i] for p in pieces if p[i] is not None]
            return torch.cat(got, dim=dim) if got else None

        return WeightBlock(0, int(idx.size), cat(0, 1), cat(1, 0), cat(2, 0))


def part_tensors(part: str) -> tuple[str, ...]:
    """The weight tensors a part's importance reads."""
    return {
        "encoder-weight": (ENC_W,),
        "decoder-weight": (DEC_W,),
        "decoder-bias": (DEC_B,),
        "decoder-sum": (DEC_W, DEC_B),
    }[part]
