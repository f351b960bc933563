"""The page's sections, one module per view, each drawn by its ``render`` (see ``dashboard/app.py``),
and the helpers they share (caches, charts, tables, metrics, messages, widget state)."""

__all__ = []  # the package exports nothing itself: import its modules
