"""Rankings of a checkpoint's importance, built by streaming its weight file and kept on disk.

:func:`ranking_for` gives the :class:`~gradiend_core.ranking.Ranking` of one importance source of
a checkpoint. For a weight part of a checkpoint whose weights are not in memory it takes:

1. **summary pass** - the importance is computed block by block from the weight file (only the
   tensors the part needs) and counted per value bucket (and per parameter and bucket when the
   map has at most :data:`DENSE_PARAMS` parameters). Memory: one block. This alone answers every
   count, share and histogram; the dims of the bucket a cut falls in are found by one more pass.
2. **layout pass** (optional, e.g. in the background) - the importance is streamed again and every
   dim is written to its bucket's place in two files, ``order`` (local index) and ``values``, with
   positional writes; the finished ranking reads them through read-only memory maps, so a cut,
   a count above a threshold or the top of the ranking costs one bucket, not a pass.

Both are kept in the user cache (:mod:`gradiend_core.cache`), keyed by the weight file's identity
(path, size, modification time and its first MiB) and the source, and reused by later runs: a
checkpoint summarised before opens without reading its weights. Each entry is written into a
temporary directory and renamed into place, so a crash leaves no half-written entry, and two
processes building the same entry at once both succeed.

The pre-prune ``gradient-mean`` and checkpoints held in memory are ranked in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .cache import cache_dir, evict, touch
from .checkpoint import CheckpointData
from .importance import GRADIENT_MEAN, iter_part_importance, part_importance_at, source_importance, validate_source
from .ranking import N_BUCKETS, BucketSummary, ParamTables, Ranking, bucket_of, finite_or_zero

__all__ = [
    "DENSE_PARAMS",
    "LAYOUT_FORMAT",
    "ProgressFn",
    "clear_memory",
    "forget",
    "ranking_for",
    "resident_bytes",
    "wait_for_layouts",
]

#: ``progress(fraction done in [0, 1], what is being done)``.
ProgressFn = Callable[[float, str], None]
#: Per-parameter tables are counted in the summary pass when the map has at most this many
#: parameters (a dense table of 12 bytes per parameter and bucket: 256 MB at the limit).
DENSE_PARAMS = 341
#: Version of the files written here; a change makes old cache entries be rebuilt.
LAYOUT_FORMAT = "gradiend_core.rank/1"

_registry: Dict[Tuple[str, str], Ranking] = {}
_registry_lock = threading.Lock()
_key_locks: Dict[Tuple[str, str], threading.Lock] = {}
_layout_threads: Dict[Tuple[str, str], threading.Thread] = {}


def clear_memory() -> None:
    """Forget the rankings held in this process (the disk cache stays)."""
    with _registry_lock:
        _registry.clear()


def forget(identity: str) -> None:
    """Forget the rankings of one weight file (by :meth:`WeightSource.identity`) in this process."""
    with _registry_lock:
        for key in [k for k in _registry if k[0] == identity]:
            del _registry[key]


def resident_bytes(identity: Optional[str] = None) -> int:
    """Bytes held in memory by this process's rankings (of one weight file, or all)."""
    with _registry_lock:
        rankings = [r for k, r in _registry.items() if identity is None or k[0] == identity]
    return sum(r.resident_bytes() for r in rankings)


# ------------------------------------------------------------------------------------ passes
def _summary_pass(data: CheckpointData, part: str, progress: Optional[ProgressFn]) -> Tuple[BucketSummary, Optional[ParamTables]]:
    offsets = data.param_map.local_offsets
    p = len(offsets) - 1
    dense = p <= DENSE_PARAMS
    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    mass = np.zeros(N_BUCKETS, dtype=np.float64)
    pc = np.zeros((p, N_BUCKETS), dtype=np.int32) if dense else None
    pm = np.zeros((p, N_BUCKETS), dtype=np.float64) if dense else None
    n_zero = 0
    n = data.architecture.input_dim
    for start, v in iter_part_importance(data, part):
        b = bucket_of(v)
        w = finite_or_zero(v)
        counts += np.bincount(b, minlength=N_BUCKETS)
        mass += np.bincount(b, weights=w, minlength=N_BUCKETS)
        n_zero += int(np.count_nonzero(v == 0))
        if dense:
            _add_dense(pc, pm, offsets, start, b, w)
        if progress is not None:
            progress((start + v.size) / n, f"summarising {part} importance")
    summary = BucketSummary(n, counts, mass, n_zero)
    if not dense:
        return summary, None
    occupied = np.flatnonzero(counts)[::-1]
    return summary, ParamTables(offsets, occupied, pc[:, occupied].astype(np.int64), pm[:, occupied])


def _add_dense(pc: np.ndarray, pm: np.ndarray, offsets: np.ndarray, start: int, b: np.ndarray, w: np.ndarray) -> None:
    stop = start + b.size
    p0 = int(np.searchsorted(offsets, start, side="right")) - 1
    p1 = int(np.searchsorted(offsets, stop, side="left"))
    for p in range(p0, p1):
        lo, hi = max(int(offsets[p]), start) - start, min(int(offsets[p + 1]), stop) - start
        if hi > lo:
            pc[p] += np.bincount(b[lo:hi], minlength=N_BUCKETS).astype(np.int32)
            pm[p] += np.bincount(b[lo:hi], weights=w[lo:hi], minlength=N_BUCKETS)


def _npy(path: Path, dtype: np.dtype, n: int) -> int:
    """Create an ``.npy`` file of ``n`` items and return the byte offset of its data."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + n * np.dtype(dtype).itemsize)
    return offset


def _layout_pass(
    data: CheckpointData, part: str, summary: BucketSummary, dest: Path, progress: Optional[ProgressFn]
) -> ParamTables:
    """Write ``order.npy`` and ``values.npy`` into ``dest``; return the per-parameter tables."""
    n = summary.n
    idx_dtype = np.int32 if n < 2**31 else np.int64
    o_off, v_off = _npy(dest / "order.npy", idx_dtype, n), _npy(dest / "values.npy", np.float32, n)
    desc = np.concatenate([[0], np.cumsum(summary.counts[::-1])])
    cursor = desc[::-1][1:].copy()  # next free place of each bucket
    params = ParamTables.accumulator(data.param_map.local_offsets, np.flatnonzero(summary.counts)[::-1])
    o_fd = os.open(dest / "order.npy", os.O_WRONLY)
    v_fd = os.open(dest / "values.npy", os.O_WRONLY)
    try:
        for start, v in iter_part_importance(data, part):
            b = bucket_of(v)
            params.add(start, v, b)
            perm = np.argsort(~b, kind="stable")  # bucket descending, index ascending (radix)
            sb = b[perm]
            idx = (perm + start).astype(idx_dtype)
            vals = v[perm]
            cuts = np.flatnonzero(np.diff(sb)) + 1
            for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [sb.size]])):
                bucket = int(sb[lo])
                at = int(cursor[bucket])
                os.pwrite(o_fd, idx[lo:hi].tobytes(), o_off + at * idx.itemsize)
                os.pwrite(v_fd, vals[lo:hi].tobytes(), v_off + at * 4)
                cursor[bucket] = at + (hi - lo)
            if progress is not None:
                progress((start + v.size) / n, f"laying out {part} importance")
    finally:
        os.close(o_fd)
        os.close(v_fd)
    return params


# ------------------------------------------------------------------------------------ disk
def _save_summary(dest: Path, summary: BucketSummary, params: Optional[ParamTables], meta: dict) -> None:
    arrays = {"counts": summary.counts, "mass": summary.mass, "n": np.int64(summary.n), "n_zero": np.int64(summary.n_zero)}
    if params is not None:
        arrays.update(offsets=params.offsets, occupied=params.occupied, param_counts=params.counts, param_mass=params.mass)
    np.savez(dest / "summary.npz", **arrays)
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))


def _load_summary(entry: Path) -> Tuple[BucketSummary, Optional[ParamTables], dict]:
    with np.load(entry / "summary.npz") as z:
        summary = BucketSummary(int(z["n"]), z["counts"], z["mass"], int(z["n_zero"]))
        params = None
        if "param_counts" in z:
            params = ParamTables(z["offsets"], z["occupied"], z["param_counts"], z["param_mass"])
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


# ------------------------------------------------------------------------------------ public
def _in_memory(data: CheckpointData, source: str) -> Ranking:
    return Ranking(source_importance(data, source), data.param_map.local_offsets)


def _stream_ranking(data: CheckpointData, source: str, summary: BucketSummary, params: Optional[ParamTables]) -> Ranking:
    return Ranking.from_stream(
        summary,
        lambda: iter_part_importance(data, source),
        params,
        lambda idx: part_importance_at(data, source, idx),
    )


def _summarised(data: CheckpointData, source: str, progress: Optional[ProgressFn]) -> Ranking:
    entry = _entry(data, source, "summary")
    if not _valid(entry, data):
        summary, params = _summary_pass(data, source, progress)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
        meta = {"format": LAYOUT_FORMAT, "source": source, "n": summary.n, "weights": str(data.weights_file), "built": time.time()}
        _save_summary(tmp, summary, params, meta)
        _publish(tmp, entry)
    summary, params, _ = _load_summary(entry)
    touch(entry)
    return _stream_ranking(data, source, summary, params)


def _attach_layout(data: CheckpointData, source: str, ranking: Ranking, progress: Optional[ProgressFn]) -> None:
    entry = _entry(data, source, "layout")
    if not _valid(entry, data):
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
        try:
            params = _layout_pass(data, source, ranking.summary, tmp, progress)
            meta = {"format": LAYOUT_FORMAT, "source": source, "n": ranking.size, "weights": str(data.weights_file), "built": time.time()}
            _save_summary(tmp, ranking.summary, params, meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, entry)
        evict(entry.parent.parent, keep=(entry, _entry(data, source, "summary")))
    _, params, _ = _load_summary(entry)
    touch(entry)
    if ranking.params is None:
        ranking.params = params
    ranking.attach_layout(np.load(entry / "order.npy", mmap_mode="r"), np.load(entry / "values.npy", mmap_mode="r"))


def ranking_for(
    data: CheckpointData, source: str, *, layout: str = "now", progress: Optional[ProgressFn] = None
) -> Ranking:
    """The ranking of ``source``'s importance for a checkpoint, from the cache or built now.

    Args:
        data: the checkpoint (opened with :func:`~gradiend_core.checkpoint.open_checkpoint` to keep
            the weights out of memory).
        source: a weight part or ``gradient-mean``.
        layout: ``"now"`` - build (or load) the layout before returning; ``"background"`` - return
            after the summary and attach the layout when a background thread has built it;
            ``"never"`` - summary only (every dim-level question streams the weights once).
        progress: optional ``progress(fraction, text)`` while passes run.

    Returns:
        A :class:`~gradiend_core.ranking.Ranking`, shared by every caller in this process.

    Raises:
        ValueError: for an unknown source or layout; CheckpointError: for unreadable weights or a
        missing pre-prune record.
    """
    source = validate_source(source)
    if layout not in ("now", "background", "never"):
        raise ValueError(f"layout must be 'now', 'background' or 'never', got {layout!r}.")
    if data.weights is None:
        return _in_memory(data, source)  # a model built in memory: nothing to key it by
    in_memory = source == GRADIENT_MEAN or data.loaded
    key = (data.weights.identity(), source)
    with _registry_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        ranking = _registry.get(key)
        if ranking is None:
            ranking = _in_memory(data, source) if in_memory else _summarised(data, source, progress)
            with _registry_lock:
                _registry[key] = ranking
        if layout == "now" and not ranking.has_layout:
            _attach_layout(data, source, ranking, progress)
        elif layout == "background" and not ranking.has_layout and key not in _layout_threads:
            t = threading.Thread(target=_build_in_background, args=(key, data, source, ranking), daemon=True, name=f"layout-{source}")
            _layout_threads[key] = t
            t.start()
    return ranking


def _build_in_background(key: Tuple[str, str], data: CheckpointData, source: str, ranking: Ranking) -> None:
    try:
        _attach_layout(data, source, ranking, None)
    except Exception:  # the ranking keeps answering by streaming; a later call may try again
        pass
    finally:
        with _registry_lock:
            _layout_threads.pop(key, None)


def wait_for_layouts(timeout: Optional[float] = None) -> None:
    """Wait until the background layout builds started so far have finished (tests, benchmarks)."""
    with _registry_lock:
        threads = list(_layout_threads.values())
    for t in threads:
        t.join(timeout)
