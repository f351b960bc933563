"""Start the dashboard server: ``python -m dashboard [PATH] [--port N] [--headless] [--address A]``.

``gradiend-core dashboard`` hands over to this module (the core never imports the dashboard). It
runs Streamlit's own command line in this process, so this process becomes the server (signals
such as Ctrl-C reach it as with ``streamlit run``), after importing what the page imports, so the
first page load does not pay seconds of imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["dashboard_command", "main"]

APP = Path(__file__).resolve().parent / "app.py"


def dashboard_command(
    path: str | None, port: int | None = None, headless: bool = False, address: str = "localhost"
) -> list[str]:
    """The ``streamlit run`` command that opens the dashboard on ``path``."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP)]
    if port is not None:
        cmd += ["--server.port", str(port)]
    if headless:
        cmd += ["--server.headless", "true"]
    cmd += ["--server.address", address, "--browser.gatherUsageStats", "false", "--server.maxUploadSize", "2048"]
    cmd += ["--client.toolbarMode", "minimal"]
    if path:
        cmd += ["--", str(Path(path).expanduser().resolve())]
    return cmd


def _preload_page_modules() -> None:
    """Import what the dashboard's page imports (torch, numpy, pandas, plotly and the views)."""
    # Streamlit warns that its caches have no runtime yet when they are defined outside one: true
    # and harmless here (the server starts right after), so those lines stay out of the terminal.
    importlib.import_module("streamlit.runtime.caching.cache_data_api")  # its logger, set up by streamlit
    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for package in ("dashboard.services", "dashboard.server", "dashboard.state", "dashboard.views"):
            for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
                importlib.import_module(info.name)
    finally:
        quiet.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, import the page's modules and run the server (returns when it stops)."""
    p = argparse.ArgumentParser(prog="python -m dashboard", description="Start the GRADIEND pruning dashboard.")
    p.add_argument("path", nargs="?", help="checkpoint to open")
    p.add_argument("--port", type=int, help="server port (default: streamlit's 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser window")
    p.add_argument("--address", default="localhost", help="interface to listen on (default: %(default)s)")
    args = p.parse_args(argv)
    cmd = dashboard_command(args.path, args.port, args.headless, args.address)
    _preload_page_modules()
    from streamlit.web import cli as streamlit_cli

    sys.argv = ["streamlit"] + cmd[cmd.index("run") :]
    return int(streamlit_cli.main(prog_name="streamlit") or 0)  # pragma: no cover - the server runs until stopped
