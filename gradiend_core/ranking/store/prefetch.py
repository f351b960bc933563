"""The background queue of the rank store: one worker thread runs queued layout builds one after
another (so a server keeps a core for its sessions); a key queued again before its job ran is
queued once.

The jobs are callables given by :mod:`.registry` (which knows how to build a ranking's layout);
this module only orders and runs them, so it depends on nothing above it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Key", "cancel", "schedule", "wait_for_layouts"]

#: ``(weight file identity, source)``: what a job builds.
Key = tuple[str, str]

_lock = threading.Lock()
_queue: list[tuple[Key, Callable[[], None]]] = []
_queued: set[Key] = set()
_worker: threading.Thread | None = None
_idle = threading.Condition(_lock)


def schedule(key: Key, job: Callable[[], None]) -> None:
    """Queue ``job`` (a build of ``key``) for the worker thread, unless ``key`` is queued or running."""
    global _worker
    with _lock:
        if key in _queued:
            return
        _queued.add(key)
        _queue.append((key, job))
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, daemon=True, name="rank-store")
            _worker.start()


def _work() -> None:
    while True:
        with _lock:
            if not _queue:
                _idle.notify_all()
                return
            key, job = _queue.pop(0)
        try:
            job()
        except Exception:  # the ranking keeps answering by streaming; a later call may try again
            pass
        finally:
            with _lock:
                _queued.discard(key)
                _idle.notify_all()  # for cancel(), which waits for a build of its file to end


def cancel(identity: str, timeout: float) -> None:
    """Drop the queued builds of one weight file and wait (up to ``timeout`` s) for one in progress."""
    with _lock:
        for item in [q for q in _queue if q[0][0] == identity]:
            _queue.remove(item)
            _queued.discard(item[0])
        _idle.wait_for(lambda: not any(k[0] == identity for k in _queued), timeout)


def wait_for_layouts(timeout: float | None = None) -> bool:
    """Wait until the queued background builds have finished (tests, benchmarks); False on timeout."""
    with _lock:
        return _idle.wait_for(lambda: not _queue and not _queued, timeout)
