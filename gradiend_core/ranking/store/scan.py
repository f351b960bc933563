"""The open pass: one read of the weight file that summarises all four parts at once.

Each tensor of the weight file is read once, block by block (the encoder weight, the decoder weight
and the decoder bias; decoder-sum is computed from the last two), and every block feeds every part:

* per value bucket: dims and finite importance (:class:`~gradiend_core.ranking.tables.BucketSummary`);
* per fine bin (16 per bucket): dims (:class:`~gradiend_core.ranking.tables.FineCounts`), which
  bound any answer that would otherwise need the members of the bucket a cut falls in
  (:mod:`gradiend_core.ranking.bounds`);
* per (parameter, bucket): dims and finite importance
  (:class:`~gradiend_core.ranking.tables.ParamTables`): per-parameter kept counts (the mapping
  files' size on disk) and importance of any cut;
* every part's importance at the seeded sample of dims that rank correlation and scatter plots
  read (:mod:`gradiend_core.ranking.samples`).

Memory: two blocks of weights and four blocks of importance (about 0.2 GB at 4M dims per block),
plus tables of ``P x occupied buckets`` per part; nothing grows with ``input_dim`` but the sample.
The counting loops are compiled (:mod:`gradiend_core.ranking.kernels`) and release the GIL, so the
four parts of a block are counted on two threads while a third reads the next block.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ...checkpoint import DEC_B, DEC_W, ENC_W, CheckpointData
from ..importance import PARTS, part_importance
from ..keys import N_BUCKETS
from ..samples import recorded_sample
from ..tables import FINE_PER_BUCKET, BucketSummary, FineCounts, ParamTables

__all__ = ["PartScan", "ScanResult", "TableAccumulator", "scan_weights"]

#: ``progress(fraction done in [0, 1], what is being done)``.
ProgressFn = Callable[[float, str], None]
#: Buckets added on each side when a window grows (so it rarely grows twice).
_MARGIN = 64


@dataclass(frozen=True)
class PartScan:
    """What the open pass learnt about one part.

    Attributes:
        summary: per-bucket dims and mass, fine counts.
        params: per-(parameter, bucket) dims and mass.
        sample: float32 importance at :attr:`ScanResult.sample`.
    """

    summary: BucketSummary
    params: ParamTables
    sample: np.ndarray


@dataclass(frozen=True)
class ScanResult:
    """The open pass over a weight file: ``parts`` by name, and the sampled dims (sorted int64)."""

    parts: dict[str, PartScan]
    sample: np.ndarray

    @property
    def nbytes(self) -> int:
        total = self.sample.nbytes
        for p in self.parts.values():
            total += p.summary.counts.nbytes + p.summary.mass.nbytes + p.params.nbytes + p.sample.nbytes
            total += p.summary.fine.nbytes if p.summary.fine is not None else 0
        return int(total)


class TableAccumulator:
    """Counts blocks of one source's importance into growing windows of buckets and fine bins.

    Args:
        offsets: int64 ``(P + 1,)``, start of each parameter in the input space.
        kernel: ``(accumulate, key_window)``, the compiled loops or their numpy twins (tests).
    """

    def __init__(self, offsets: np.ndarray, kernel=None):
        if kernel is None:
            from ..kernels import accumulate, key_window

            kernel = (accumulate, key_window)
        self._accumulate, self._key_window = kernel
        self.offsets = np.asarray(offsets, dtype=np.int64)
        p = self.offsets.size - 1
        self.bucket_lo = 0
        self.counts = np.zeros((p, 0), dtype=np.int64)
        self.mass = np.zeros((p, 0), dtype=np.float64)
        self.fine_lo = 0
        self.fine = np.zeros(0, dtype=np.int64)
        self.nan_rows = np.zeros(p, dtype=np.int64)
        self.zeros = np.zeros(1, dtype=np.int64)
        self.n = 0

    def _grow(self, lo_key: int, hi_key: int) -> None:
        lo_b, hi_b = lo_key >> 16, hi_key >> 16
        width = self.counts.shape[1]
        if width and self.bucket_lo <= lo_b and hi_b < self.bucket_lo + width:
            return
        if width:
            lo_b, hi_b = min(lo_b, self.bucket_lo), max(hi_b, self.bucket_lo + width - 1)
        new_lo, new_hi = max(0, lo_b - _MARGIN), min(N_BUCKETS - 1, hi_b + _MARGIN)
        w = new_hi - new_lo + 1
        counts = np.zeros((self.counts.shape[0], w), dtype=np.int64)
        mass = np.zeros((self.counts.shape[0], w), dtype=np.float64)
        fine = np.zeros(w * FINE_PER_BUCKET, dtype=np.int64)
        if width:
            at = self.bucket_lo - new_lo
            counts[:, at : at + width] = self.counts
            mass[:, at : at + width] = self.mass
            fine[at * FINE_PER_BUCKET : (at + width) * FINE_PER_BUCKET] = self.fine
        self.bucket_lo, self.counts, self.mass, self.fine = new_lo, counts, mass, fine
        self.fine_lo = new_lo * FINE_PER_BUCKET

    def add(self, start: int, values: np.ndarray) -> None:
        """Count float32 ``values`` of dims ``start .. start + len(values)``."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        m = values.size
        if m == 0:
            return
        lo, hi = self._key_window(values)
        if lo <= hi:
            self._grow(lo, hi)
        stop = start + m
        p0 = int(np.searchsorted(self.offsets, start, side="right")) - 1
        p1 = int(np.searchsorted(self.offsets, stop, side="left"))
        bounds = np.clip(self.offsets[p0 : p1 + 1] - start, 0, m).astype(np.int64)
        rows = np.arange(p0, p0 + bounds.size - 1, dtype=np.int64)
        self._accumulate(
            values,
            bounds,
            rows,
            self.fine,
            self.fine_lo,
            self.counts,
            self.mass,
            self.bucket_lo,
            self.nan_rows,
            self.zeros,
        )
        self.n += m

    def finish(self) -> tuple[BucketSummary, ParamTables]:
        """The per-bucket summary (with fine counts) and the per-parameter tables."""
        counts = np.zeros(N_BUCKETS, dtype=np.int64)
        mass = np.zeros(N_BUCKETS, dtype=np.float64)
        w = self.counts.shape[1]
        counts[self.bucket_lo : self.bucket_lo + w] = self.counts.sum(axis=0)
        mass[self.bucket_lo : self.bucket_lo + w] = self.mass.sum(axis=0)
        counts[0] += int(self.nan_rows.sum())  # NaN: bucket 0, never in a window
        occupied = np.flatnonzero(counts)[::-1]
        table_counts = np.zeros((self.nan_rows.size, occupied.size), dtype=np.int64)
        table_mass = np.zeros((self.nan_rows.size, occupied.size), dtype=np.float64)
        inside = occupied >= self.bucket_lo
        inside &= occupied < self.bucket_lo + w
        if w:
            cols = occupied[inside] - self.bucket_lo
            table_counts[:, inside] = self.counts[:, cols]
            table_mass[:, inside] = self.mass[:, cols]
        if counts[0]:
            table_counts[:, occupied == 0] = self.nan_rows[:, None]
        summary = BucketSummary(self.n, counts, mass, int(self.zeros[0]), FineCounts(self.fine_lo, self.fine))
        return summary, ParamTables(self.offsets, occupied, table_counts, table_mass)


def _blocks(data: CheckpointData, block_dims: int | None, out: queue.Queue) -> None:
    """Read every block of the three tensors (the reader thread), then put ``None``."""
    from ...checkpoint.weights import BLOCK_DIMS

    try:
        for block in data.weights.blocks((ENC_W, DEC_W, DEC_B), block_dims or BLOCK_DIMS):
            out.put(block)
        out.put(None)
    except BaseException as e:  # handed to the counting thread, which raises it
        out.put(e)


def scan_weights(
    data: CheckpointData,
    progress: ProgressFn | None = None,
    block_dims: int | None = None,
    kernel=None,
) -> ScanResult:
    """One pass over ``data``'s weight file that summarises all four parts (module docstring).

    Args:
        data: a checkpoint opened with its weights in their file.
        progress: optional ``progress(fraction, text)``, called after every block.
        block_dims: input dims per block (default :data:`~gradiend_core.checkpoint.weights.BLOCK_DIMS`).
        kernel: the counting loops (tests pass the numpy twins).

    Returns:
        A :class:`ScanResult`.

    Raises:
        CheckpointError: for an unreadable weight file, or one that changed during the pass.
    """
    n = data.architecture.input_dim
    offsets = data.param_map.local_offsets
    accs = {p: TableAccumulator(offsets, kernel) for p in PARTS}
    sample = recorded_sample(n)
    sampled = {p: np.empty(sample.size, dtype=np.float32) for p in PARTS}
    blocks: queue.Queue = queue.Queue(maxsize=1)
    reader = threading.Thread(target=_blocks, args=(data, block_dims, blocks), daemon=True, name="open-pass-read")
    reader.start()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="open-pass") as pool:
        while True:
            block = blocks.get()
            if block is None:
                break
            if isinstance(block, BaseException):
                raise block
            m = block.stop - block.start
            imps = {}
            with torch.no_grad():
                for p in PARTS:
                    imps[p] = part_importance(block.enc_w, block.dec_w, block.dec_b, p, m).to(torch.float32).numpy()
            jobs = [pool.submit(accs[p].add, block.start, imps[p]) for p in PARTS]
            lo, hi = np.searchsorted(sample, [block.start, block.stop])
            if hi > lo:
                at = sample[lo:hi] - block.start
                for p in PARTS:
                    sampled[p][lo:hi] = imps[p][at]
            for job in jobs:
                job.result()
            if progress is not None:
                progress(block.stop / n, "reading the weights once for all four parts")
    reader.join()
    data.weights.check_unchanged()
    parts = {}
    for p in PARTS:
        summary, params = accs[p].finish()
        parts[p] = PartScan(summary, params, sampled[p])
    return ScanResult(parts, sample)
