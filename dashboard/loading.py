"""Where the dashboard gets its model from, and the caches in front of the core.

Expensive objects (a checkpoint's tensors, a part's sorted importance, the training records)
are cached with ``st.cache_resource`` keyed by path and modification time, so every session and
every rerun shares one copy and a re-saved checkpoint is picked up. Cached objects are never mutated:
pruning and export build new tensors.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import streamlit as st

from gradiend_core.checkpoint import CheckpointData, ProgressFn, read_checkpoint, resolve_checkpoint_dir
from gradiend_core.importance import GRADIENT_MEAN, source_importance
from gradiend_core.ranking import Ranking
from gradiend_core.units import format_bytes
from gradiend_core.records import (
    PRE_PRUNE_FILE,
    PrePruneRecord,
    ValidationRecord,
    load_pre_prune_record,
    load_validation_record,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "sample_models"
APP_PATH = (REPO_ROOT / "dashboard" / "app.py").resolve()


def sample_models() -> List[Tuple[str, Path]]:
    """Bundled sample checkpoints as ``(name, directory)``, sorted by name."""
    out = []
    if SAMPLES_DIR.is_dir():
        for d in sorted(SAMPLES_DIR.iterdir()):
            if (d / "config.json").is_file() or (d / "model" / "config.json").is_file():
                out.append((d.name, d))
    return out


def path_from_argv(argv: Optional[List[str]] = None) -> Optional[str]:
    """The checkpoint given as ``streamlit run dashboard/app.py -- PATH`` (``None`` if absent).

    ``streamlit run`` sets ``sys.argv`` to the script path followed by the arguments after ``--``;
    any other ``sys.argv`` (a test runner's, for instance) is not ours to read.
    """
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).resolve() != APP_PATH:
        return None
    args = [a for a in argv[1:] if not a.startswith("-")]
    return args[0] if args else None


def checkpoint_key(path: str) -> Tuple[str, float]:
    """Cache key of a checkpoint: resolved directory and the newest modification time in it."""
    d = resolve_checkpoint_dir(path)
    mtime = max((f.stat().st_mtime for f in d.iterdir() if f.is_file()), default=0.0)
    return str(d.resolve()), mtime


class CheckpointStore:
    """Process-wide cache of open checkpoints, shared by every session, least recently used out.

    Why not ``st.cache_resource``: a first read reports its progress on the page of the session
    that triggered it, and Streamlit forbids touching page elements from inside a cached
    function. A lock per checkpoint makes concurrent sessions wait for one read instead of
    reading (and holding) the same weights twice.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._items: "OrderedDict[Tuple[str, float], CheckpointData]" = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: Dict[Tuple[str, float], threading.Lock] = {}

    def get(self, key: Tuple[str, float], progress: Optional[ProgressFn] = None) -> CheckpointData:
        """The checkpoint for ``key`` (see :func:`checkpoint_key`), read on first use."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            data = read_checkpoint(key[0], progress=progress)
            with self._lock:
                self._items[key] = data
                while len(self._items) > self.max_entries:
                    old, _ = self._items.popitem(last=False)
                    self._key_locks.pop(old, None)
            return data

    def discard(self, directory: Path) -> List[Tuple[str, float]]:
        """Forget the checkpoints at or below ``directory``; returns their keys."""
        root = str(Path(directory).resolve())
        with self._lock:
            keys = [k for k in self._items if k[0] == root or k[0].startswith(root + os.sep)]
            for k in keys:
                del self._items[k]
                self._key_locks.pop(k, None)
        return keys


STORE = CheckpointStore()


def load_checkpoint(path: str) -> CheckpointData:
    """The checkpoint at ``path``, shared across sessions until its files change.

    A first read of a large weight file shows a progress bar (bytes read of total).
    """
    bar = st.empty()

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Reading weights: {format_bytes(done)} of {format_bytes(total)}")

    try:
        return STORE.get(checkpoint_key(path), progress=report)
    finally:
        bar.empty()


@st.cache_resource(show_spinner="Ranking importance...", max_entries=32)
def _ranking(path: str, mtime: float, part: str) -> Ranking:
    data = STORE.get((path, mtime))
    record = _pre_prune(path, mtime) if part == GRADIENT_MEAN else None
    return Ranking(source_importance(data, part, record), data.param_map.local_offsets)


def load_ranking(path: str, part: str) -> Ranking:
    """The sorted importance of ``part`` for the checkpoint at ``path`` (cached).

    ``part`` is one of the four weight parts or ``"gradient-mean"`` (the pre-prune record's
    importance; raises ``CheckpointError`` when the checkpoint has none, see
    :func:`has_pre_prune_record`).
    """
    return _ranking(*checkpoint_key(path), part)


@st.cache_resource(show_spinner="Reading the pre-prune record...", max_entries=8)
def _pre_prune(path: str, mtime: float) -> Optional[PrePruneRecord]:
    return load_pre_prune_record(path)


@st.cache_resource(show_spinner="Reading the validation gradients...", max_entries=8)
def _validation(path: str, mtime: float) -> Optional[ValidationRecord]:
    return load_validation_record(path)


def has_pre_prune_record(path: str) -> bool:
    """Whether the checkpoint at ``path`` has ``pre_prune.safetensors`` (no read, just a look)."""
    return (resolve_checkpoint_dir(path) / PRE_PRUNE_FILE).is_file()


def load_pre_prune(path: str) -> Optional[PrePruneRecord]:
    """The checkpoint's pre-prune record (``None`` without one), cached until its files change."""
    return _pre_prune(*checkpoint_key(path))


def load_validation(path: str) -> Optional[ValidationRecord]:
    """The checkpoint's saved validation gradients (``None`` without them), cached."""
    return _validation(*checkpoint_key(path))


def forget_checkpoint(directory: Path) -> None:
    """Drop the cached checkpoints (and their rankings and records) at or below ``directory``,
    e.g. an unpacked upload that was deleted (see :mod:`dashboard.sessions`)."""
    from gradiend_core.importance import SOURCES

    for path, mtime in STORE.discard(Path(directory)):
        for part in SOURCES:
            _ranking.clear(path, mtime, part)
        _pre_prune.clear(path, mtime)
        _validation.clear(path, mtime)
