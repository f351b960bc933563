"""Error text that names its subject once."""

from __future__ import annotations

__all__ = ["about"]


def about(subject: object, error: Exception) -> str:
    """``"<subject>: <error>"``, or the error alone when it already names the subject (the core's
    messages start with the path they are about)."""
    text = str(error)
    return text if str(subject) in text else f"{subject}: {text}"
