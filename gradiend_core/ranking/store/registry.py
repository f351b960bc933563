"""Rankings of a checkpoint's importance, built by streaming its weight file and kept on disk.

:func:`ranking_for` gives the :class:`~gradiend_core.ranking.ranking.Ranking` of one importance source of
a checkpoint. For a weight part of a checkpoint whose weights are not in memory it takes:

1. **the open pass** (:mod:`.scan`) - each tensor of the weight file is read once, block by block,
   and every block feeds all four parts: per-bucket and per-fine-bin counts, per-bucket mass,
   per-(parameter, bucket) tables and the sampled values of rank statistics. The first request of
   any part runs it and registers all four rankings, so a change of part, topk, threshold or the
   views that compare parts need no other pass for counts, shares, per-parameter counts and
   histograms; where a cut's bucket would need its members, bounds answer at once
   (:mod:`gradiend_core.ranking.bounds`). Progress is reported through ``progress``.
2. **layout pass** (optional, e.g. in the background) - one part's importance is streamed again
   and every dim is written to its bucket's place in two files, ``order`` (local index) and
   ``values``, with positional writes; the ranking reads them with checked positional reads, so a
   cut, a count above a threshold or the top of the ranking costs one bucket, not a pass. When the
   whole layout (8 bytes per dim) would take more than half the cache budget, a background build
   lays out only the highest buckets, up to a quarter of the dims and of that budget share.

Both are kept in the user cache, keyed and checked as :mod:`.disk` says, and reused by later runs:
a checkpoint summarised before opens without reading its weights.

The pre-prune ``gradient-mean`` and checkpoints held in memory are ranked in memory.
"""

from __future__ import annotations

import shutil
import threading
from functools import partial

import torch

from ...checkpoint import CheckpointData
from ...util.cache import usable_cache_dir
from ..importance import (
    GRADIENT_MEAN,
    PARTS,
    iter_part_importance,
    part_importance_at,
    source_importance,
    validate_source,
)
from ..ranking import Ranking
from ..samples import SampledValues
from .disk import ProgressFn, attach_layout, layout_fits, load_or_scan, partial_layout_dims
from .prefetch import cancel, schedule

__all__ = ["clear_memory", "discard", "forget", "open_rankings", "prefetch", "ranking_for", "resident_bytes"]

_registry: dict[tuple[str, str], Ranking] = {}
_registry_lock = threading.Lock()
_key_locks: dict[tuple[str, str], threading.Lock] = {}
_file_locks: dict[str, threading.Lock] = {}


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
    cancel(identity, timeout)
    forget(identity)
    root = usable_cache_dir("rankings")
    if root is not None:
        shutil.rmtree(root / identity, ignore_errors=True)


def resident_bytes(identity: str | None = None) -> int:
    """Bytes held in memory by this process's rankings (of one weight file, or all)."""
    with _registry_lock:
        rankings = [r for k, r in _registry.items() if identity is None or k[0] == identity]
    return sum(r.resident_bytes() for r in rankings)


# ------------------------------------------------------------------------------------ public
def _in_memory(data: CheckpointData, source: str) -> Ranking:
    return Ranking(source_importance(data, source), data.param_map.local_offsets)


def _joint_blocks(data: CheckpointData, parts):
    """``(start, {part: float32 importance})`` over the input space: each tensor read once per block."""
    from ...checkpoint import DEC_B, DEC_W, ENC_W
    from ..importance import part_importance

    for block in data.weights.blocks((ENC_W, DEC_W, DEC_B)):
        m = block.stop - block.start
        yield (
            block.start,
            {p: part_importance(block.enc_w, block.dec_w, block.dec_b, p, m).to(torch.float32).numpy() for p in parts},
        )
    data.weights.check_unchanged()


def open_rankings(data: CheckpointData, progress: ProgressFn | None = None) -> dict[str, Ranking]:
    """The rankings of all four parts of a checkpoint whose weights are in their file, from one
    open pass (:mod:`.scan`; from the cache when summarised before), shared by every caller.

    Args:
        data: opened with :func:`~gradiend_core.checkpoint.open_checkpoint`.
        progress: optional ``progress(fraction, text)`` while the pass runs (not called when the
            cache answers).

    Returns:
        ``{part: Ranking}`` for the four parts. Counts, shares, per-parameter counts and histograms
        of any cut are answered from their summaries; answers that need a boundary bucket's members
        are bounded at once (``RankedDims.*_bounds``) and exact with a layout or one more pass.

    Raises:
        CheckpointError: for unreadable weights, or a weight file that changed since it was opened.
    """
    if data.weights is None or data.loaded:  # weights in memory: ranked in memory, part by part
        return {p: ranking_for(data, p) for p in PARTS}
    data.weights.check_unchanged()
    identity = data.weights.identity()
    with _registry_lock:
        lock = _file_locks.setdefault(identity, threading.Lock())
    with lock:
        with _registry_lock:
            have = {p: _registry.get((identity, p)) for p in PARTS}
        if all(r is not None for r in have.values()):
            return have  # type: ignore[return-value]
        scan = load_or_scan(data, progress)
        out = {}
        joint = partial(_joint_blocks, data)
        for p, part in scan.parts.items():
            out[p] = Ranking.from_stream(
                part.summary,
                partial(iter_part_importance, data, p),
                part.params,
                SampledValues(scan.sample, part.sample, partial(part_importance_at, data, p)),
                data.param_map.local_offsets,
            )
            out[p].joint = (p, joint)  # one pass for several parts (ranked_dims.top_many)
        with _registry_lock:
            for p, r in out.items():
                out[p] = _registry.setdefault((identity, p), r)
        return out


def ranking_for(
    data: CheckpointData, source: str, *, layout: str = "now", progress: ProgressFn | None = None
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
        A :class:`~gradiend_core.ranking.ranking.Ranking`, shared by every caller in this process.

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
    if not in_memory:
        data.weights.check_unchanged()  # a rewritten file is never answered from what it held before
    key = (data.weights.identity(), source)
    with _registry_lock:
        ranking = _registry.get(key)
    if ranking is None and not in_memory:
        ranking = open_rankings(data, progress)[source]
    with _registry_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        ranking = _registry.get(key)
        if ranking is None:
            ranking = _in_memory(data, source)
            with _registry_lock:
                _registry[key] = ranking
        if layout == "now" and not ranking.has_layout:
            attach_layout(data, source, ranking, progress)
        elif layout == "background" and not ranking.has_layout and partial_layout_dims(ranking.summary) > 0:
            schedule(key, partial(_lay_out, data, source))
    return ranking


def _lay_out(data: CheckpointData, source: str) -> None:
    """The background build of ``source``: its ranking (summarised first when new), then as much of
    its layout as the cache budget allows."""
    ranking = ranking_for(data, source, layout="never")
    if not ranking.has_layout:
        attach_layout(data, source, ranking, None, partial_layout_dims(ranking.summary))


def prefetch(data: CheckpointData, sources, max_layout_bytes: int | None = None) -> None:
    """Build the rankings (summary and layout) of ``sources`` in the background, so switching to
    one of them later costs a bucket, not a pass. Skipped when their layouts would take more than
    ``max_layout_bytes`` of cache (default: a quarter of the cache budget)."""
    if data.weights is None or data.loaded:
        return
    wanted = [validate_source(s) for s in sources if validate_source(s) != GRADIENT_MEAN]
    if max_layout_bytes is not None and 8 * data.architecture.input_dim * len(wanted) > max_layout_bytes:
        return
    if max_layout_bytes is None and not layout_fits(data, len(wanted), 4):
        return
    for s in wanted:
        schedule((data.weights.identity(), s), partial(_lay_out, data, s))
