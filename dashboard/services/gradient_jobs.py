"""Long computations that run beside the page: evaluation gradients from a base model.

A job runs in a background thread, so the page stays responsive (other tabs, other sessions),
reports its progress and can be cancelled between examples. Jobs and their results are
process-wide, keyed by what they compute, so two sessions asking for the same gradients share one
computation. Why not inline in the script run: a rerun (any widget change) would abort it, and a
Cancel button cannot be pressed while the script is busy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "JobStore", "JOBS"]

#: ``fn(progress, cancel) -> result``: ``progress(done, total)``, ``cancel`` a threading.Event.
Work = Callable[[Callable[[int, int], None], threading.Event], Any]


@dataclass
class Job:
    """One computation: its progress, status and result.

    Attributes:
        status: ``running``, ``done``, ``cancelled`` or ``failed``.
        done, total: progress in examples.
        result: the return value once ``done``.
        error: the message when ``failed`` or ``cancelled``.
    """

    status: str = "running"
    done: int = 0
    total: int = 0
    result: Any = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class JobStore:
    """Process-wide jobs by key; the most recent ``max_entries`` finished ones are kept."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._jobs: OrderedDict[Hashable, Job] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def put_result(self, key: Hashable, result: Any) -> Job:
        """Record a result obtained without a job (e.g. read from the cache)."""
        job = Job(status="done", result=result)
        with self._lock:
            self._jobs[key] = job
            self._trim()
        return job

    def start(self, key: Hashable, work: Work, cancelled: Callable[[BaseException], bool] = lambda e: False) -> Job:
        """Start ``work`` in a thread unless a job for ``key`` is running or done already.

        Args:
            key: what the job computes.
            work: ``work(progress, cancel) -> result``.
            cancelled: tells whether an exception of ``work`` means it was cancelled.
        """
        with self._lock:
            old = self._jobs.get(key)
            if old is not None and old.status in ("running", "done"):
                return old
            job = Job()
            self._jobs[key] = job
            self._trim()

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def run() -> None:
            try:
                job.result = work(progress, job.cancel)
                job.status = "done"
            except BaseException as e:  # reported on the page; a thread has nobody else to tell
                job.error = str(e) or type(e).__name__
                job.status = "cancelled" if cancelled(e) else "failed"

        job.thread = threading.Thread(target=run, name="gradiend-gradients", daemon=True)
        job.thread.start()
        return job

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._jobs.pop(key, None)

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status != "running"]
        while len(self._jobs) > self.max_entries and finished:
            self._jobs.pop(finished.pop(0), None)


JOBS = JobStore()
