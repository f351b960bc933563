"""The page around the tabs: model picker, checkpoint header, selection inputs, preview, export and
the mask panel."""

__all__ = []  # the package exports nothing itself: import its modules
