"""What the server keeps for its sessions: session files, uploads, byte budgets and the roots a
session may read from."""

__all__ = []  # the package exports nothing itself: import its modules
