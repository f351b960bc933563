"""Fault injection for exports: kill the exporting process (SIGKILL) at its 1st, 2nd, 3rd, ... write
step, and after each kill describe what the target directory holds.

A write step is any file-system event Python's audit hooks report under the work directory
(``open`` for reading or writing, ``os.mkdir``, ``os.chmod``, ``os.rename``, ``os.remove``,
``os.rmdir``, ``shutil.rmtree``, ``tempfile.mkdtemp``, and the writer's own
``gradiend_core.checkpoint.exchange``, raised before the atomic directory exchange). The hook lives
only in this test driver: the library has no test switch.

Usage: ``python tests/kill_points.py SOURCE OLD_EXPORT WORK {new,overwrite}``. The export is
``export_pruned(SOURCE, WORK/out, topk=0.05, mask=every third dim)``; with ``overwrite`` the target
first holds a copy of ``OLD_EXPORT``. One process imports the library once and forks a child per
kill point (no torch work happens before the fork). Prints one JSON list: per kill point the event
it was killed at, the target's state after the kill, the hidden entries beside it, and the state
after a clean export that follows (which must remove what the killed one left).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

PATH_EVENTS = {
    "open",
    "os.mkdir",
    "os.chmod",
    "os.rename",
    "os.replace",
    "os.remove",
    "os.rmdir",
    "shutil.rmtree",
    "tempfile.mkdtemp",
    "gradiend_core.checkpoint.exchange",
}


def describe(target: Path) -> dict[str, Any] | None:
    """sha256 of every file but ``pruning.json`` (timestamped), and pruning.json's kept_dims."""
    if not target.exists():
        return None
    state: dict[str, Any] = {}
    for p in sorted(target.iterdir()):
        if p.name == "pruning.json":
            try:
                state["pruning.json:kept_dims"] = json.loads(p.read_text())["kept_dims"]
            except (ValueError, KeyError) as e:
                state["pruning.json:kept_dims"] = f"unreadable: {e}"
        elif p.is_file():
            state[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            state[p.name] = "not a file"
    return state


def hidden(work: Path) -> list:
    return sorted(p.name for p in work.iterdir() if p.name.startswith("."))


def _hook(n: int, work: str, log_fd: int):
    count = 0

    def hook(event: str, args: tuple) -> None:
        nonlocal count
        if event not in PATH_EVENTS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if not os.fsdecode(args[0]).startswith(work):
            return
        count += 1
        if count == n:
            os.write(log_fd, f"{event} {os.fsdecode(args[0])}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _child(run, hook=None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if hook is not None:
                sys.addaudithook(hook)
            run()
        except BaseException as e:  # reported by the exit status; the parent checks the state anyway
            os.write(2, f"child failed: {e!r}\n".encode())
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(source: str, old: str, work: str, mode: str) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from gradiend_core import export_pruned, read_checkpoint

    data = read_checkpoint(source)  # reading touches no torch kernels; the export itself runs in children
    mask = np.zeros(data.architecture.input_dim, dtype=bool)
    mask[::3] = True
    work_dir = Path(work).resolve()
    target = work_dir / "out"
    r, w = os.pipe()

    def export(overwrite: bool):
        return lambda: export_pruned(data, target, topk=0.05, mask=mask, overwrite=overwrite)

    results = []
    n = 1
    while True:
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        if mode == "overwrite":
            shutil.copytree(old, target)
        status = _child(export(mode == "overwrite"), _hook(n, str(work_dir), w))
        event = os.read(r, 4096).decode().strip() if status == -signal.SIGKILL else None
        after_kill, left = describe(target), hidden(work_dir)
        clean = _child(export(True))
        results.append(
            {
                "n": n,
                "status": status,
                "event": event,
                "state": after_kill,
                "hidden": left,
                "clean_status": clean,
                "clean_state": describe(target),
                "clean_hidden": hidden(work_dir),
            }
        )
        if status != -signal.SIGKILL:
            break
        n += 1
    shutil.rmtree(work_dir, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:5])
