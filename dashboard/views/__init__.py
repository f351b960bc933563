"""The page's sections: ``sidebar/`` (what surrounds the tabs), ``tabs/`` (one module per tab, each
drawn by its ``render``; see ``dashboard/app.py``) and ``widgets/`` (the helpers they share)."""

__all__ = []  # the package exports nothing itself: import its modules
