"""What the page loads and computes behind caches: checkpoints and rankings (shared in bytes),
the analysis views' numbers, background gradient jobs and returning freed memory."""

__all__ = []  # the package exports nothing itself: import its modules
