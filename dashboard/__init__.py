"""The Streamlit dashboard: ``app.py`` is the page, ``views/`` draws its sections, ``figures/``
builds their Plotly figures; the other modules load checkpoints, keep session files and run jobs."""

__all__ = []  # the package exports nothing itself: import its modules
