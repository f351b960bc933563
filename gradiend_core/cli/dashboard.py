"""``gradiend-core dashboard``: open the dashboard in the browser.

The dashboard is its own package (``dashboard``, started by ``python -m dashboard``); this command
checks the path and hands over to it by replacing this process, so the core never imports the
dashboard and the server gets the signals (Ctrl-C) as if started directly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["DEFAULT_SAMPLE", "add_parser", "launcher_command", "run"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLE = REPO_ROOT / "sample_models" / "number-unpruned"


def launcher_command(args: argparse.Namespace) -> list[str]:
    """``python -m dashboard [PATH] [--port N] [--headless] --address A``: the dashboard's own
    launcher (:mod:`dashboard.launch`) with this command's arguments.

    Raises:
        CheckpointError: for a path that does not exist.
    """
    path = args.path
    if path is None:
        path = str(DEFAULT_SAMPLE) if DEFAULT_SAMPLE.exists() else None
    elif not Path(path).expanduser().exists():
        raise CheckpointError(f"{path}: no such file or directory.")
    cmd = [sys.executable, "-m", "dashboard"]
    if path:
        cmd.append(str(Path(path).expanduser().resolve()))
    if args.port is not None:
        cmd += ["--port", str(args.port)]
    if args.headless:
        cmd.append("--headless")
    return cmd + ["--address", args.address]


def run(args: argparse.Namespace) -> int:
    """Run ``gradiend-core dashboard``: replace this process with the dashboard's launcher."""
    cmd = launcher_command(args)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)  # pragma: no cover - the server runs until stopped
    return subprocess.call(cmd)  # pragma: no cover - no exec on Windows: wait for the server


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gradiend-core dashboard`` on the CLI's sub-command parser."""
    db = sub.add_parser("dashboard", help="open the dashboard in the browser")
    db.add_argument("path", nargs="?", help="checkpoint to open (default: the bundled sample)")
    db.add_argument("--port", type=int, help="server port (default: streamlit's 8501)")
    db.add_argument("--headless", action="store_true", help="do not open a browser window")
    db.add_argument(
        "--address",
        default="localhost",
        help=(
            "interface to listen on "
            "(default: %(default)s; 0.0.0.0 serves the network, then set GRADIEND_DASHBOARD_ROOTS)"
        ),
    )
    db.set_defaults(func=run)
    return db
