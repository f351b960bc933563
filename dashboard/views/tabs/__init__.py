"""One module per tab, each drawn by its ``render(ctx)`` (see ``dashboard/app.py``)."""

__all__ = []  # the package exports nothing itself: import its modules
