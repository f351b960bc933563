"""Rankings of a checkpoint's importance, built by streaming its weight file and kept on disk.

:func:`ranking_for` gives the :class:`~gradiend_core.ranking.ranking.Ranking` of one importance
source of a checkpoint, shared by every caller in the process (:mod:`.registry`); the passes and
the cache entries are in :mod:`.disk`, the background builds in :mod:`.prefetch`.
"""

from .disk import LAYOUT_FORMAT, ProgressFn
from .prefetch import wait_for_layouts
from .registry import clear_memory, discard, forget, open_rankings, prefetch, ranking_for, resident_bytes

__all__ = [
    "LAYOUT_FORMAT",
    "ProgressFn",
    "clear_memory",
    "discard",
    "forget",
    "open_rankings",
    "prefetch",
    "ranking_for",
    "resident_bytes",
    "wait_for_layouts",
]
