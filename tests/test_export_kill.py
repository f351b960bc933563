"""An export killed (SIGKILL) at any write step leaves the target holding the old export or nothing,
never a mix; the next export removes what the killed one left. Driven by ``kill_points.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kill_points import describe

from gradiend_core import export_pruned

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "sample_models" / "own-pre-pruned"  # every kind of file: mapping files, records, side files


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The old export (topk 10) and, made independently of the driver, the new one it writes."""
    root = tmp_path_factory.mktemp("kill")
    old = export_pruned(SOURCE, root / "old", topk=10).path
    mask = np.zeros(8922, dtype=bool)
    mask[::3] = True
    new = export_pruned(SOURCE, root / "new", topk=0.05, mask=mask).path
    return root, describe(old), describe(new), old


def _kill_points(root: Path, old: Path, mode: str) -> list:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    driver = str(REPO / "tests" / "kill_points.py")
    cmd = [sys.executable, driver, str(SOURCE), str(old), str(root / f"work-{mode}"), mode]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.mark.parametrize("mode", ["new", "overwrite"])
def test_killed_export_leaves_old_or_nothing_never_a_mix(exports, mode):
    root, old_state, new_state, old = exports
    points = _kill_points(root, old, mode)
    killed, last = points[:-1], points[-1]
    assert last["status"] == 0 and last["state"] == new_state and last["hidden"] == []  # ran past every step
    assert len(killed) >= 40 and all(p["status"] == -signal.SIGKILL for p in killed)
    before = old_state if mode == "overwrite" else None
    for p in killed:
        assert p["state"] in (before, new_state), p  # never a mix
        assert p["clean_status"] == 0 and p["clean_state"] == new_state and p["clean_hidden"] == [], p
    events = [p["event"].split()[0] for p in killed]
    # kills landed while staging, during verification (reads of the staged copy), at the swap and,
    # replacing an old export, while deleting it
    assert {"tempfile.mkdtemp", "os.mkdir", "os.chmod", "open"} <= set(events)
    swap = "gradiend_core.checkpoint.exchange" if mode == "overwrite" else "os.rename"
    assert swap in events and (mode == "new" or "shutil.rmtree" in events[events.index(swap) :])
    # before the swap the target is untouched; after it, it holds the verified new export
    at = events.index(swap)
    assert all(p["state"] == before for p in killed[: at + 1]) and all(
        p["state"] == new_state for p in killed[at + 1 :]
    )
