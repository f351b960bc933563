"""The package version, in a module of its own so that every stage can record it without importing
the package's public API (``gradiend_core/__init__.py`` imports the stages)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
