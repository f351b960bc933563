"""Rankings kept on disk: the summary and layout passes over a weight file and the cache entries
they write (see :mod:`gradiend_core.ranking.store` for what each pass buys).

An entry is a directory in the user cache (:mod:`gradiend_core.util.cache`) named by the weight
file's identity and the source: ``summary.npz`` (per-bucket counts and mass, per-parameter tables),
``meta.json`` (:data:`LAYOUT_FORMAT`, dims) and, for a layout, ``order.npy`` and ``values.npy``.
Each entry is written into a temporary directory and renamed into place, so a crash leaves no
half-written entry, and two processes building the same entry at once both succeed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...checkpoint import CheckpointData
from ...util.cache import cache_budget, cache_dir, evict, touch
from ..importance import iter_part_importance, part_importance_at
from ..keys import N_BUCKETS, bucket_of, mass_weights
from ..ranking import Ranking
from ..tables import BucketSummary, ParamTables

__all__ = [
    "LAYOUT_BLOCK_DIMS",
    "LAYOUT_FORMAT",
    "ProgressFn",
    "attach_layout",
    "layout_fits",
    "partial_layout_dims",
    "summarised",
]


#: ``progress(fraction done in [0, 1], what is being done)``.
ProgressFn = Callable[[float, str], None]
#: Input dims per block of the layout pass (about 200 MB of temporaries).
LAYOUT_BLOCK_DIMS = 1 << 23
#: Version of the files written here; a change makes old cache entries be rebuilt.
LAYOUT_FORMAT = "gradiend_core.rank/1"


# ------------------------------------------------------------------------------------ passes
def _summary_pass(data: CheckpointData, part: str, progress: ProgressFn | None) -> BucketSummary:
    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    mass = np.zeros(N_BUCKETS, dtype=np.float64)
    n_zero = 0
    n = data.architecture.input_dim
    for start, v in iter_part_importance(data, part):
        b = bucket_of(v)
        counts += np.bincount(b, minlength=N_BUCKETS)
        mass += np.bincount(b, weights=mass_weights(v), minlength=N_BUCKETS)
        n_zero += int(np.count_nonzero(v == 0))
        if progress is not None:
            progress((start + v.size) / n, f"summarising {part} importance")
    return BucketSummary(n, counts, mass, n_zero)


def _npy(path: Path, dtype: np.dtype, n: int) -> int:
    """Create an ``.npy`` file of ``n`` items and return the byte offset of its data."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + n * np.dtype(dtype).itemsize)
    return offset


def _layout_pass(
    data: CheckpointData, part: str, summary: BucketSummary, dest: Path, progress: ProgressFn | None, dims: int
) -> ParamTables:
    """Write ``order.npy`` and ``values.npy`` into ``dest`` with the first ``dims`` dims of the
    layout (all, or the highest buckets down to a bucket boundary); return the per-parameter
    tables (of all dims)."""
    n = summary.n
    idx_dtype = np.int32 if n < 2**31 else np.int64
    o_off, v_off = _npy(dest / "order.npy", idx_dtype, dims), _npy(dest / "values.npy", np.float32, dims)
    desc = np.concatenate([[0], np.cumsum(summary.counts[::-1])])
    cursor = desc[::-1][1:].copy()  # next free place of each bucket
    lowest = _lowest_bucket(summary, dims)
    params = ParamTables.accumulator(data.param_map.local_offsets, np.flatnonzero(summary.counts)[::-1])
    o_fd = os.open(dest / "order.npy", os.O_WRONLY)
    v_fd = os.open(dest / "values.npy", os.O_WRONLY)
    try:
        # larger blocks than the summary pass: each block costs one write per bucket it touches
        # a prefix layout is built for GRADIENDs too large for a whole one: smaller blocks, fewer temporaries
        block = LAYOUT_BLOCK_DIMS if dims == n else LAYOUT_BLOCK_DIMS // 4
        for start, v in iter_part_importance(data, part, block):
            b = bucket_of(v)
            params.add(start, v, b)
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
                os.pwrite(o_fd, idx[lo:hi], o_off + at * idx.itemsize)  # contiguous slices: no copy
                os.pwrite(v_fd, vals[lo:hi], v_off + at * 4)
                cursor[bucket] = at + (hi - lo)
            if progress is not None:
                progress((start + v.size) / n, f"laying out {part} importance")
    finally:
        os.close(o_fd)
        os.close(v_fd)
    return params


# ------------------------------------------------------------------------------------ disk
def _save_summary(dest: Path, summary: BucketSummary, params: ParamTables | None, meta: dict) -> None:
    arrays = {
        "counts": summary.counts,
        "mass": summary.mass,
        "n": np.int64(summary.n),
        "n_zero": np.int64(summary.n_zero),
    }
    if params is not None:
        arrays.update(offsets=params.offsets, occupied=params.occupied, param_counts=params.counts)
        if params.mass is not None:
            arrays["param_mass"] = params.mass
    np.savez(dest / "summary.npz", **arrays)
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))


def _load_summary(entry: Path) -> tuple[BucketSummary, ParamTables | None, dict]:
    with np.load(entry / "summary.npz") as z:
        summary = BucketSummary(int(z["n"]), z["counts"], z["mass"], int(z["n_zero"]))
        params = None
        if "param_counts" in z:
            params = ParamTables(
                z["offsets"], z["occupied"], z["param_counts"], z["param_mass"] if "param_mass" in z else None
            )
    return summary, params, json.loads((entry / "meta.json").read_text())


def _publish(tmp: Path, entry: Path) -> None:
    """Move a finished temporary entry into place (another process may have been faster)."""
    try:
        os.rename(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # the same entry already exists: keep that one


def _entry(data: CheckpointData, source: str, kind: str) -> Path:
    return cache_dir("rankings", data.weights.identity()) / f"{source}.{kind}"


def _valid(entry: Path, data: CheckpointData) -> bool:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == LAYOUT_FORMAT and meta.get("n") == data.architecture.input_dim


def _stream_ranking(data: CheckpointData, source: str, summary: BucketSummary, params: ParamTables | None) -> Ranking:
    return Ranking.from_stream(
        summary,
        lambda: iter_part_importance(data, source),
        params,
        lambda idx: part_importance_at(data, source, idx),
        data.param_map.local_offsets,
    )


def summarised(data: CheckpointData, source: str, progress: ProgressFn | None) -> Ranking:
    entry = _entry(data, source, "summary")
    if not _valid(entry, data):
        summary, params = _summary_pass(data, source, progress), None
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
        meta = {
            "format": LAYOUT_FORMAT,
            "source": source,
            "n": summary.n,
            "weights": str(data.weights_file),
            "built": time.time(),
        }
        _save_summary(tmp, summary, params, meta)
        _publish(tmp, entry)
    summary, params, _ = _load_summary(entry)
    touch(entry)
    return _stream_ranking(data, source, summary, params)


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


def _layout_valid(entry: Path, data: CheckpointData, dims: int) -> bool:
    """A cached layout holding at least ``dims`` dims (entries before prefixes hold all)."""
    if not _valid(entry, data):
        return False
    meta = json.loads((entry / "meta.json").read_text())
    return int(meta.get("layout_dims", meta["n"])) >= dims


def attach_layout(
    data: CheckpointData, source: str, ranking: Ranking, progress: ProgressFn | None, dims: int | None = None
) -> None:
    """Build (or load) the layout of ``ranking``'s first ``dims`` dims (default: all) and attach it."""
    dims = ranking.size if dims is None else dims
    if dims <= 0:
        return
    entry = _entry(data, source, "layout")
    if not _layout_valid(entry, data, dims):
        shutil.rmtree(entry, ignore_errors=True)  # a shorter prefix: replaced by this one
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
        try:
            params = _layout_pass(data, source, ranking.summary, tmp, progress, dims)
            meta = {
                "format": LAYOUT_FORMAT,
                "source": source,
                "n": ranking.size,
                "layout_dims": dims,
                "weights": str(data.weights_file),
                "built": time.time(),
            }
            _save_summary(tmp, ranking.summary, params, meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, entry)
        evict(entry.parent.parent, keep=(entry, _entry(data, source, "summary")))
    _, params, _ = _load_summary(entry)
    touch(entry)
    ranking.params = params  # the layout pass counts importance per parameter too
    ranking.attach_layout(np.load(entry / "order.npy", mmap_mode="r"), np.load(entry / "values.npy", mmap_mode="r"))


def layout_fits(data: CheckpointData, sources: int, share: int) -> bool:
    """Whether ``sources`` layouts (8 bytes per dim each) fit in ``1/share`` of the cache budget;
    beyond, rankings stay summaries and a change streams the weights once."""
    return 8 * data.architecture.input_dim * sources <= cache_budget() // share
