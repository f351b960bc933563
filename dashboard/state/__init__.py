"""Page state: the selection inputs, the view context, widget state kept across runs, the last
valid selection and the applied mask expression."""

__all__ = []  # the package exports nothing itself: import its modules
