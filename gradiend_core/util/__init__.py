"""Helpers every stage uses: numbers with units and sizes in bytes (:mod:`.units`), the user cache
directory and its byte budget (:mod:`.cache`)."""

__all__ = []  # the package exports nothing itself: import its modules
