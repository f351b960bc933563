"""The user cache directory and its byte budget.

Rankings of importance (see :mod:`gradiend_core.ranking.store`) are kept here between runs so that a
checkpoint opened before opens at once. Nothing is ever written inside a checkpoint.

* location: ``$GRADIEND_CORE_CACHE``, else ``$XDG_CACHE_HOME/gradiend-core``, else
  ``~/.cache/gradiend-core``;
* budget: ``$GRADIEND_CORE_CACHE_BYTES`` (bytes; suffixes K, M, G, T accepted), default 16 GiB;
  the least recently used entries are removed when a new one would exceed it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from .units import parse_bytes

__all__ = [
    "BUILDING_PREFIX",
    "DEFAULT_BUDGET",
    "LOG",
    "building_dir",
    "cache_budget",
    "cache_dir",
    "dir_bytes",
    "evict",
    "notices",
    "touch",
    "usable_cache_dir",
    "warn_once",
]

DEFAULT_BUDGET = 16 * 1024**3
#: Prefix of an entry being built (``.building-<host>-<pid>-<random>``): never evicted while its
#: builder lives; removed once it is dead.
BUILDING_PREFIX = ".building-"
#: A build directory older than this is removed whoever made it (a builder on another host).
STALE_BUILD_SECONDS = 24 * 3600


#: Where cache problems are said: one line each (Python prints a logger's warnings without a
#: handler as the bare message on stderr); :func:`notices` lists them for a page to show.
LOG = logging.getLogger("gradiend_core.cache")
_warned: dict[str, str] = {}
_warned_lock = threading.Lock()


def warn_once(key: str, text: str) -> None:
    """Say ``text`` (one line, a warning of :data:`LOG`) the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned[key] = text
    LOG.warning("gradiend-core: %s", text)


def notices() -> list[str]:
    """What :func:`warn_once` said in this process, oldest first."""
    with _warned_lock:
        return list(_warned.values())


def usable_cache_dir(*parts: str) -> Path | None:
    """:func:`cache_dir`, or ``None`` (after one warning) when it cannot be created or written."""
    try:
        path = cache_dir(*parts)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
        return path
    except (OSError, ValueError) as e:
        warn_once(
            "cache-unusable", f"the gradiend-core cache is not usable ({e}); working without it (nothing is kept)."
        )
        return None


def building_dir(parent: Path) -> Path:
    """A new build directory in ``parent``, named for its builder (host and process)."""
    host = socket.gethostname().replace("-", "_")
    return Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{host}-{os.getpid()}-", dir=parent))


def _build_is_stale(path: Path) -> bool:
    """Whether a build directory's builder is gone (same host, dead process) or it is very old."""
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    if age > STALE_BUILD_SECONDS:
        return True
    parts = path.name[len(BUILDING_PREFIX) :].split("-")
    if len(parts) < 3 or parts[0] != socket.gethostname().replace("-", "_"):
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


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
    """Mark a cache entry as used now (for least-recently-used eviction): its directory's
    modification time (no file is written, so nothing is ever truncated in place)."""
    try:
        os.utime(entry)
    except OSError:
        pass


def _last_used(entry: Path) -> float:
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0


def evict(root: Path, budget: int | None = None, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove the least recently used entries (subdirectories two levels below ``root``) until the
    rest fit in ``budget`` bytes; entries in ``keep`` stay, and so do builds in progress (those of
    dead builders are removed). Returns the removed entries."""
    budget = cache_budget() if budget is None else budget
    try:
        found = [e for d in root.iterdir() if d.is_dir() for e in d.iterdir() if e.is_dir()] if root.is_dir() else []
    except OSError:  # another process removed a directory while it was listed
        found = []
    entries = []
    for e in found:
        if e.name.startswith(BUILDING_PREFIX):
            if _build_is_stale(e):
                shutil.rmtree(e, ignore_errors=True)
            continue  # a build in progress is never evicted
        entries.append(e)
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
