"""``gradiend-core`` command line: ``info``, ``prune``, ``curve`` and ``dashboard``, one module each.

Exit status: 0 on success, 2 for bad input (unreadable checkpoint, invalid selection, refused
target), with the reason on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import CheckpointError, SelectionError
from ..version import __version__
from . import curve, dashboard, info, prune

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradiend-core", description="Explore, select and prune GRADIEND models.")
    p.add_argument("--version", action="version", version=f"gradiend-core {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    for command in (info, prune, curve, dashboard):
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradiend-core`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly like other command-line tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CheckpointError, SelectionError, ValueError) as e:
        print(f"gradiend-core: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
