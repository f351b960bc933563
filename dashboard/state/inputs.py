"""The user's selection inputs as the sidebar read them (validated there; an invalid input is
carried as ``error``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

__all__ = ["SelectionInputs"]


@dataclass
class SelectionInputs:
    """What the user chose; ``error`` holds the message of an invalid input.

    ``mask`` is the uploaded mask file's content (the name filter is kept apart in
    ``name_include``/``name_exclude``; the plan composes the two).
    """

    source: str
    topk: Optional[Union[int, float]]
    topk_text: str
    threshold: Optional[float]
    mask: Optional[np.ndarray]
    mask_name: Optional[str]
    mask_path: Optional[str]
    error: Optional[str] = None
    name_include: Optional[str] = None
    name_exclude: Optional[str] = None
