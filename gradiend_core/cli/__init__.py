"""The ``gradiend-core`` command line (:func:`~.main.main`); one module per command."""

from .main import main

__all__ = ["main"]
