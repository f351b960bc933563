"""The user cache directory and its byte budget.

Rankings of importance (see :mod:`gradiend_core.ranking.store`) are kept here between runs so that a
checkpoint opened before opens at once. Nothing is ever written inside a checkpoint.

* location: ``$GRADIEND_CORE_CACHE``, else ``$XDG_CACHE_HOME/gradiend-core``, else
  ``~/.cache/gradiend-core``;
* budget: ``$GRADIEND_CORE_CACHE_BYTES`` (bytes; suffixes K, M, G, T accepted), default 16 GiB;
  the least recently used entries are removed when a new one would exceed it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .units import parse_bytes

__all__ = ["DEFAULT_BUDGET", "cache_budget", "cache_dir", "dir_bytes", "evict", "touch"]

DEFAULT_BUDGET = 16 * 1024**3
_USED = ".last-used"


def cache_dir(*parts: str) -> Path:
    """The cache directory (or a subdirectory of it), created on use."""
    root = os.environ.get("GRADIEND_CORE_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gradiend-core"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_budget() -> int:
    """Bytes the cache may hold (``$GRADIEND_CORE_CACHE_BYTES``, default 16 GiB).

    Raises:
        ValueError: for a value that is not a size.
    """
    raw = os.environ.get("GRADIEND_CORE_CACHE_BYTES")
    return parse_bytes(raw) if raw else DEFAULT_BUDGET


def dir_bytes(path: Path) -> int:
    """Bytes of the files below ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def touch(entry: Path) -> None:
    """Mark a cache entry as used now (for least-recently-used eviction)."""
    try:
        (entry / _USED).write_text(str(time.time()))
    except OSError:
        pass


def _last_used(entry: Path) -> float:
    try:
        return float((entry / _USED).read_text())
    except (OSError, ValueError):
        return entry.stat().st_mtime if entry.exists() else 0.0


def evict(root: Path, budget: int | None = None, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove the least recently used entries (subdirectories two levels below ``root``) until the
    rest fit in ``budget`` bytes; entries in ``keep`` stay. Returns the removed entries."""
    budget = cache_budget() if budget is None else budget
    entries = [e for d in root.iterdir() if d.is_dir() for e in d.iterdir() if e.is_dir()] if root.is_dir() else []
    sizes = {e: dir_bytes(e) for e in entries}
    total = sum(sizes.values())
    removed = []
    keep_r = {k.resolve() for k in keep}
    for e in sorted(entries, key=_last_used):
        if total <= budget:
            break
        if e.resolve() in keep_r:
            continue
        shutil.rmtree(e, ignore_errors=True)
        total -= sizes[e]
        removed.append(e)
        try:
            e.parent.rmdir()  # the identity directory, once empty
        except OSError:
            pass
    return removed
