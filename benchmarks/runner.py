"""Run a measurement in a child process under a memory limit and turn its output into one record.

Every record has the same fields, whether the run succeeded or not::

    {"ok", "wall_s", "steps": {step: seconds}, "failed_step", "failure", "limit_bytes",
     "peak_rss_bytes", "cgroup_peak_bytes", "cgroup_peak_anon_bytes", "result"}

``failed_step`` names the step the process was in when it failed (for ``gradiend-core`` commands:
the last progress line it printed), ``failure`` says why (e.g. "killed by the OOM killer at the
4.0 GiB limit").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters import REPO, env_with_repo
from benchmarks.memlimit import LimitedRun, run_limited

__all__ = ["parse_steps", "record", "run_child", "run_command"]


def parse_steps(stdout: str) -> tuple[dict[str, float], str | None, dict[str, Any] | None]:
    """``(seconds by finished step, step begun but not finished, result)`` from a child's stdout."""
    steps: dict[str, float] = {}
    open_step = None
    result = None
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "begin" in msg:
            open_step = msg["begin"]
        elif "end" in msg:
            steps[msg["end"]] = msg["s"]
            open_step = None
        elif "result" in msg:
            result = msg["result"]
    return steps, open_step, result


def record(run: LimitedRun, steps: dict[str, float], failed_step: str | None, result: Any) -> dict[str, Any]:
    """The uniform record of one run (see the module docstring)."""
    ok = run.ok and result is not None
    return {
        "ok": ok,
        "wall_s": round(run.wall_s, 3),
        "steps": {k: round(v, 4) for k, v in steps.items()},
        "failed_step": None if ok else failed_step,
        "failure": None if ok else (run.failure() or "no result"),
        "limit_bytes": run.limit_bytes,
        # A child that finished reports its own VmHWM (exact); the sampled one can miss a last-moment peak.
        "peak_rss_bytes": max(
            run.peak_rss_bytes or 0, (result or {}).get("VmHWM", 0) if isinstance(result, dict) else 0
        )
        or None,
        "cgroup_peak_bytes": run.cgroup_peak_bytes,
        "cgroup_peak_anon_bytes": run.cgroup_peak_anon_bytes,
        "result": result,
    }


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_child(
    kind: str, args: dict[str, Any], limit_bytes: int, *, timeout_s: float = 3600, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``benchmarks.child`` measurement ``kind`` with ``args`` under ``limit_bytes``; return its record."""
    cmd = [sys.executable, "-m", "benchmarks.child", kind, json.dumps(args)]

    def show(line: str) -> None:
        if line.startswith('{"end"'):
            msg = json.loads(line)
            _log(f"  {kind}: {msg['end']}: {msg['s']:.3f} s")

    run = run_limited(cmd, limit_bytes, env=env_with_repo(env), cwd=REPO, timeout_s=timeout_s, on_line=show)
    rec = record(run, *parse_steps(run.stdout))
    if not rec["ok"]:
        _log(f"  {kind}: failed in {rec['failed_step']!r}: {rec['failure']}")
        if not run.oom_killed:
            _log("  " + run.stderr[-1500:].replace("\n", "\n  "))
    return rec


def run_command(
    name: str, cmd: Sequence[str], limit_bytes: int, *, timeout_s: float = 3600, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a product command (e.g. ``gradiend-core info``) under ``limit_bytes``; one step named ``name``.

    On failure ``failed_step`` is ``name`` plus the last progress line the command printed to stderr.
    """
    _log(f"  {' '.join(map(str, cmd))}")
    run = run_limited(list(cmd), limit_bytes, env=env_with_repo(env), cwd=REPO, timeout_s=timeout_s)
    last = next((line.strip() for line in reversed(run.stderr.splitlines()) if line.startswith("...")), None)
    steps = {name: run.wall_s} if run.ok else {}
    rec = record(
        run, steps, f"{name} ({last})" if last else name, {"stdout_tail": run.stdout[-1500:]} if run.ok else None
    )
    _log(f"  -> {'ok' if rec['ok'] else rec['failure']} in {run.wall_s:.1f} s")
    return rec
