"""The user's selection inputs as the sidebar read them (validated there; an invalid input is
carried as ``error``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SelectionInputs"]


@dataclass
class SelectionInputs:
    """What the user chose; ``error`` holds the message of an invalid input.

    ``mask`` is the uploaded mask file's content (the name filter is kept apart in
    ``name_include``/``name_exclude``; the plan composes the two).
    """

    source: str
    topk: int | float | None
    topk_text: str
    threshold: float | None
    mask: np.ndarray | None
    mask_name: str | None
    mask_path: str | None
    error: str | None = None
    name_include: str | None = None
    name_exclude: str | None = None
