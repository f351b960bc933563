"""Which directories an export may be written to: never the source, never a stranger's files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import CheckpointError
from .format import CONFIG_FILE

__all__ = ["PYTHON_REPLACE", "check_target"]


#: How a Python caller allows replacing a non-empty target (the CLI and the dashboard name their own switch).
PYTHON_REPLACE = "pass overwrite=True"


def check_target(
    target: Path, overwrite: bool, source: Optional[Path] = None, *, how_to_replace: str = PYTHON_REPLACE
) -> None:
    """Refuse export targets that could lose data.

    Args:
        target: the export directory.
        overwrite: whether a non-empty checkpoint directory may be replaced.
        source: the source checkpoint, which is never written.
        how_to_replace: how the caller's user allows replacing, for the message (the CLI says
            "pass --overwrite", the dashboard names its checkbox).

    Raises:
        CheckpointError: if ``target`` is the source checkpoint or lies inside it or contains it,
            is a file, is a non-empty directory that is not a checkpoint, or is a non-empty
            directory and ``overwrite`` is false.
    """
    if "\0" in str(target):
        raise CheckpointError(f"export target {str(target)!r} contains a NUL byte; choose another name.")
    t = target.expanduser().resolve()
    if source is not None:
        s = Path(source).expanduser().resolve()
        if t == s or s in t.parents:
            raise CheckpointError(
                f"export target {target} is the source checkpoint {source} or inside it; choose another directory "
                "(the source is never modified)."
            )
        if t in s.parents:
            raise CheckpointError(
                f"export target {target} contains the source checkpoint {source}; overwriting it would delete the "
                "source. Choose another directory."
            )
    if t.exists() and not t.is_dir():
        raise CheckpointError(f"export target {target} is a file; give a directory path.")
    if t.is_dir() and any(t.iterdir()) and overwrite and not (t / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"export target {target} is not empty and is not a GRADIEND checkpoint; only checkpoint directories are "
            "replaced. Choose an empty or new directory."
        )
    if t.is_dir() and any(t.iterdir()) and not overwrite:
        raise CheckpointError(
            f"export target {target} is not empty; choose an empty or new directory, or {how_to_replace} to replace it."
        )
