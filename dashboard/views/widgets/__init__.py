"""Helpers the views share: charts, tables, metrics and messages."""

__all__ = []  # the package exports nothing itself: import its modules
