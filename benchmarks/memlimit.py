"""Run a process under a memory limit (a cgroup v1 memory group) and measure its peak memory.

A group ``/sys/fs/cgroup/memory/<name>`` is created with ``memory.limit_in_bytes`` (and
``memory.memsw.limit_in_bytes`` when the kernel accounts swap) set to the limit; the child is
started inside it (a shell writes its own PID to ``cgroup.procs`` and then ``exec``s the
command, so nothing is allocated outside the group); the group is removed afterwards. A child
that exceeds the limit is killed by the kernel's OOM killer (``SIGKILL``), which is reported as
``oom_killed``.

Three peaks are reported, because they answer different questions:

* ``peak_rss_bytes``: the process's own high-water mark of resident memory (``VmHWM`` of
  ``/proc/<pid>/status``, read every ``sample_s`` seconds; the mark only grows, so only a peak
  in the last interval before the process ends can be missed). It counts the file pages the
  process maps (shared libraries, an mmap-ed safetensors file), which may be charged to other
  groups, so it can exceed the limit. ``wait4``'s ``ru_maxrss`` is not used: Linux carries the
  parent's high-water mark into a forked child across ``exec``, so it reports the harness's own
  size for small children;
* ``cgroup_peak_bytes``: ``memory.max_usage_in_bytes``, the group's peak charge, which in
  cgroup v1 includes the page cache of files the group read or wrote (so a process reading a
  large file shows a peak near the limit even when its own memory stays small);
* ``cgroup_peak_anon_bytes``: the largest ``total_rss`` (anonymous memory) of the group's
  ``memory.stat``, sampled every ``sample_s`` seconds (a sampled, hence lower, bound).

Own code rather than a library: the stdlib has no cgroup interface and ``systemd-run`` is not
available in the containers this runs in; the cgroup v1 files are documented in the kernel's
``Documentation/admin-guide/cgroup-v1/memory.rst``.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CGROUP_ROOT",
    "LimitedRun",
    "MemoryCgroup",
    "cgroup_available",
    "format_bytes_short",
    "parse_bytes",
    "proc_status_bytes",
    "run_limited",
]

#: Where cgroup v1 memory groups are created.
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_bytes(text: str | int) -> int:
    """``"4GiB"``, ``"500MB"``, ``"1.5 GiB"`` or an int -> bytes.

    Raises:
        ValueError: for text that is not a number with one of the units B, kB, KiB, MB, MiB, GB, GiB, TB, TiB.
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 4GiB, 500MB or 1073741824.")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes_short(n: int | None) -> str:
    """Bytes as ``"3.2 GiB"`` / ``"512 MiB"`` (``"-"`` for ``None``)."""
    if n is None:
        return "-"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def cgroup_available(root: Path = CGROUP_ROOT) -> bool:
    """Whether memory groups can be created here (root, and a cgroup v1 memory hierarchy at ``root``)."""
    return os.geteuid() == 0 and (root / "memory.limit_in_bytes").is_file() and os.access(root, os.W_OK)


def proc_status_bytes(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``, ...) in bytes.

    ``None`` once the process is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class MemoryCgroup:
    """A cgroup v1 memory group with a limit; a context manager that removes the group on exit.

    Args:
        limit_bytes: ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` if present).
        name: group name (default: a fresh ``gradiend-bench-<hex>``).
        root: the memory hierarchy's mount point.

    Raises:
        PermissionError: when not root or there is no cgroup v1 memory hierarchy at ``root``.
    """

    def __init__(self, limit_bytes: int, name: str | None = None, root: Path = CGROUP_ROOT) -> None:
        if not cgroup_available(root):
            raise PermissionError(
                f"cannot create memory cgroups under {root}: needs root and cgroup v1 (memory controller)."
            )
        self.limit_bytes = int(limit_bytes)
        self.path = root / (name or f"gradiend-bench-{uuid.uuid4().hex[:10]}")
        self.path.mkdir()
        # memsw (memory + swap) must stay >= the memory limit, so it is written after it.
        self._write("memory.limit_in_bytes", self.limit_bytes)
        if (self.path / "memory.memsw.limit_in_bytes").exists():
            self._write("memory.memsw.limit_in_bytes", self.limit_bytes)

    def _write(self, name: str, value: Any) -> None:
        (self.path / name).write_text(f"{value}\n")

    def _read_int(self, name: str) -> int | None:
        try:
            return int((self.path / name).read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def _stat(self, name: str) -> int | None:
        return self._kv("memory.stat").get(name)

    def _kv(self, file: str) -> dict[str, int]:
        try:
            pairs = (line.split() for line in (self.path / file).read_text().splitlines())
            return {k: int(v) for k, v in pairs}
        except (FileNotFoundError, ValueError):
            return {}

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed so that the process joins this group before it ``exec``s (same PID)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *map(str, cmd)]

    def add(self, pid: int) -> None:
        """Move a running process into the group (its earlier allocations stay charged elsewhere)."""
        self._write("cgroup.procs", pid)

    def usage(self) -> int | None:
        """Current charge in bytes (anonymous memory plus page cache)."""
        return self._read_int("memory.usage_in_bytes")

    def max_usage(self) -> int | None:
        """Peak charge in bytes since creation (includes page cache)."""
        return self._read_int("memory.max_usage_in_bytes")

    def anon(self) -> int | None:
        """Current anonymous memory of the group (``memory.stat`` ``total_rss``), bytes."""
        return self._stat("total_rss")

    def oom_kills(self) -> int:
        """Processes the OOM killer killed in this group (``memory.oom_control``'s ``oom_kill``)."""
        return self._kv("memory.oom_control").get("oom_kill", 0)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def remove(self, timeout_s: float = 10.0) -> None:
        """Remove the group once its processes are gone (stray ones are killed first)."""
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the kernel finishes moving charges to the parent
                time.sleep(0.1)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


@dataclass
class LimitedRun:
    """Outcome of :func:`run_limited` (bytes, seconds).

    ``returncode`` is negative for a signal (``-9`` when the OOM killer or the timeout ended it);
    ``extra["cgroup"]`` is the path the (now removed) group had.
    """

    cmd: list[str]
    limit_bytes: int
    returncode: int | None
    wall_s: float
    peak_rss_bytes: int | None
    cgroup_peak_bytes: int | None
    cgroup_peak_anon_bytes: int | None
    oom_killed: bool
    timed_out: bool
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.oom_killed and not self.timed_out

    def failure(self) -> str | None:
        """A one-line reason for a failed run (``None`` when it succeeded)."""
        if self.ok:
            return None
        if self.oom_killed:
            return f"killed by the OOM killer at the {format_bytes_short(self.limit_bytes)} limit"
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s"
        tail = (self.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return f"exit status {self.returncode}: {tail[:300]}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("stdout")
        d["stderr"] = d["stderr"][-2000:]
        return d


def run_limited(
    cmd: Sequence[str],
    limit_bytes: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: os.PathLike | str | None = None,
    timeout_s: float | None = None,
    sample_s: float = 0.05,
    on_line=None,
) -> LimitedRun:
    """Run ``cmd`` to completion inside a fresh memory group limited to ``limit_bytes``.

    Args:
        cmd: the command.
        limit_bytes: memory limit of the group, bytes.
        env, cwd: as for :class:`subprocess.Popen`.
        timeout_s: kill the process (``SIGKILL``) after this many seconds.
        sample_s: interval of the anonymous-memory samples.
        on_line: optional callback receiving each stdout line as it arrives.

    Returns:
        A :class:`LimitedRun`; a failed or killed run is reported, not raised.

    Raises:
        PermissionError: when memory groups cannot be created (see :func:`cgroup_available`).
    """
    with MemoryCgroup(limit_bytes) as cg:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cg.wrap(cmd),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        out: list[str] = []
        err: list[str] = []

        def pump(stream, sink, cb) -> None:
            for line in stream:
                sink.append(line)
                if cb is not None:
                    cb(line)

        threads = [
            threading.Thread(target=pump, args=(proc.stdout, out, on_line), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, err, None), daemon=True),
        ]
        for t in threads:
            t.start()
        peak_anon = peak_hwm = 0
        timed_out = False
        while True:
            peak_hwm = max(peak_hwm, proc_status_bytes(proc.pid, "VmHWM") or 0)
            peak_anon = max(peak_anon, cg.anon() or 0)
            if proc.poll() is not None:
                break
            if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                proc.kill()
                proc.wait()
                timed_out = True
                break
            time.sleep(sample_s)
        wall = time.perf_counter() - t0
        for t in threads:
            t.join(timeout=10)
        return LimitedRun(
            cmd=list(map(str, cmd)),
            limit_bytes=int(limit_bytes),
            returncode=proc.returncode,
            wall_s=wall,
            peak_rss_bytes=peak_hwm or None,
            cgroup_peak_bytes=cg.max_usage(),
            cgroup_peak_anon_bytes=peak_anon or None,
            oom_killed=cg.oom_kills() > 0,
            timed_out=timed_out,
            stdout="".join(out),
            stderr="".join(err),
            extra={"cgroup": str(cg.path)},
        )
