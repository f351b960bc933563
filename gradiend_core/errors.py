"""Exceptions raised by gradiend_core.

Every error message names what was wrong (file, field, value) and what to do about it, so that
the dashboard can show it verbatim and the CLI can print it without a traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "SelectionError"]


class CheckpointError(ValueError):
    """A checkpoint directory (or archive) cannot be read or written.

    A subclass of ``ValueError`` so that callers catching bad input in general still catch it.
    The message names the file and the field and says what to do.
    """


class SelectionError(ValueError):
    """A mask, threshold or topk is invalid, or the selection would keep nothing."""
