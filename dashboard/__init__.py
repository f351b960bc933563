"""The Streamlit dashboard: ``app.py`` is the page; ``views/`` draws its sections (``sidebar/``,
``tabs/``, ``widgets/``), ``figures/`` builds their Plotly figures; ``state/`` holds the page state,
``services/`` loads and caches, ``server/`` keeps session files; ``launch.py`` starts the server
(``python -m dashboard``)."""

__all__ = []  # the package exports nothing itself: import its modules
