"""The user cache directory of gradiend_core.

``$GRADIEND_CORE_CACHE`` if set, else ``$XDG_CACHE_HOME/gradiend-core``, else
``~/.cache/gradiend-core`` (the XDG base-directory convention). Everything in it can be deleted
at any time; it is rebuilt on use.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """The cache directory (or a subdirectory ``parts`` of it), created if missing.

    Args:
        parts: path components below the cache root, e.g. ``cache_dir("curve-gradients")``.

    Returns:
        The directory's path.

    Raises:
        OSError: when the directory cannot be created.
    """
    root = os.environ.get("GRADIEND_CORE_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gradiend-core"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
