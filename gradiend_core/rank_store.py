"""Rankings of a checkpoint's importance, built by streaming its weight file and kept on disk.

:func:`ranking_for` gives the :class:`~gradiend_core.ranking.Ranking` of one importance source of
a checkpoint. For a weight part of a checkpoint whose weights are not in memory it takes:

1. **summary pass** - the importance is computed block by block from the weight file (only the
   tensors the part needs) and counted per value bucket. Memory: one block. This alone answers
   every count, share and histogram; the dims of the bucket a cut falls in (and the kept index
   set, from which per-parameter counts follow) are found by one more pass.
2. **layout pass** (optional, e.g. in the background) - the importance is streamed again and every
   dim is written to its bucket's place in two files, ``order`` (local index) and ``values``, with
   positional writes; the finished ranking reads them through read-only memory maps, so a cut,
   a count above a threshold or the top of the ranking costs one bucket, not a pass. When the
   whole layout (8 bytes per dim) would take more than half the cache budget, a background build
   lays out only the highest buckets, up to a quarter of the dims and of that budget share: the
   cuts users make (topk of a few percent) stay one-bucket reads; cuts below stream a pass.

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
from .ranking import N_BUCKETS, BucketSummary, ParamTables, Ranking, bucket_of, mass_weights

__all__ = [
    "LAYOUT_FORMAT",
    "ProgressFn",
    "clear_memory",
    "discard",
    "forget",
    "prefetch",
    "ranking_for",
    "resident_bytes",
    "wait_for_layouts",
]

#: ``progress(fraction done in [0, 1], what is being done)``.
ProgressFn = Callable[[float, str], None]
#: Input dims per block of the layout pass (about 200 MB of temporaries).
LAYOUT_BLOCK_DIMS = 1 << 23
#: Version of the files written here; a change makes old cache entries be rebuilt.
LAYOUT_FORMAT = "gradiend_core.rank/1"

_registry: Dict[Tuple[str, str], Ranking] = {}
_registry_lock = threading.Lock()
_key_locks: Dict[Tuple[str, str], threading.Lock] = {}


def clear_memory() -> None:
    """Forget the rankings held in this process (the disk cache stays)."""
    with _registry_lock:
        _registry.clear()


def forget(identity: str) -> None:
    """Forget the rankings of one weight file (by :meth:`WeightSource.identity`) in this process."""
    with _registry_lock:
        for key in [k for k in _registry if k[0] == identity]:
            del _registry[key]


def discard(identity: str, timeout: float = 600.0) -> None:
    """Forget the rankings of one weight file in this process and delete its cache entries on disk
    (e.g. an uploaded checkpoint that is deleted: nothing derived from it stays behind). Queued
    background builds of it are dropped; one in progress is waited for (up to ``timeout`` s)."""
    with _registry_lock:
        for item in [q for q in _queue if q[0][0] == identity]:
            _queue.remove(item)
            _queued.discard(item[0])
        _idle.wait_for(lambda: not any(k[0] == identity for k in _queued), timeout)
    forget(identity)
    shutil.rmtree(cache_dir("rankings", identity), ignore_errors=True)


def resident_bytes(identity: Optional[str] = None) -> int:
    """Bytes held in memory by this process's rankings (of one weight file, or all)."""
    with _registry_lock:
        rankings = [r for k, r in _registry.items() if identity is None or k[0] == identity]
    return sum(r.resident_bytes() for r in rankings)


# ------------------------------------------------------------------------------------ passes
def _summary_pass(data: CheckpointData, part: str, progress: Optional[ProgressFn]) -> BucketSummary:
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
    data: CheckpointData, part: str, summary: BucketSummary, dest: Path, progress: Optional[ProgressFn], dims: int
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
def _save_summary(dest: Path, summary: BucketSummary, params: Optional[ParamTables], meta: dict) -> None:
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


def _load_summary(entry: Path) -> Tuple[BucketSummary, Optional[ParamTables], dict]:
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


# ------------------------------------------------------------------------------------ public
def _in_memory(data: CheckpointData, source: str) -> Ranking:
    return Ranking(source_importance(data, source), data.param_map.local_offsets)


def _stream_ranking(
    data: CheckpointData, source: str, summary: BucketSummary, params: Optional[ParamTables]
) -> Ranking:
    return Ranking.from_stream(
        summary,
        lambda: iter_part_importance(data, source),
        params,
        lambda idx: part_importance_at(data, source, idx),
        data.param_map.local_offsets,
    )


def _summarised(data: CheckpointData, source: str, progress: Optional[ProgressFn]) -> Ranking:
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


def _partial_layout_dims(summary: BucketSummary) -> int:
    """Dims of a background layout: all when 8 bytes per dim fit half the cache budget, else the
    highest buckets up to a quarter of the dims and of that share (0 when the top bucket alone is
    larger)."""
    from .cache import cache_budget

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


def _attach_layout(
    data: CheckpointData, source: str, ranking: Ranking, progress: Optional[ProgressFn], dims: Optional[int] = None
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


def ranking_for(
    data: CheckpointData, source: str, *, layout: str = "now", progress: Optional[ProgressFn] = None
) -> Ranking:
    """The ranking of ``source``'s importance for a checkpoint, from the cache or built now.

    Args:
        data: the checkpoint (opened with :func:`~gradiend_core.checkpoint.open_checkpoint` to keep
            the weights out of memory).
        source: a weight part or ``gradient-mean``.
        layout: ``"now"`` - build (or load) the layout before returning; ``"background"`` - return
            after the summary and attach the layout when a background thread has built it (only
            when the layout takes at most half the cache budget, 8 bytes per dim);
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
        elif layout == "background" and not ranking.has_layout and _partial_layout_dims(ranking.summary) > 0:
            _schedule(key, data, source)
    return ranking


def _layout_fits(data: CheckpointData, sources: int, share: int) -> bool:
    """Whether ``sources`` layouts (8 bytes per dim each) fit in ``1/share`` of the cache budget;
    beyond, rankings stay summaries and a change streams the weights once."""
    from .cache import cache_budget

    return 8 * data.architecture.input_dim * sources <= cache_budget() // share


_queue: "list[Tuple[Tuple[str, str], CheckpointData, Optional[str]]]" = []
_queued: set = set()
_worker: Optional[threading.Thread] = None
_idle = threading.Condition(_registry_lock)


def _schedule(key: Tuple[str, str], data: CheckpointData, source: Optional[str]) -> None:
    """Queue a background build (one worker thread: builds run one after another, so a server
    keeps a core for its sessions). ``source=None`` summarises the source first."""
    global _worker
    with _registry_lock:
        if key in _queued:
            return
        _queued.add(key)
        _queue.append((key, data, source))
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, daemon=True, name="rank-store")
            _worker.start()


def _work() -> None:
    while True:
        with _registry_lock:
            if not _queue:
                _idle.notify_all()
                return
            key, data, source = _queue.pop(0)
        try:
            ranking = ranking_for(data, key[1], layout="never")
            if not ranking.has_layout:
                _attach_layout(data, key[1], ranking, None, _partial_layout_dims(ranking.summary))
        except Exception:  # the ranking keeps answering by streaming; a later call may try again
            pass
        finally:
            with _registry_lock:
                _queued.discard(key)
                _idle.notify_all()  # for discard(), which waits for a build of its file to end


def prefetch(data: CheckpointData, sources, max_layout_bytes: Optional[int] = None) -> None:
    """Build the rankings (summary and layout) of ``sources`` in the background, so switching to
    one of them later costs a bucket, not a pass. Skipped when their layouts would take more than
    ``max_layout_bytes`` of cache (default: a quarter of the cache budget)."""
    if data.weights is None or data.loaded:
        return
    wanted = [validate_source(s) for s in sources if validate_source(s) != GRADIENT_MEAN]
    if max_layout_bytes is not None and 8 * data.architecture.input_dim * len(wanted) > max_layout_bytes:
        return
    if max_layout_bytes is None and not _layout_fits(data, len(wanted), 4):
        return
    for s in wanted:
        _schedule((data.weights.identity(), s), data, s)


def wait_for_layouts(timeout: Optional[float] = None) -> bool:
    """Wait until the queued background builds have finished (tests, benchmarks); False on timeout."""
    with _registry_lock:
        return _idle.wait_for(lambda: not _queue and not _queued, timeout)
