"""``gradiend-core info``: a checkpoint at a glance (:func:`~gradiend_core.checkpoint.overview.checkpoint_overview`)."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import open_checkpoint
from ..checkpoint.overview import checkpoint_overview
from ..util.units import format_bytes

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Run ``gradiend-core info``; returns the exit status."""
    data = open_checkpoint(args.path)
    summary = checkpoint_overview(data)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        if k == "disk_bytes":
            v = f"{format_bytes(v)} ({v:,} B; model files: config, weights, mapping)"
        elif k == "side_files":
            files = ", ".join(f"{name} {format_bytes(b)}" for name, b in sorted(v.items()))
            v = f"{files} (not counted on disk)" if v else "none"
        elif isinstance(v, int) and not isinstance(v, bool) and k.endswith("_bytes"):
            v = f"{format_bytes(v)} ({v:,} B)"
        elif isinstance(v, int) and not isinstance(v, bool):
            v = f"{v:,}"
        print(f"{k:{width}}  {v}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gradiend-core info`` on the CLI's sub-command parser."""
    info = sub.add_parser("info", help="summarise a checkpoint")
    info.add_argument("path", help="checkpoint directory (or experiment directory with model/)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run)
    return info
