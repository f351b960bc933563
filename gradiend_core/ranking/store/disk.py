"""Rankings kept on disk: the entries the open pass and the layout passes write, and how each is
checked before use (see :mod:`gradiend_core.ranking.store` for what each pass buys).

Entries live in the user cache (:mod:`gradiend_core.util.cache`) under
``rankings/<weight file identity>/``:

* ``scan-<param digest>/`` - the open pass of all four parts (:mod:`.scan`): ``scan.npz`` and
  ``meta.json``;
* ``<part>.layout/`` - one part's dims grouped by bucket: ``order.npy``, ``values.npy``,
  ``segments.npz`` (the CRC-32 of every bucket's slice of both files) and ``meta.json``.

**The key.** The identity (:func:`~gradiend_core.checkpoint.weights.file_identity`) covers the
weight file's resolved path, device, inode, size, modification and inode change time and sampled
bytes, so a rewritten file (even one whose modification time was set back) gets new entries. The
scan's name holds a digest of the ``param_map`` (names, shapes, selected counts), on which its
per-parameter tables depend; ``meta.json`` holds :data:`LAYOUT_FORMAT`, the identity and the digest.

**Checked before use.** ``meta.json`` must name this format, identity, digest and ``input_dim``;
``scan.npz`` must match the SHA-256 in ``meta.json`` and its tables must agree with each other
(every part counts ``input_dim`` dims, per-parameter rows sum to the parameters' sizes, fine bins
to their buckets) and with the weight file at a few sampled dims. A layout's bucket slices are
read with positional reads (never memory-mapped: a file truncated by another process then gives
a short read, not a SIGBUS) and each must match its CRC-32. A damaged entry is removed and rebuilt
with a one-line warning (:func:`~gradiend_core.util.cache.warn_once`); answers never come from it.

**Writing.** Each entry is written into a build directory (``.building-<host>-<pid>-*``, never
evicted while its builder lives, removed once it died) and renamed into place; nothing is ever
rewritten or truncated in place. An unusable cache directory (unwritable, full) means working
without it, said once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import CheckpointData
from ...util.cache import building_dir, cache_budget, evict, touch, usable_cache_dir, warn_once
from ..importance import PARTS, iter_part_importance, part_importance
from ..keys import N_BUCKETS, bucket_of
from ..ranking import Ranking
from ..tables import FINE_PER_BUCKET, BucketSummary, FineCounts, ParamTables
from .scan import PartScan, ScanResult, scan_weights

__all__ = [
    "LAYOUT_BLOCK_DIMS",
    "LAYOUT_FORMAT",
    "LayoutDamaged",
    "LayoutFile",
    "ProgressFn",
    "attach_layout",
    "layout_fits",
    "load_or_scan",
    "param_digest",
    "partial_layout_dims",
]


#: ``progress(fraction done in [0, 1], what is being done)``.
ProgressFn = Callable[[float, str], None]
#: Input dims per block of the layout pass (about 200 MB of temporaries).
LAYOUT_BLOCK_DIMS = 1 << 23
#: Version of the files written here; a change makes old cache entries be rebuilt.
LAYOUT_FORMAT = "gradiend_core.rank/2"
#: Sampled dims re-read from the weight file to check a scan entry against it.
_SPOT_CHECKS = 8


class LayoutDamaged(OSError):
    """A layout file is shorter than its entry says, or a slice does not match its CRC-32."""


# ------------------------------------------------------------------------------------ keys
def param_digest(data: CheckpointData) -> str:
    """Digest of what per-parameter tables depend on: each parameter's name, shape and selected count."""
    spec = [(e.name, list(e.shape), int(e.num_selected)) for e in data.param_map]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def _root(data: CheckpointData) -> Path | None:
    return usable_cache_dir("rankings", data.weights.identity())


def _damaged(entry: Path, reason: str) -> None:
    """Remove a damaged entry (readers holding its files keep them: removal unlinks) and say so once."""
    warn_once(f"damaged:{entry}", f"discarded a damaged cache entry {entry} ({reason}); rebuilding it.")
    shutil.rmtree(entry, ignore_errors=True)


def _publish(tmp: Path, entry: Path) -> None:
    """Move a finished build directory into place (another process may have been faster)."""
    try:
        os.rename(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # the same entry already exists: keep that one


def _meta(data: CheckpointData, **extra) -> dict:
    return {
        "format": LAYOUT_FORMAT,
        "identity": data.weights.identity(),
        "n": data.architecture.input_dim,
        "weights": str(data.weights_file),
        "built": time.time(),
        **extra,
    }


def _read_meta(entry: Path, data: CheckpointData, **expect) -> dict:
    """``meta.json`` of ``entry``, checked against this checkpoint; raises ``ValueError`` when it
    is missing, unreadable or names something else."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"meta.json unreadable: {e}") from None
    want = {"format": LAYOUT_FORMAT, "identity": data.weights.identity(), "n": data.architecture.input_dim, **expect}
    for k, v in want.items():
        if not isinstance(meta, dict) or meta.get(k) != v:
            raise ValueError(f"meta.json names another {k}")
    return meta


def _checked_bytes(path: Path, digest: object) -> bytes:
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != digest:
        raise ValueError(f"{path.name} does not match its checksum")
    return raw


# ------------------------------------------------------------------------------------ scan entry
def _scan_arrays(scan: ScanResult) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"sample": scan.sample}
    for p, s in scan.parts.items():
        fine = s.summary.fine
        arrays.update(
            {
                f"{p}/counts": s.summary.counts,
                f"{p}/mass": s.summary.mass,
                f"{p}/n_zero": np.int64(s.summary.n_zero),
                f"{p}/fine_lo": np.int64(fine.lo),
                f"{p}/fine": fine.counts,
                f"{p}/offsets": s.params.offsets,
                f"{p}/occupied": s.params.occupied,
                f"{p}/param_counts": s.params.counts,
                f"{p}/param_mass": s.params.mass,
                f"{p}/sample": s.sample,
            }
        )
    return arrays


def _scan_from_arrays(z, n: int) -> ScanResult:
    parts = {}
    for p in PARTS:
        fine = FineCounts(int(z[f"{p}/fine_lo"]), z[f"{p}/fine"])
        summary = BucketSummary(n, z[f"{p}/counts"], z[f"{p}/mass"], int(z[f"{p}/n_zero"]), fine)
        params = ParamTables(z[f"{p}/offsets"], z[f"{p}/occupied"], z[f"{p}/param_counts"], z[f"{p}/param_mass"])
        parts[p] = PartScan(summary, params, z[f"{p}/sample"])
    return ScanResult(parts, z["sample"])


def _check_scan(scan: ScanResult, data: CheckpointData) -> None:
    """Raise ``ValueError`` unless the tables agree with each other and with the weight file."""
    n = data.architecture.input_dim
    sizes = np.diff(data.param_map.local_offsets)
    for p, s in scan.parts.items():
        c = s.summary.counts
        if c.shape != (N_BUCKETS,) or int(c.sum()) != n or (c < 0).any():
            raise ValueError(f"{p}: bucket counts do not add up to input_dim")
        params = s.params
        if not np.array_equal(params.counts.sum(axis=1), sizes) or not np.array_equal(
            params.counts.sum(axis=0), c[params.occupied]
        ):
            raise ValueError(f"{p}: per-parameter tables disagree with the parameters or the buckets")
        if not np.array_equal(params.occupied, np.flatnonzero(c)[::-1]):
            raise ValueError(f"{p}: occupied buckets disagree with the counts")
        fine = s.summary.fine
        first, stop = fine.lo // FINE_PER_BUCKET, -(-(fine.lo + fine.counts.size) // FINE_PER_BUCKET)
        padded = np.zeros((stop - first) * FINE_PER_BUCKET, dtype=np.int64)
        padded[fine.lo - first * FINE_PER_BUCKET :][: fine.counts.size] = fine.counts
        expect = c.copy()
        expect[0] = 0  # NaN is not in the fine bins
        if fine.counts.size and (
            not np.array_equal(padded.reshape(-1, FINE_PER_BUCKET).sum(axis=1), expect[first:stop])
            or int(fine.counts.sum()) != int(expect.sum())
        ):
            raise ValueError(f"{p}: fine bins disagree with the buckets")
        if not np.allclose(params.mass.sum(axis=0), s.summary.mass[params.occupied], rtol=1e-9, atol=0):
            raise ValueError(f"{p}: per-parameter mass disagrees with the buckets")
    if scan.sample.size:  # a few sampled dims, read again from the weight file
        pick = scan.sample[np.linspace(0, scan.sample.size - 1, min(_SPOT_CHECKS, scan.sample.size)).astype(np.int64)]
        pick = np.unique(pick)
        block = data.weights.gather(pick)
        at = np.searchsorted(scan.sample, pick)
        for p, s in scan.parts.items():
            got = part_importance(block.enc_w, block.dec_w, block.dec_b, p, pick.size).to(torch.float32).numpy()
            want = s.sample[at]
            same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
            if not same.all():
                raise ValueError(f"{p}: sampled importance differs from the weight file")


def _load_scan(entry: Path, data: CheckpointData, digest: str) -> ScanResult | None:
    if not entry.is_dir():
        return None
    try:
        meta = _read_meta(entry, data, param_digest=digest)
        raw = _checked_bytes(entry / "scan.npz", meta.get("checksum"))
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            scan = _scan_from_arrays(z, data.architecture.input_dim)
        _check_scan(scan, data)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        _damaged(entry, str(e) or type(e).__name__)
        return None
    touch(entry)
    return scan


def _save_scan(root: Path, entry: Path, scan: ScanResult, data: CheckpointData, digest: str) -> None:
    tmp = None
    try:
        tmp = building_dir(root)
        buf = io.BytesIO()
        np.savez(buf, **_scan_arrays(scan))
        raw = buf.getvalue()
        (tmp / "scan.npz").write_bytes(raw)
        meta = _meta(data, param_digest=digest, checksum=hashlib.sha256(raw).hexdigest())
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        _publish(tmp, entry)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        warn_once("cache-write", f"could not write to the gradiend-core cache ({e}); working without it.")


def load_or_scan(data: CheckpointData, progress: ProgressFn | None = None) -> ScanResult:
    """The open pass of ``data`` (:func:`.scan.scan_weights`): from its checked cache entry, or run
    now and kept (when the cache is usable)."""
    root = _root(data)
    digest = param_digest(data)
    entry = root / f"scan-{digest}" if root is not None else None
    if entry is not None:
        scan = _load_scan(entry, data, digest)
        if scan is not None:
            return scan
    scan = scan_weights(data, progress)
    if entry is not None:
        _save_scan(root, entry, scan, data, digest)
        evict(root.parent, keep=(entry,))
    return scan


# ------------------------------------------------------------------------------------ layouts
class LayoutFile:
    """One ``.npy`` file of a layout, read by positional reads, every read checked.

    Slicing (``f[a:b]``) reads the bucket slices the range touches and checks each against its
    CRC-32; a short read or a mismatch raises :class:`LayoutDamaged` (and calls ``on_damage``).
    Never memory-mapped: another process truncating the file cannot kill this one.

    Args:
        path: the ``.npy`` file; offset: byte offset of its data; dtype; n: items.
        seg_starts: int64 ``(s + 1,)``, item positions where bucket slices start (and the end).
        crcs: uint32 ``(s,)``, the CRC-32 of each slice's bytes.
        on_damage: called once with a reason before :class:`LayoutDamaged` is raised.
    """

    def __init__(self, path: Path, offset: int, dtype, n: int, seg_starts: np.ndarray, crcs: np.ndarray, on_damage):
        self.path, self.offset, self.dtype, self.n = path, offset, np.dtype(dtype), int(n)
        self.seg_starts, self.crcs, self.on_damage = seg_starts, crcs, on_damage
        self.shape = (self.n,)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item) -> np.ndarray:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("a layout file is read by contiguous slices")
        a, b, _ = item.indices(self.n)
        if b <= a:
            return np.empty(0, dtype=self.dtype)
        i = int(np.searchsorted(self.seg_starts, a, side="right")) - 1
        j = int(np.searchsorted(self.seg_starts, b, side="left"))
        lo, hi = int(self.seg_starts[i]), int(self.seg_starts[j])
        size = self.dtype.itemsize
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                raw = os.pread(fd, (hi - lo) * size, self.offset + lo * size)
            finally:
                os.close(fd)
        except OSError as e:
            self._fail(f"{self.path.name} unreadable: {e}")
        if len(raw) != (hi - lo) * size:
            self._fail(f"{self.path.name} is shorter than its entry says")
        view = memoryview(raw)
        for s in range(i, j):
            x, y = (int(self.seg_starts[s]) - lo) * size, (int(self.seg_starts[s + 1]) - lo) * size
            if zlib.crc32(view[x:y]) != int(self.crcs[s]):
                self._fail(f"{self.path.name} does not match its checksum")
        return np.frombuffer(raw, dtype=self.dtype)[a - lo : b - lo]

    def _fail(self, reason: str) -> None:
        self.on_damage(reason)
        raise LayoutDamaged(reason)


def _npy(path: Path, dtype: np.dtype, n: int) -> int:
    """Create an ``.npy`` file of ``n`` items and return the byte offset of its data."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + n * np.dtype(dtype).itemsize)  # a new file in a build directory: sized once
    return offset


def _layout_pass(
    data: CheckpointData, part: str, summary: BucketSummary, dest: Path, progress: ProgressFn | None, dims: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write ``order.npy`` and ``values.npy`` into ``dest`` with the first ``dims`` dims of the
    layout (all, or the highest buckets down to a bucket boundary).

    Returns:
        ``(seg_starts, order_crcs, value_crcs)`` of the occupied buckets in the layout.
    """
    n = summary.n
    idx_dtype = np.int32 if n < 2**31 else np.int64
    o_off, v_off = _npy(dest / "order.npy", idx_dtype, dims), _npy(dest / "values.npy", np.float32, dims)
    desc = np.concatenate([[0], np.cumsum(summary.counts[::-1])])
    cursor = desc[::-1][1:].copy()  # next free place of each bucket
    lowest = _lowest_bucket(summary, dims)
    o_crc = np.zeros(N_BUCKETS, dtype=np.int64)
    v_crc = np.zeros(N_BUCKETS, dtype=np.int64)
    o_fd = os.open(dest / "order.npy", os.O_WRONLY)
    v_fd = os.open(dest / "values.npy", os.O_WRONLY)
    try:
        # a prefix layout is built for GRADIENDs too large for a whole one: smaller blocks, fewer temporaries
        block = LAYOUT_BLOCK_DIMS if dims == n else LAYOUT_BLOCK_DIMS // 4
        for start, v in iter_part_importance(data, part, block):
            b = bucket_of(v)
            perm = np.argsort(~b, kind="stable")  # bucket descending, index ascending (radix)
            sb = b[perm]
            idx = (perm + start).astype(idx_dtype)
            vals = v[perm]
            cuts = np.flatnonzero(np.diff(sb)) + 1
            for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [sb.size]])):
                bucket = int(sb[lo])
                if bucket < lowest:  # descending: the rest of the block is below the prefix
                    break
                at = int(cursor[bucket])
                # pieces of a bucket arrive in index order, so each bucket's CRC-32 is continued
                o_piece, v_piece = idx[lo:hi], vals[lo:hi]
                os.pwrite(o_fd, o_piece, o_off + at * idx.itemsize)  # contiguous slices: no copy
                os.pwrite(v_fd, v_piece, v_off + at * 4)
                o_crc[bucket] = zlib.crc32(o_piece, int(o_crc[bucket]))
                v_crc[bucket] = zlib.crc32(v_piece, int(v_crc[bucket]))
                cursor[bucket] = at + (hi - lo)
            if progress is not None:
                progress((start + v.size) / n, f"laying out {part} importance")
    finally:
        os.close(o_fd)
        os.close(v_fd)
    data.weights.check_unchanged()
    buckets = np.flatnonzero(summary.counts)[::-1]
    buckets = buckets[buckets >= lowest]
    starts = desc[::-1][1:][buckets]
    seg_starts = np.concatenate([starts, [dims]]).astype(np.int64)
    return seg_starts, o_crc[buckets].astype(np.uint32), v_crc[buckets].astype(np.uint32)


def _lowest_bucket(summary: BucketSummary, dims: int) -> int:
    """The lowest bucket whose dims are within the first ``dims`` of the layout."""
    ends = np.cumsum(summary.counts[::-1])  # layout position after bucket N-1-i
    i = int(np.searchsorted(ends, dims, side="right")) - 1  # the last bucket ending at or before dims
    return N_BUCKETS - 1 - i if i >= 0 else N_BUCKETS


def partial_layout_dims(summary: BucketSummary) -> int:
    """Dims of a background layout: all when 8 bytes per dim fit half the cache budget, else the
    highest buckets up to a quarter of the dims and of that share (0 when the top bucket alone is
    larger)."""
    share = cache_budget() // 2
    if 8 * summary.n <= share:
        return summary.n
    cap = min(share // 8, summary.n // 4)
    ends = np.cumsum(summary.counts[::-1])
    i = int(np.searchsorted(ends, cap, side="right")) - 1
    return int(ends[i]) if i >= 0 else 0


def _open_layout(entry: Path, data: CheckpointData, dims: int) -> tuple[LayoutFile, LayoutFile] | None:
    """The checked layout files of ``entry`` when it holds at least ``dims`` dims (else ``None``)."""
    if not entry.is_dir():
        return None
    try:
        meta = _read_meta(entry, data)
        if int(meta.get("layout_dims", -1)) < dims:
            return None  # a shorter prefix: replaced by the caller
        raw = _checked_bytes(entry / "segments.npz", meta.get("checksum"))
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            seg_starts, o_crc, v_crc = z["seg_starts"], z["order_crc"], z["values_crc"]
        files = []
        for name in ("order.npy", "values.npy"):
            with open(entry / name, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)  # the header only
                offset = f.tell()
                if os.fstat(f.fileno()).st_size != offset + int(np.prod(shape)) * np.dtype(dtype).itemsize:
                    raise ValueError(f"{name} has another size than its header says")
            if shape != (int(meta["layout_dims"]),) or int(seg_starts[-1]) != shape[0]:
                raise ValueError(f"{name} has another length than its entry says")
            files.append((entry / name, offset, dtype, shape[0]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        _damaged(entry, str(e) or type(e).__name__)
        return None
    touch(entry)

    def on_damage(reason: str) -> None:
        _damaged(entry, reason)

    (op, oo, od, on), (vp, vo, vd, vn) = files
    return (
        LayoutFile(op, oo, od, on, seg_starts, o_crc, on_damage),
        LayoutFile(vp, vo, vd, vn, seg_starts, v_crc, on_damage),
    )


def attach_layout(
    data: CheckpointData, source: str, ranking: Ranking, progress: ProgressFn | None, dims: int | None = None
) -> None:
    """Build (or load) the layout of ``ranking``'s first ``dims`` dims (default: all) and attach it.
    Without a usable cache the ranking keeps answering by streaming."""
    dims = ranking.size if dims is None else dims
    root = _root(data)
    if dims <= 0 or root is None:
        return
    entry = root / f"{source}.layout"
    files = _open_layout(entry, data, dims)
    if files is None:
        tmp = None
        try:
            tmp = building_dir(root)
            seg_starts, o_crc, v_crc = _layout_pass(data, source, ranking.summary, tmp, progress, dims)
            buf = io.BytesIO()
            np.savez(buf, seg_starts=seg_starts, order_crc=o_crc, values_crc=v_crc)
            (tmp / "segments.npz").write_bytes(buf.getvalue())
            meta = _meta(data, source=source, layout_dims=dims, checksum=hashlib.sha256(buf.getvalue()).hexdigest())
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        except OSError as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            warn_once("cache-write", f"could not write to the gradiend-core cache ({e}); working without it.")
            return
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(entry, ignore_errors=True)  # a shorter prefix, or damaged: replaced by this one
        _publish(tmp, entry)
        evict(root.parent, keep=(entry, *root.glob("scan-*")))
        files = _open_layout(entry, data, dims)
        if files is None:
            return
    ranking.attach_layout(*files)


def layout_fits(data: CheckpointData, sources: int, share: int) -> bool:
    """Whether ``sources`` layouts (8 bytes per dim each) fit in ``1/share`` of the cache budget;
    beyond, rankings stay summaries and a change streams the weights once."""
    return 8 * data.architecture.input_dim * sources <= cache_budget() // share
