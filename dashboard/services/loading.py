"""Where the dashboard gets its model from, and the caches in front of the core.

Open checkpoints (weights left in their files) and their rankings are shared by every session
of the server and bounded in bytes (:class:`CheckpointStore`); keys hold the path and the
newest modification time, so a re-saved checkpoint is picked up. The training records are cached
with ``st.cache_resource``. Cached objects are never mutated: pruning and export build new tensors.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import streamlit as st

from dashboard.services.memory import return_large_blocks
from gradiend_core.checkpoint import CheckpointData, open_checkpoint, resolve_checkpoint_dir
from gradiend_core.checkpoint.files import PRE_PRUNE_FILE
from gradiend_core.checkpoint.records import (
    PrePruneRecord,
    ValidationRecord,
    load_pre_prune_record,
    load_validation_record,
)
from gradiend_core.ranking import store
from gradiend_core.ranking.importance import PARTS
from gradiend_core.ranking.ranking import Ranking
from gradiend_core.util.units import format_count, parse_bytes

__all__ = [
    "CheckpointStore",
    "SAMPLES_DIR",
    "STORE",
    "checkpoint_key",
    "forget_checkpoint",
    "has_pre_prune_record",
    "load_checkpoint",
    "load_pre_prune",
    "load_ranking",
    "load_validation",
    "path_from_argv",
    "sample_models",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

return_large_blocks()  # the server is long-running: large freed arrays go back to the system
SAMPLES_DIR = REPO_ROOT / "sample_models"
APP_PATH = (REPO_ROOT / "dashboard" / "app.py").resolve()


def sample_models() -> list[tuple[str, Path]]:
    """Bundled sample checkpoints as ``(name, directory)``, sorted by name."""
    out = []
    if SAMPLES_DIR.is_dir():
        for d in sorted(SAMPLES_DIR.iterdir()):
            if (d / "config.json").is_file() or (d / "model" / "config.json").is_file():
                out.append((d.name, d))
    return out


def path_from_argv(argv: list[str] | None = None) -> str | None:
    """The checkpoint given as ``streamlit run dashboard/app.py -- PATH`` (``None`` if absent).

    ``streamlit run`` sets ``sys.argv`` to the script path followed by the arguments after ``--``;
    any other ``sys.argv`` (a test runner's, for instance) is not ours to read.
    """
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).resolve() != APP_PATH:
        return None
    args = [a for a in argv[1:] if not a.startswith("-")]
    return args[0] if args else None


def checkpoint_key(path: str) -> tuple[str, float]:
    """Cache key of a checkpoint: resolved directory and the newest modification time in it."""
    d = resolve_checkpoint_dir(path)
    mtime = max((f.stat().st_mtime for f in d.iterdir() if f.is_file()), default=0.0)
    return str(d.resolve()), mtime


def memory_budget() -> int:
    """Bytes the server may hold for open checkpoints and their rankings, from
    ``GRADIEND_DASHBOARD_MEMORY_BYTES`` (e.g. ``2G``; default 2 GiB)."""
    raw = os.environ.get("GRADIEND_DASHBOARD_MEMORY_BYTES")
    return parse_bytes(raw) if raw else 2 * 1024**3


def resident_bytes(data: CheckpointData) -> int:
    """Bytes an open checkpoint holds in memory: its parameter map, loaded weights if any, and
    the rankings of its weight file."""
    total = sum(e.positions.nbytes for e in data.param_map if e.positions is not None)
    if data.loaded:
        total += sum(t.numel() * t.element_size() for t in data.state_dict.values())
    if data.weights is not None:
        total += store.resident_bytes(data.weights.identity())
    return total


class CheckpointStore:
    """Process-wide cache of open checkpoints, shared by every session, bounded in bytes.

    Checkpoints are opened without loading their weights (see :func:`open_checkpoint`); what they
    hold in memory (parameter map, rankings, weights loaded by views that need them) is counted,
    and the least recently used ones are closed when the total passes :func:`memory_budget`
    (the one in use is kept). Why not ``st.cache_resource``: its limit counts entries, not bytes.
    A lock per checkpoint makes concurrent sessions wait for one open instead of opening twice.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self._items: OrderedDict[tuple[str, float], CheckpointData] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, float], threading.Lock] = {}

    def get(self, key: tuple[str, float]) -> CheckpointData:
        """The checkpoint for ``key`` (see :func:`checkpoint_key`), opened on first use."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            data = open_checkpoint(key[0])
            with self._lock:
                self._items[key] = data
            self.trim(keep=key)
            return data

    def trim(self, keep: tuple[str, float] | None = None) -> None:
        """Close least recently used checkpoints until the rest fit the byte budget."""
        budget = self.budget if self.budget is not None else memory_budget()
        with self._lock:
            items = list(self._items.items())
        sizes = {k: resident_bytes(d) for k, d in items}
        total = sum(sizes.values())
        for k, d in items:
            if total <= budget:
                break
            if k == keep:
                continue
            with self._lock:
                self._items.pop(k, None)
                self._key_locks.pop(k, None)
            if d.weights is not None and not any(
                o.weights is not None and o.weights.identity() == d.weights.identity() for o in self._items.values()
            ):
                store.forget(d.weights.identity())
            total -= sizes[k]

    def discard(self, directory: Path) -> list[tuple[tuple[str, float], CheckpointData]]:
        """Close the checkpoints at or below ``directory``; returns them with their keys."""
        root = Path(directory).resolve()
        with self._lock:
            gone = [(k, d) for k, d in self._items.items() if Path(k[0]) == root or root in Path(k[0]).parents]
            for k, _ in gone:
                del self._items[k]
                self._key_locks.pop(k, None)
        return gone


STORE = CheckpointStore()


def load_checkpoint(path: str) -> CheckpointData:
    """The checkpoint at ``path`` (weights left in their file), shared across sessions until its
    files change."""
    return STORE.get(checkpoint_key(path))


def load_ranking(path: str, source: str) -> Ranking:
    """The ranking of ``source`` for the checkpoint at ``path``, shared by every session.

    A first summary of a large weight file shows a progress bar; the layout that makes later
    changes cheap is built in the background (until then a change streams the weights once).
    ``source`` is one of the four weight parts or ``"gradient-mean"`` (the pre-prune record's
    importance; raises ``CheckpointError`` when the checkpoint has none, see
    :func:`has_pre_prune_record`).
    """
    data = load_checkpoint(path)
    bar = st.empty()

    def report(fraction: float, what: str) -> None:
        bar.progress(
            min(1.0, fraction), text=f"{what[0].upper()}{what[1:]} ({format_count(data.architecture.input_dim)} dims)"
        )

    try:
        ranking = store.ranking_for(data, source, layout="background", progress=report)
    finally:
        bar.empty()
    store.prefetch(data, PARTS)  # the other parts too, so switching part costs no pass later
    STORE.trim(keep=checkpoint_key(path))
    return ranking


@st.cache_resource(show_spinner="Reading the pre-prune record...", max_entries=8)
def _pre_prune(path: str, mtime: float) -> PrePruneRecord | None:
    return load_pre_prune_record(path)


@st.cache_resource(show_spinner="Reading the validation gradients...", max_entries=8)
def _validation(path: str, mtime: float) -> ValidationRecord | None:
    return load_validation_record(path)


def has_pre_prune_record(path: str) -> bool:
    """Whether the checkpoint at ``path`` has ``pre_prune.safetensors`` (no read, just a look)."""
    return (resolve_checkpoint_dir(path) / PRE_PRUNE_FILE).is_file()


def load_pre_prune(path: str) -> PrePruneRecord | None:
    """The checkpoint's pre-prune record (``None`` without one), cached until its files change."""
    return _pre_prune(*checkpoint_key(path))


def load_validation(path: str) -> ValidationRecord | None:
    """The checkpoint's saved validation gradients (``None`` without them), cached."""
    return _validation(*checkpoint_key(path))


def forget_checkpoint(directory: Path) -> None:
    """Drop what the server keeps of the checkpoints at or below ``directory`` - open
    checkpoints, their rankings (in memory and in the ranking cache on disk) and records - e.g.
    an unpacked upload about to be deleted (see :mod:`dashboard.server.sessions`)."""
    for (path, mtime), data in STORE.discard(Path(directory)):
        if data.weights is not None:
            store.discard(data.weights.identity())
        _pre_prune.clear(path, mtime)
        _validation.clear(path, mtime)
